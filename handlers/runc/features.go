package runc

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"sync"

	"github.com/crivm/crivm/handlers"
)

// Features reports what the OCI runtime says it supports (`RUNTIME
// features`, runtime-spec features.md), probed on the first call, and
// whether this handler runs user namespaces (userns.go).
func (h *Handler) Features() handlers.Features {
	f, _ := h.features()
	return handlers.Features{RecursiveReadOnlyMounts: f.hasRRO(), UserNamespaces: h.usernsSupported()}
}

// runtimeFeatures is the part of the OCI runtime features document crivm
// reads.
type runtimeFeatures struct {
	MountOptions []string `json:"mountOptions"`
	Linux        struct {
		Namespaces []string `json:"namespaces"`
	} `json:"linux"`
}

// hasRRO: the runtime knows the rro mount option.
func (f runtimeFeatures) hasRRO() bool { return slices.Contains(f.MountOptions, "rro") }

// hasUserns: the runtime lists the user namespace.
func (f runtimeFeatures) hasUserns() bool { return slices.Contains(f.Linux.Namespaces, "user") }

// onceFeatures is Handler.features: probeFeatures of path, run on the
// first call only.
func onceFeatures(path string) func() (runtimeFeatures, error) {
	return sync.OnceValues(func() (runtimeFeatures, error) { return probeFeatures(path) })
}

// probeFeatures runs `path features`.
// A runtime without the command, or with output that does not parse,
// supports nothing optional; the error says why.
func probeFeatures(path string) (runtimeFeatures, error) {
	out, err := exec.Command(path, "features").Output()
	if err != nil {
		return runtimeFeatures{}, fmt.Errorf("%s features: %w", path, err)
	}
	return parseFeatures(out)
}

func parseFeatures(doc []byte) (runtimeFeatures, error) {
	var f runtimeFeatures
	if err := json.Unmarshal(doc, &f); err != nil {
		return runtimeFeatures{}, fmt.Errorf("parsing the runtime's features: %w", err)
	}
	return f, nil
}
