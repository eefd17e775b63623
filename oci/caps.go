package oci

import (
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// allCapabilities lists every capability Linux defines (up to
// CAP_CHECKPOINT_RESTORE, 40, Linux 5.9), in number order. runc skips names
// the running kernel does not know.
var allCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// AllCapabilities returns every capability name Linux defines, in number
// order.
func AllCapabilities() []string { return slices.Clone(allCapabilities) }

// DefaultCapabilities returns the capabilities a container gets without
// add/drop (CRI-O's default set).
func DefaultCapabilities() []string { return slices.Clone(defaultCapabilities) }

// defaultCapabilities is CRI-O's default set.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID",
	"CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_KILL",
}

// capabilities computes a non-privileged container's capability sets from
// the defaults and the CRI add/drop lists, as CRI-O does: "ALL" in drop
// starts from no capability, else "ALL" in add from every one the runtime
// holds (held: Host.Capabilities, see grantable), else the start is the
// default set; then the named additions apply, then the named drops (a
// drop wins over an add).
//
// The sets are bounding, effective and permitted. Inheritable stays empty
// (CVE-2022-27652), and ambient holds only add_ambient_capabilities, so a
// process that switches to a non-root user loses its capabilities, as
// Kubernetes expects.
func capabilities(c *runtimeapi.Capability, held []string) (*specs.LinuxCapabilities, error) {
	add, addAll, err := normalizeCaps(c.GetAddCapabilities())
	if err != nil {
		return nil, err
	}
	drop, dropAll, err := normalizeCaps(c.GetDropCapabilities())
	if err != nil {
		return nil, err
	}
	ambient, ambientAll, err := normalizeCaps(c.GetAddAmbientCapabilities())
	if err != nil {
		return nil, err
	}
	if ambientAll {
		return nil, errdefs.InvalidArgument(`"ALL" is not allowed in add_ambient_capabilities`)
	}

	set := map[string]bool{}
	switch {
	case dropAll: // applies after an "ALL" in add
	case addAll:
		for _, c := range grantable(held) {
			set[c] = true
		}
	default:
		for _, c := range defaultCapabilities {
			set[c] = true
		}
	}
	for _, c := range add {
		set[c] = true
	}
	for _, c := range drop {
		delete(set, c)
	}
	for _, c := range ambient {
		if !set[c] {
			return nil, errdefs.InvalidArgument("ambient capability %s is not in the container's capability set", c)
		}
	}

	var list []string
	for _, c := range allCapabilities {
		if set[c] {
			list = append(list, c)
		}
	}
	caps := &specs.LinuxCapabilities{
		Bounding:  list,
		Effective: slices.Clone(list),
		Permitted: slices.Clone(list),
	}
	if len(ambient) > 0 {
		// The kernel keeps an ambient capability only while it is also
		// inheritable.
		amb := inCapabilityOrder(ambient)
		caps.Ambient = amb
		caps.Inheritable = slices.Clone(amb)
	}
	return caps, nil
}

// CheckCapabilities is ContainerSpec's check of a capability request
// (known names, no "ALL" in add_ambient_capabilities, ambient ones in the
// resulting set), for a caller that validates a request before any spec
// is made. "ALL" in add counts as every capability Linux defines.
func CheckCapabilities(c *runtimeapi.Capability) error {
	_, err := capabilities(c, nil)
	return err
}

// privilegedCapabilities is every capability the runtime holds (held, see
// grantable) in bounding, effective and permitted. As for other
// containers, inheritable and ambient stay empty, so a privileged
// container's non-root processes hold no capabilities.
func privilegedCapabilities(held []string) *specs.LinuxCapabilities {
	all := grantable(held)
	return &specs.LinuxCapabilities{
		Bounding:  slices.Clone(all),
		Effective: slices.Clone(all),
		Permitted: slices.Clone(all),
	}
}

// grantable is what privileged and "ALL" grant: the capabilities the
// runtime holds (Host.Capabilities, its bounding set), known ones only,
// in number order; nil means every capability Linux defines (a VM guest,
// whose agent holds them all).
func grantable(held []string) []string {
	if held == nil {
		return allCapabilities
	}
	return inCapabilityOrder(held)
}

// normalizeCaps turns "x", "X" or "CAP_X" into "CAP_X" and reports whether
// the list holds "ALL". An unknown name is an InvalidArgument error.
func normalizeCaps(names []string) (caps []string, all bool, err error) {
	for _, n := range names {
		if strings.EqualFold(n, "ALL") {
			all = true
			continue
		}
		c := strings.ToUpper(n)
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		if !slices.Contains(allCapabilities, c) {
			return nil, false, errdefs.InvalidArgument("unknown capability %q", n)
		}
		caps = append(caps, c)
	}
	return caps, all, nil
}

func inCapabilityOrder(caps []string) []string {
	var out []string
	for _, c := range allCapabilities {
		if slices.Contains(caps, c) {
			out = append(out, c)
		}
	}
	return out
}
