package oci

import (
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/oci/seccomp"
)

// defaultMaskedPaths and defaultReadonlyPaths apply to every
// non-privileged container unless the CRI config lists its own.
var (
	defaultMaskedPaths = []string{
		"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	defaultReadonlyPaths = []string{
		"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// pathsOrDefault is the CRI list when it is non-nil (an empty list masks
// nothing, the kubelet's procMount: Unmasked), else the defaults.
func pathsOrDefault(cri, defaults []string) []string {
	if cri != nil {
		return slices.Clone(cri)
	}
	return slices.Clone(defaults)
}

// Legacy seccomp_profile_path and apparmor_profile values.
const (
	profileRuntimeDefault = "runtime/default"
	profileDockerDefault  = "docker/default"
	profileUnconfined     = "unconfined"
	profileLocalhostPfx   = "localhost/"
)

// seccompProfile selects the seccomp profile. The typed field wins over the
// deprecated path string. Privileged containers run unconfined.
//
// RuntimeDefault is crivm's default profile (oci/seccomp) for the process's
// bounding capabilities. Unconfined is no filter. Localhost loads the JSON
// file at the given path (relative paths resolve under SeccompProfileRoot).
//
// When nothing is asked (no typed profile, empty path) the container runs
// unconfined, as the CRI defines an empty profile, unless
// Host.SeccompUseDefaultWhenEmpty gives it RuntimeDefault (the config key
// seccomp_use_default_when_empty, as in CRI-O). The kubelet names a
// profile for every container: Unconfined unless its seccompDefault option
// makes it RuntimeDefault.
func seccompProfile(h *Host, typed *runtimeapi.SecurityProfile, legacy string, privileged bool, caps []string) (*specs.LinuxSeccomp, error) {
	if privileged {
		return nil, nil
	}
	if typed == nil && legacy == "" && !h.SeccompUseDefaultWhenEmpty {
		return nil, nil
	}
	kind, ref, err := profileRequest(typed, legacy, "seccomp", true)
	if err != nil {
		return nil, err
	}
	switch kind {
	case runtimeapi.SecurityProfile_Unconfined:
		return nil, nil
	case runtimeapi.SecurityProfile_Localhost:
		p, err := localhostPath(ref, h.SeccompProfileRoot)
		if err != nil {
			return nil, err
		}
		return seccomp.Load(p)
	default:
		return seccomp.Default(caps), nil
	}
}

// localhostPath resolves a Localhost seccomp reference: absolute as the
// kubelet sends it, or relative to root (and not above it).
func localhostPath(ref, root string) (string, error) {
	if ref == "" {
		return "", errdefs.InvalidArgument("localhost seccomp profile without a path")
	}
	if filepath.IsAbs(ref) {
		return filepath.Clean(ref), nil
	}
	if root == "" || !filepath.IsLocal(ref) {
		return "", errdefs.InvalidArgument("seccomp profile %q is not an absolute path", ref)
	}
	return filepath.Join(root, ref), nil
}

// apparmorProfile selects the AppArmor profile name for the process
// ("" leaves the process unconfined). The typed field wins over the
// deprecated string; nothing asked means RuntimeDefault. Privileged
// containers get no profile unless they name a Localhost one. On a host
// without AppArmor nothing is set, with a warning when a profile was
// explicitly asked for.
func apparmorProfile(h *Host, typed *runtimeapi.SecurityProfile, legacy string, privileged bool) (string, error) {
	kind, ref, err := profileRequest(typed, legacy, "apparmor", false)
	if err != nil {
		return "", err
	}
	asked := typed != nil || legacy != ""
	if !h.HostHasAppArmor {
		if asked && kind != runtimeapi.SecurityProfile_Unconfined {
			h.warnf("AppArmor is not enabled on this host: ignoring the requested AppArmor profile")
		}
		return "", nil
	}
	switch {
	case kind == runtimeapi.SecurityProfile_Localhost:
		if ref == "" {
			return "", errdefs.InvalidArgument("localhost AppArmor profile without a name")
		}
		return ref, nil
	case kind == runtimeapi.SecurityProfile_Unconfined || privileged:
		return "", nil
	case h.AppArmorDefault == "":
		h.warnf("no default AppArmor profile is configured: the container runs unconfined")
		return "", nil
	default:
		return h.AppArmorDefault, nil
	}
}

// profileRequest reads the typed profile or, when it is nil, the legacy
// string ("runtime/default", "docker/default" for seccomp, "unconfined",
// "localhost/REF"); nothing asked is RuntimeDefault.
func profileRequest(typed *runtimeapi.SecurityProfile, legacy, what string, docker bool) (runtimeapi.SecurityProfile_ProfileType, string, error) {
	if typed != nil {
		switch typed.GetProfileType() {
		case runtimeapi.SecurityProfile_RuntimeDefault, runtimeapi.SecurityProfile_Unconfined, runtimeapi.SecurityProfile_Localhost:
			return typed.GetProfileType(), typed.GetLocalhostRef(), nil
		}
		return 0, "", errdefs.InvalidArgument("unknown %s profile type %v", what, typed.GetProfileType())
	}
	switch {
	case legacy == "" || legacy == profileRuntimeDefault || (docker && legacy == profileDockerDefault):
		return runtimeapi.SecurityProfile_RuntimeDefault, "", nil
	case legacy == profileUnconfined:
		return runtimeapi.SecurityProfile_Unconfined, "", nil
	case strings.HasPrefix(legacy, profileLocalhostPfx):
		return runtimeapi.SecurityProfile_Localhost, strings.TrimPrefix(legacy, profileLocalhostPfx), nil
	}
	return 0, "", errdefs.InvalidArgument("unknown %s profile %q", what, legacy)
}

// ipcSysctls are the sysctls of the IPC namespace (fs.mqueue.* is matched
// by prefix).
var ipcSysctls = []string{
	"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
	"kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
}

// sysctls validates the pod's sysctls: only namespaced ones are allowed,
// net.* not with host networking and IPC ones not with host IPC, where
// they would change the host. The result is nil when m is empty.
func sysctls(m map[string]string, hostNet, hostIPC bool) (map[string]string, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if !validSysctlName(k) {
			return nil, errdefs.InvalidArgument("invalid sysctl name %q", k)
		}
		// The runtime writes v to /proc/sys, where a NUL ends it early.
		if strings.IndexByte(v, 0) >= 0 {
			return nil, errdefs.InvalidArgument("sysctl %q: the value %q contains NUL", k, v)
		}
		switch {
		case strings.HasPrefix(k, "net."):
			if hostNet {
				return nil, errdefs.InvalidArgument("sysctl %q is not allowed with host networking", k)
			}
		case slices.Contains(ipcSysctls, k) || strings.HasPrefix(k, "fs.mqueue."):
			if hostIPC {
				return nil, errdefs.InvalidArgument("sysctl %q is not allowed with host IPC", k)
			}
		default:
			return nil, errdefs.InvalidArgument("sysctl %q is not namespaced", k)
		}
		out[k] = v
	}
	return out, nil
}

// CheckSysctls is the check SandboxSpec and ContainerSpec make of a pod's
// sysctls, for a caller that validates a request before any spec is made.
func CheckSysctls(m map[string]string, hostNet, hostIPC bool) error {
	_, err := sysctls(m, hostNet, hostIPC)
	return err
}

// CheckSecurityProfile is the generator's check of a seccomp or AppArmor
// request (what is "seccomp" or "apparmor"): a known profile type, or a
// known legacy string.
func CheckSecurityProfile(what string, typed *runtimeapi.SecurityProfile, legacy string) error {
	_, _, err := profileRequest(typed, legacy, what, what == "seccomp")
	return err
}

// validSysctlName accepts dot-separated segments of letters, digits, '_',
// '-', and '/' (the kubelet keeps a '/' inside a segment, e.g. a VLAN
// interface name).
func validSysctlName(k string) bool {
	if k == "" || len(k) > 253 {
		return false
	}
	for seg := range strings.SplitSeq(k, ".") {
		if seg == "" || seg == "/" || strings.HasPrefix(seg, "/") || strings.HasSuffix(seg, "/") {
			return false
		}
		for _, c := range seg {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '/'
			if !ok {
				return false
			}
		}
	}
	return true
}
