package vm

import (
	"context"
	"fmt"
	"slices"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/store"
)

// Bounds on what a guest's stats reply may carry into the host's metrics.
const (
	maxGuestIODevices  = 64
	maxGuestPageSizes  = 8
	maxGuestLabelBytes = 64
)

// guestStats turns the agent's account of a container (cgroup v2 and /proc
// in the guest) into the host's form. The guest is not trusted: only the
// known values are taken, lists are bounded, and names that would become
// metric labels are checked; a bad device name falls back to
// "MAJOR:MINOR", a bad page size drops the entry. The numbers themselves
// are the guest's word, and are reported as such.
func guestStats(r *api.StatsContainerResponse) *cgroupstat.Stats {
	d := &cgroupstat.Stats{Values: map[cgroupstat.Key]uint64{}}
	for k, v := range r.GetValues() {
		if key := cgroupstat.Key(k); slices.Contains(cgroupstat.Keys, key) {
			d.Values[key] = v
		}
	}
	for _, io := range r.GetIo() {
		if len(d.IO) == maxGuestIODevices {
			break
		}
		dev := io.GetDevice()
		if !labelSafe(dev) {
			dev = fmt.Sprintf("%d:%d", io.GetMajor(), io.GetMinor())
		}
		d.IO = append(d.IO, cgroupstat.IODevice{Major: io.GetMajor(), Minor: io.GetMinor(), Device: dev,
			ReadBytes: io.GetReadBytes(), WriteBytes: io.GetWriteBytes(), Reads: io.GetReads(), Writes: io.GetWrites()})
	}
	for _, h := range r.GetHugetlb() {
		if len(d.Hugetlb) == maxGuestPageSizes {
			break
		}
		if labelSafe(h.GetPageSize()) {
			d.Hugetlb = append(d.Hugetlb, cgroupstat.Hugetlb{PageSize: h.GetPageSize(), Usage: h.GetUsageBytes()})
		}
	}
	return d
}

// labelSafe accepts short names of letters, digits and "/_:.-", as device
// names and page sizes are.
func labelSafe(s string) bool {
	if s == "" || len(s) > maxGuestLabelBytes {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '/' || r == '_' || r == ':' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

// SandboxStats reads the VM's cgroup on the host: guest RAM the guest
// touched, QEMU's own memory and virtiofsd, and their CPU time.
func (h *Handler) SandboxStats(ctx context.Context, sb *store.Sandbox) (*handlers.ContainerStats, error) {
	cfg, err := handlers.SandboxConfig(sb)
	if err != nil {
		return nil, err
	}
	cg, err := h.sandboxCgroup(cfg, sb.ID)
	if err != nil {
		return nil, err
	}
	d, err := cg.Stats()
	if err != nil {
		return nil, fmt.Errorf("reading the VM's cgroup %s: %w", cg.Path, err)
	}
	return handlers.StatsFrom(d), nil
}
