package configs

import (
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/crivm/crivm/internal/log"
)

// KeyError is a bad value of one key of the merged configuration.
type KeyError struct {
	Key    string
	Reason string
}

func (e *KeyError) Error() string { return fmt.Sprintf("key %s: %s", e.Key, e.Reason) }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Reason: fmt.Sprintf(format, args...)}
}

var handlerName = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

func oneOf(key, v string, allowed ...string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return keyErr(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

func absPath(key, v string, optional bool) error {
	if v == "" && optional {
		return nil
	}
	if v == "" {
		return keyErr(key, "must be set")
	}
	if !filepath.IsAbs(v) {
		return keyErr(key, "%q is not an absolute path", v)
	}
	return nil
}

// HostPathPrefix checks one entry of a hostPath allowlist for untrusted pods
// (untrusted_allowed_host_paths, a trust rule's allow_host_paths): an
// absolute, clean path other than "/". It returns a *KeyError for key.
func HostPathPrefix(key, v string) error {
	if err := absPath(key, v, false); err != nil {
		return err
	}
	if c := filepath.Clean(v); c != v {
		return keyErr(key, "%q is not a clean path (write %q)", v, c)
	}
	if v == "/" {
		return keyErr(key, "\"/\" would allow every host path; list narrower prefixes")
	}
	return nil
}

// Validate checks the merged configuration. It returns a *KeyError for the
// first bad key.
func (c *Config) Validate() error {
	checks := []error{
		absPath("crivm.root", c.Root, false),
		absPath("crivm.runroot", c.Runroot, false),
		absPath("crivm.listen", c.SocketPath(), false),
		oneOf("crivm.log_format", c.LogFormat, "text", "json"),
	}
	if _, err := log.ParseLevel(c.LogLevel); err != nil {
		checks = append(checks, keyErr("crivm.log_level", "%v", err))
	}
	checks = append(checks, c.Runtime.validate()...)
	for i, d := range c.Network.CNIPluginDirs {
		checks = append(checks, absPath(fmt.Sprintf("crivm.network.cni_plugin_dirs[%d]", i), d, false))
	}
	if len(c.Network.CNIPluginDirs) == 0 {
		checks = append(checks, keyErr("crivm.network.cni_plugin_dirs", "must name at least one directory"))
	}
	checks = append(checks, absPath("crivm.network.network_dir", c.Network.NetworkDir, false))
	if c.Image.PauseImage == "" {
		checks = append(checks, keyErr("crivm.image.pause_image", "must be set"))
	}
	if net.ParseIP(c.Stream.Address) == nil {
		checks = append(checks, keyErr("crivm.stream.address", "%q is not an IP address", c.Stream.Address))
	}
	if net.ParseIP(c.Metrics.MetricsAddress) == nil {
		checks = append(checks, keyErr("crivm.metrics.metrics_address", "%q is not an IP address", c.Metrics.MetricsAddress))
	}
	if c.Metrics.MetricsPort < 0 || c.Metrics.MetricsPort > 65535 {
		checks = append(checks, keyErr("crivm.metrics.metrics_port", "%d is outside 0..65535", c.Metrics.MetricsPort))
	}
	if c.Stream.Port < 0 || c.Stream.Port > 65535 {
		checks = append(checks, keyErr("crivm.stream.port", "%d is outside 0..65535", c.Stream.Port))
	}
	checks = append(checks, oneOf("crivm.image.storage_driver", c.Image.StorageDriver, "overlay", "vfs"))
	for _, reg := range slices.Sorted(maps.Keys(c.Image.RegistryMirrors)) {
		if len(c.Image.RegistryMirrors[reg]) == 0 {
			checks = append(checks, keyErr("crivm.image.registry_mirrors."+reg, "lists no mirror"))
		}
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *RuntimeConfig) validate() []error {
	const p = "crivm.runtime."
	var errs []error
	if len(r.Runtimes) == 0 {
		return []error{keyErr(p+"runtimes", "no handler is configured")}
	}
	names := make([]string, 0, len(r.Runtimes))
	for n := range r.Runtimes {
		names = append(names, n)
	}
	slices.Sort(names)
	known := strings.Join(names, ", ")

	if _, ok := r.Runtimes[r.DefaultRuntime]; !ok {
		errs = append(errs, keyErr(p+"default_runtime", "handler %q is not configured (configured: %s)", r.DefaultRuntime, known))
	}
	if u := r.RuntimeUntrustedWorkload; u != "" {
		h, ok := r.Runtimes[u]
		switch {
		case !ok:
			errs = append(errs, keyErr(p+"runtime_untrusted_workload", "handler %q is not configured (configured: %s)", u, known))
		case h.RuntimeType != RuntimeTypeVM:
			errs = append(errs, keyErr(p+"runtime_untrusted_workload", "handler %q has runtime_type %q; untrusted pods must run in a %q handler", u, h.RuntimeType, RuntimeTypeVM))
		}
	}
	errs = append(errs,
		oneOf(p+"default_workload_trust", r.DefaultWorkloadTrust, Trusted, Untrusted),
		oneOf(p+"cgroup_manager", r.CgroupManager, "cgroupfs", "systemd"),
		absPath(p+"trust_policy", r.TrustPolicy, true),
		absPath(p+"audit_log", r.AuditLog, true),
		absPath(p+"kubelet_root_dir", r.KubeletRootDir, false),
	)
	if r.KubeletRootDir != "" && filepath.Clean(r.KubeletRootDir) == "/" {
		errs = append(errs, keyErr(p+"kubelet_root_dir", "must not be /"))
	}
	for i, a := range r.UntrustedAllowedHostPaths {
		errs = append(errs, HostPathPrefix(fmt.Sprintf("%suntrusted_allowed_host_paths[%d]", p, i), a))
	}
	for i, d := range r.UntrustedAllowedDevices {
		key := fmt.Sprintf("%suntrusted_allowed_devices[%d]", p, i)
		if err := absPath(key, d, false); err != nil {
			errs = append(errs, err)
		} else if filepath.Clean(d) != d {
			errs = append(errs, keyErr(key, "%q is not a clean path (write %q)", d, filepath.Clean(d)))
		}
	}
	aliasOwner := map[string]string{}
	for _, n := range names {
		h := r.Runtimes[n]
		hp := p + "runtimes." + n + "."
		if !handlerName.MatchString(n) {
			errs = append(errs, keyErr(p+"runtimes."+n, "handler name %q must be lowercase letters, digits, '.', '_' or '-'", n))
		}
		for _, a := range h.Aliases {
			if _, clash := r.Runtimes[a]; clash {
				errs = append(errs, keyErr(hp+"aliases", "alias %q is already a handler name", a))
			}
			if o, dup := aliasOwner[a]; dup {
				errs = append(errs, keyErr(hp+"aliases", "alias %q is also an alias of %q", a, o))
			}
			aliasOwner[a] = n
		}
		errs = append(errs, h.validate(hp)...)
	}
	return errs
}

func (h *RuntimeHandler) validate(hp string) []error {
	switch h.RuntimeType {
	case RuntimeTypeOCI:
		errs := []error{absPath(hp+"runtime_path", h.RuntimePath, false), absPath(hp+"monitor_path", h.MonitorPath, false)}
		vmOnly := []struct {
			key string
			set bool
		}{
			{"hypervisor", h.Hypervisor != ""}, {"hypervisor_path", h.HypervisorPath != ""},
			{"accel", h.Accel != ""}, {"machine_type", h.MachineType != ""}, {"kernel", h.Kernel != ""},
			{"default_vcpus", h.DefaultVCPUs != 0}, {"default_memory_mib", h.DefaultMemoryMiB != 0},
			{"shared_fs", h.SharedFS != ""}, {"agent_transport", h.AgentTransport != ""},
			{"agent_path", h.AgentPath != ""}, {"virtio_fs_daemon", h.VirtioFSDaemon != ""},
			{"virtio_fs_cache", h.VirtioFSCache != ""},
			{"max_vcpus", h.MaxVCPUs != 0}, {"max_memory_mib", h.MaxMemoryMiB != 0},
			{"vmm_uid_base", h.VMMUIDBase != 0}, {"vmm_uid_count", h.VMMUIDCount != 0},
			{"vm_factory", h.VMFactory != ""}, {"vm_pool_size", h.VMPoolSize != 0}, {"ksm", h.KSM}, {"tcg_cache_mib", h.TCGCacheMiB != 0},
		}
		for _, k := range vmOnly {
			if k.set {
				errs = append(errs, keyErr(hp+k.key, "applies to runtime_type %q only", RuntimeTypeVM))
			}
		}
		return errs
	case RuntimeTypeVM:
		errs := []error{}
		if h.RuntimePath != "" || h.MonitorPath != "" {
			errs = append(errs, keyErr(hp+"runtime_path", "runtime_path and monitor_path apply to runtime_type %q only", RuntimeTypeOCI))
		}
		errs = append(errs,
			oneOf(hp+"hypervisor", h.Hypervisor, "qemu"),
			absPath(hp+"hypervisor_path", h.HypervisorPath, false),
			oneOf(hp+"accel", h.Accel, "auto", "kvm", "tcg"),
			oneOf(hp+"machine_type", h.MachineType, "q35", "microvm"),
			absPath(hp+"kernel", h.Kernel, true),
			absPath(hp+"agent_path", h.AgentPath, true),
			oneOf(hp+"shared_fs", h.SharedFS, "9p", "virtio-fs"),
			oneOf(hp+"agent_transport", h.AgentTransport, "auto", "vsock", "serial"),
			absPath(hp+"virtio_fs_daemon", h.VirtioFSDaemon, true),
			oneOf(hp+"virtio_fs_cache", h.VirtioFSCache, "auto", "always", "none"),
			oneOf(hp+"vm_factory", h.VMFactory, "none", "template", "pool"),
		)
		switch {
		case h.VMPoolSize < 0 || h.VMPoolSize > 64:
			errs = append(errs, keyErr(hp+"vm_pool_size", "%d is outside 0..64", h.VMPoolSize))
		case h.VMFactory == "pool" && h.VMPoolSize == 0:
			errs = append(errs, keyErr(hp+"vm_pool_size", "vm_factory = \"pool\" needs a vm_pool_size of at least 1"))
		case h.VMFactory != "pool" && h.VMFactory != "template" && h.VMPoolSize != 0:
			errs = append(errs, keyErr(hp+"vm_pool_size", "applies to vm_factory = \"pool\" or \"template\" only"))
		}
		if h.DefaultVCPUs < 1 || h.DefaultVCPUs > 255 {
			errs = append(errs, keyErr(hp+"default_vcpus", "%d is outside 1..255", h.DefaultVCPUs))
		}
		if h.TCGCacheMiB < 8 || h.TCGCacheMiB > 1024 {
			errs = append(errs, keyErr(hp+"tcg_cache_mib", "%d MiB is outside 8..1024", h.TCGCacheMiB))
		}
		if h.DefaultMemoryMiB < 64 {
			errs = append(errs, keyErr(hp+"default_memory_mib", "%d MiB is below the 64 MiB a guest needs", h.DefaultMemoryMiB))
		}
		if h.MaxVCPUs != 0 && (h.MaxVCPUs < h.DefaultVCPUs || h.MaxVCPUs > 255) {
			errs = append(errs, keyErr(hp+"max_vcpus", "%d is outside default_vcpus (%d)..255", h.MaxVCPUs, h.DefaultVCPUs))
		}
		if h.MaxMemoryMiB != 0 && h.MaxMemoryMiB < h.DefaultMemoryMiB {
			errs = append(errs, keyErr(hp+"max_memory_mib", "%d MiB is below default_memory_mib (%d)", h.MaxMemoryMiB, h.DefaultMemoryMiB))
		}
		if h.VMMUIDBase < 1000 || uint64(h.VMMUIDBase)+uint64(h.VMMUIDCount) > 1<<32-2 {
			errs = append(errs, keyErr(hp+"vmm_uid_base", "uids %d..%d+%d: want a range of unprivileged uids (from 1000, below 4294967294)", h.VMMUIDBase, h.VMMUIDBase, h.VMMUIDCount))
		}
		return errs
	case "":
		return []error{keyErr(hp+"runtime_type", "must be set to %q or %q", RuntimeTypeOCI, RuntimeTypeVM)}
	default:
		return []error{keyErr(hp+"runtime_type", "%q is not one of %s, %s", h.RuntimeType, RuntimeTypeOCI, RuntimeTypeVM)}
	}
}
