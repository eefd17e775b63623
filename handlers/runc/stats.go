package runc

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/store"
)

func (h *Handler) readSpec(id string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(h.bundle(id), "config.json"))
	if err != nil {
		return nil, errdefs.NotFound("container %s has no bundle: %w", id, err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parsing spec: %w", err)
	}
	return &s, nil
}

// Stats reads the container's cgroup (v1 or v2) and its processes' open
// files in /proc. On a v1 host with a unified hierarchy mounted beside
// ("hybrid"), the cgroup's pressure stall totals come from there.
func (h *Handler) Stats(ctx context.Context, c *store.Container) (*handlers.ContainerStats, error) {
	spec, err := h.readSpec(c.ID)
	if err != nil {
		return nil, err
	}
	if spec.Linux == nil {
		return nil, fmt.Errorf("container %s: spec has no linux section", c.ID)
	}
	cg := spec.Linux.CgroupsPath
	var d *cgroupstat.Stats
	if h.host.Cgroups.V2 {
		d, err = cgroupstat.ReadV2(h.cgroupPath(cg, ""))
	} else {
		d, err = cgroupstat.ReadV1(func(ctl string) string { return h.cgroupPath(cg, ctl) })
		if err == nil {
			d.ReadUnified(h.cgroupPath(cg, "unified"))
		}
	}
	if err != nil {
		return nil, err
	}
	initPid := 0
	if c.Process != nil {
		initPid = c.Process.Pid
	}
	d.ReadProcs("/proc", initPid)
	return handlers.StatsFrom(d), nil
}

// UpdateResources applies new limits with `runc update` and records them in
// the bundle's spec, so a later read of the spec agrees.
func (h *Handler) UpdateResources(ctx context.Context, c *store.Container, res *specs.LinuxResources) error {
	if res == nil {
		return nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encoding resources: %w", err)
	}
	f, err := os.CreateTemp(h.bundle(c.ID), "resources-*.json")
	if err != nil {
		return fmt.Errorf("writing resources: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing resources: %w", err)
	}
	f.Close()
	if _, err := h.rt.run(logger(ctx, c.ID), "update", "--resources", f.Name(), c.ID); err != nil {
		return fmt.Errorf("updating resources: %w", err)
	}
	spec, err := h.readSpec(c.ID)
	if err != nil {
		return err
	}
	spec.Linux.Resources = mergeResources(spec.Linux.Resources, res)
	return oci.WriteSpec(h.bundle(c.ID), spec)
}

// mergeResources overlays the CPU and memory fields of upd on cur.
func mergeResources(cur, upd *specs.LinuxResources) *specs.LinuxResources {
	if cur == nil {
		return upd
	}
	out := *cur
	if upd.CPU != nil {
		out.CPU = upd.CPU
	}
	if upd.Memory != nil {
		out.Memory = upd.Memory
	}
	if upd.Pids != nil {
		out.Pids = upd.Pids
	}
	if upd.HugepageLimits != nil {
		out.HugepageLimits = upd.HugepageLimits
	}
	if upd.Unified != nil {
		out.Unified = upd.Unified
	}
	return &out
}

// SandboxStats is nil: a runc pod costs what its containers do (the
// infra container is a pause process).
func (h *Handler) SandboxStats(context.Context, *store.Sandbox) (*handlers.ContainerStats, error) {
	return nil, nil
}
