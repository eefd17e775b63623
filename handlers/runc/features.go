package runc

import (
	"encoding/json"
	"os/exec"
	"slices"

	"github.com/crivm/crivm/handlers"
)

// Features reports what the OCI runtime says it supports (`RUNTIME
// features`, runtime-spec features.md), probed on the first call.
func (h *Handler) Features() handlers.Features {
	f := h.features()
	f.UserNamespaces = h.usernsSupported() // userns.go
	return f
}

// runtimeFeatures is the part of the OCI runtime features document crivm
// reads.
type runtimeFeatures struct {
	MountOptions []string `json:"mountOptions"`
}

// probeFeatures runs `path features`. A runtime without the command (or
// with output that does not parse) supports nothing optional.
func probeFeatures(path string) handlers.Features {
	out, err := exec.Command(path, "features").Output()
	if err != nil {
		return handlers.Features{}
	}
	return parseFeatures(out)
}

func parseFeatures(doc []byte) handlers.Features {
	var f runtimeFeatures
	if json.Unmarshal(doc, &f) != nil {
		return handlers.Features{}
	}
	return handlers.Features{RecursiveReadOnlyMounts: slices.Contains(f.MountOptions, "rro")}
}
