package oci

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CgroupFeatures describes the cgroup hierarchy a spec is applied under.
type CgroupFeatures struct {
	// V2 is the unified hierarchy. Containers then get a private cgroup
	// namespace, as with containerd and CRI-O; on v1 they stay in the host's.
	V2 bool
	// Swap is swap accounting on v1 (memory.memsw.* exists). On v2 swap
	// limits are always set: runc ignores a zero swap limit where the
	// kernel lacks swap accounting.
	Swap bool
	// Hugetlb is a usable hugetlb controller (in cgroup.controllers on v2,
	// a mounted hierarchy on v1). Without it hugepage limits are dropped,
	// as containerd does: the kubelet sets one per page size on every
	// container, and runc fails to apply them where the controller is
	// missing.
	Hugetlb bool
}

// ProbeCgroups inspects the host's /sys/fs/cgroup.
func ProbeCgroups() (CgroupFeatures, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return CgroupFeatures{}, fmt.Errorf("probing cgroups: %w", err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		ctrls, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		if err != nil {
			return CgroupFeatures{}, fmt.Errorf("probing cgroups: %w", err)
		}
		return CgroupFeatures{V2: true, Swap: true, Hugetlb: slices.Contains(strings.Fields(string(ctrls)), "hugetlb")}, nil
	}
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	huge := unix.Statfs("/sys/fs/cgroup/hugetlb", &st) == nil && st.Type == unix.CGROUP_SUPER_MAGIC
	return CgroupFeatures{Swap: err == nil, Hugetlb: huge}, nil
}

// capSysResource is CAP_SYS_RESOURCE's bit number.
const capSysResource = 24

// OOMScoreAdjFloor is the lowest oom_score_adj this process's children may
// set (Host.DaemonOOMScoreAdj): -1000 when it holds CAP_SYS_RESOURCE, else
// its own oom_score_adj, which children inherit and may only raise.
func OOMScoreAdjFloor() (int, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("reading /proc/self/status: %w", err)
	}
	capEff, err := statusField(status, "CapEff")
	if err != nil {
		return 0, err
	}
	mask, err := strconv.ParseUint(capEff, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing CapEff %q: %w", capEff, err)
	}
	if mask&(1<<capSysResource) != 0 {
		return -1000, nil
	}
	own, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, fmt.Errorf("reading /proc/self/oom_score_adj: %w", err)
	}
	adj, err := strconv.Atoi(strings.TrimSpace(string(own)))
	if err != nil {
		return 0, fmt.Errorf("parsing oom_score_adj %q: %w", own, err)
	}
	return adj, nil
}

// RuntimeCapabilities returns the capabilities in this process's bounding
// set (CapBnd in /proc/self/status), in number order: what a privileged
// container or "ALL" gets (Host.Capabilities). The runtime cannot grant
// more: runc fails with "unable to apply caps: operation not permitted" on
// a capability outside the bounding set it inherits, as where root lacks
// CAP_SYS_RESOURCE.
func RuntimeCapabilities() ([]string, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, fmt.Errorf("reading /proc/self/status: %w", err)
	}
	capBnd, err := statusField(status, "CapBnd")
	if err != nil {
		return nil, err
	}
	mask, err := strconv.ParseUint(capBnd, 16, 64)
	if err != nil {
		return nil, fmt.Errorf("parsing CapBnd %q: %w", capBnd, err)
	}
	return capabilitiesInMask(mask), nil
}

// capabilitiesInMask names the bits of a capability mask that Linux
// defines (allCapabilities is in number order); unknown bits are dropped.
func capabilitiesInMask(mask uint64) []string {
	caps := []string{}
	for bit, c := range allCapabilities {
		if mask&(1<<bit) != 0 {
			caps = append(caps, c)
		}
	}
	return caps
}

func statusField(status []byte, key string) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == key {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("reading /proc/self/status: no %s field", key)
}
