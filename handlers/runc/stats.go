package runc

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/crivm/crivm/internal/cgroupstat"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crivm/crivm/handlers"
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

// Stats reads the container's cgroup: CPU time and memory working set
// (usage minus inactive file pages), on cgroup v1 or v2.
func (h *Handler) Stats(ctx context.Context, c *store.Container) (*handlers.ContainerStats, error) {
	spec, err := h.readSpec(c.ID)
	if err != nil {
		return nil, err
	}
	cg := spec.Linux.CgroupsPath
	st := &handlers.ContainerStats{Timestamp: time.Now()}
	if h.host.Cgroups.V2 {
		dir := h.cgroupPath(cg, "")
		cpu, err := cgroupstat.Keyed(filepath.Join(dir, "cpu.stat"))
		if err != nil {
			return nil, fmt.Errorf("reading cpu.stat: %w", err)
		}
		st.CPUUsageNanos = cpu["usage_usec"] * 1000
		if st.MemoryUsageBytes, err = cgroupstat.Value(filepath.Join(dir, "memory.current")); err != nil {
			return nil, fmt.Errorf("reading memory.current: %w", err)
		}
		mem, err := cgroupstat.Keyed(filepath.Join(dir, "memory.stat"))
		if err != nil {
			return nil, fmt.Errorf("reading memory.stat: %w", err)
		}
		st.MemoryWorkingSetBytes = cgroupstat.WorkingSet(st.MemoryUsageBytes, mem["inactive_file"])
		st.Processes, _ = cgroupstat.Value(filepath.Join(dir, "pids.current"))
		return st, nil
	}
	if st.CPUUsageNanos, err = cgroupstat.Value(filepath.Join(h.cgroupPath(cg, "cpuacct"), "cpuacct.usage")); err != nil {
		return nil, fmt.Errorf("reading cpuacct.usage: %w", err)
	}
	memDir := h.cgroupPath(cg, "memory")
	if st.MemoryUsageBytes, err = cgroupstat.Value(filepath.Join(memDir, "memory.usage_in_bytes")); err != nil {
		return nil, fmt.Errorf("reading memory.usage_in_bytes: %w", err)
	}
	mem, err := cgroupstat.Keyed(filepath.Join(memDir, "memory.stat"))
	if err != nil {
		return nil, fmt.Errorf("reading memory.stat: %w", err)
	}
	st.MemoryWorkingSetBytes = cgroupstat.WorkingSet(st.MemoryUsageBytes, mem["total_inactive_file"])
	st.Processes, _ = cgroupstat.Value(filepath.Join(h.cgroupPath(cg, "pids"), "pids.current"))
	return st, nil
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
