package oci

import (
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// Cgroup drivers.
const (
	CgroupDriverCgroupfs = "cgroupfs"
	CgroupDriverSystemd  = "systemd"
)

// cgroupsPath is the spec's cgroupsPath for id under parent.
//
// cgroupfs: parent + "/crivm-" + id, parent defaulting to "/crivm"; the
// kubelet's "/kubepods/burstable/pod<uid>" is used as is. systemd:
// "<slice>:crivm:<id>", where the parent's last element must be a slice
// ("kubepods-burstable-pod<uid>.slice"); it defaults to "system.slice".
// A systemd slice given to the cgroupfs driver, or the other way round, is
// InvalidArgument.
func cgroupsPath(parent, driver, id string) (string, error) {
	switch driver {
	case "", CgroupDriverCgroupfs:
		if parent == "" {
			parent = defaultCgroupParentCgroupfs
		}
		if strings.HasSuffix(path.Base(parent), ".slice") {
			return "", errdefs.InvalidArgument("cgroup parent %q is a systemd slice, but the cgroup driver is cgroupfs", parent)
		}
		return path.Join("/", parent, "crivm-"+id), nil
	case CgroupDriverSystemd:
		if parent == "" {
			parent = "system.slice"
		}
		slice := path.Base(parent)
		if !strings.HasSuffix(slice, ".slice") || slice == ".slice" {
			return "", errdefs.InvalidArgument("cgroup parent %q is not a systemd slice, but the cgroup driver is systemd", parent)
		}
		return slice + ":crivm:" + id, nil
	default:
		return "", errdefs.InvalidArgument("unknown cgroup driver %q", driver)
	}
}

// CheckCgroupParent is the generator's check of a pod's cgroup parent
// against the cgroup driver, for a caller that validates a request before
// any spec is made.
func CheckCgroupParent(parent, driver string) error {
	_, err := cgroupsPath(parent, driver, "id")
	return err
}

// linuxResources maps CRI resources to OCI ones. The result is never nil:
// the caller adds the device rules.
//
// Memory+swap: the CRI value when set, else equal to the memory limit
// (no swap), as CRI-O does; both only where the hierarchy accounts swap
// (cgroup v2, or v1 with memory.memsw), since runc fails writing a swap
// limit elsewhere. Unified (v2) keys pass through on v2 and are dropped
// with a warning on v1, where runc would refuse them.
func linuxResources(r *runtimeapi.LinuxContainerResources, h *Host) (*specs.LinuxResources, error) {
	out := &specs.LinuxResources{}
	if h.PidsLimit > 0 {
		out.Pids = &specs.LinuxPids{Limit: ptr(h.PidsLimit)}
	}
	if r == nil {
		return out, nil
	}

	var cpu specs.LinuxCPU
	if r.GetCpuShares() > 0 {
		cpu.Shares = ptr(uint64(r.GetCpuShares()))
	}
	if r.GetCpuQuota() != 0 {
		cpu.Quota = ptr(r.GetCpuQuota())
	}
	if r.GetCpuPeriod() > 0 {
		cpu.Period = ptr(uint64(r.GetCpuPeriod()))
	}
	cpu.Cpus = r.GetCpusetCpus()
	cpu.Mems = r.GetCpusetMems()
	if cpu != (specs.LinuxCPU{}) {
		out.CPU = &cpu
	}

	limit := r.GetMemoryLimitInBytes()
	if limit < 0 || r.GetMemorySwapLimitInBytes() < 0 && r.GetMemorySwapLimitInBytes() != -1 {
		return nil, errdefs.InvalidArgument("memory limits must not be negative")
	}
	if limit > 0 {
		out.Memory = &specs.LinuxMemory{Limit: ptr(limit)}
		if h.Cgroups.V2 || h.Cgroups.Swap {
			swap := r.GetMemorySwapLimitInBytes()
			if swap == 0 {
				swap = limit
			}
			out.Memory.Swap = ptr(swap)
		}
	}

	for _, hp := range r.GetHugepageLimits() {
		if hp.GetPageSize() == "" {
			return nil, errdefs.InvalidArgument("hugepage limit without a page size")
		}
		if h.Cgroups.Hugetlb {
			out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: hp.GetPageSize(), Limit: hp.GetLimit()})
		}
	}

	if len(r.GetUnified()) > 0 {
		if h.Cgroups.V2 {
			out.Unified = copyMap(r.GetUnified())
		} else {
			h.warnf("ignoring cgroup v2 (unified) resources on a cgroup v1 host: %v", r.GetUnified())
		}
	}
	return out, nil
}

// clampOOMScoreAdj raises adj to floor. Lowering oom_score_adj below the
// value a process inherited needs CAP_SYS_RESOURCE; without it runc's
// write to /proc/self/oom_score_adj fails and `runc create` dies with
// "can't get final child's PID from pipe: EOF". The kubelet asks for -997
// (guaranteed pods) and -998 (sandboxes), so a daemon without the
// capability must clamp, as containerd's restrict_oom_score_adj does.
func clampOOMScoreAdj(adj, floor int) int {
	return max(adj, floor)
}
