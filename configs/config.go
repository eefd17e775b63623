// Package configs owns crivm's TOML configuration: its types, the embedded
// commented defaults (crivm.conf), loading with drop-ins and flag overrides,
// and validation. Every error names the file (or flag) and the key.
package configs

import (
	_ "embed"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
)

// DefaultTemplate is the full commented default configuration. It is also
// the base layer of every Load: a key absent from all files keeps the value
// written here.
//
//go:embed crivm.conf
var DefaultTemplate string

// Runtime types.
const (
	RuntimeTypeOCI = "oci"
	RuntimeTypeVM  = "vm"
)

// Workload trust values.
const (
	Trusted   = "trusted"
	Untrusted = "untrusted"
)

// Config is the [crivm] table.
type Config struct {
	Root      string        `toml:"root" json:"root"`
	Runroot   string        `toml:"runroot" json:"runroot"`
	Listen    string        `toml:"listen" json:"listen"`
	LogLevel  string        `toml:"log_level" json:"log_level"`
	LogFormat string        `toml:"log_format" json:"log_format"`
	Runtime   RuntimeConfig `toml:"runtime" json:"runtime"`
	Network   NetworkConfig `toml:"network" json:"network"`
	Image     ImageConfig   `toml:"image" json:"image"`
	Stream    StreamConfig  `toml:"stream" json:"stream"`
	Metrics   MetricsConfig `toml:"metrics" json:"metrics"`
}

// MetricsConfig is [crivm.metrics]: the Prometheus endpoint.
type MetricsConfig struct {
	EnableMetrics  bool   `toml:"enable_metrics" json:"enable_metrics"`
	MetricsAddress string `toml:"metrics_address" json:"metrics_address"`
	MetricsPort    int    `toml:"metrics_port" json:"metrics_port"`
}

// StreamConfig is [crivm.stream]: the exec/attach/port-forward server.
type StreamConfig struct {
	Address string `toml:"address" json:"address"`
	// Port 0 picks a free port at start-up.
	Port int `toml:"port" json:"port"`
}

// RuntimeConfig is [crivm.runtime].
type RuntimeConfig struct {
	DefaultRuntime           string `toml:"default_runtime" json:"default_runtime"`
	RuntimeUntrustedWorkload string `toml:"runtime_untrusted_workload" json:"runtime_untrusted_workload"`
	DefaultWorkloadTrust     string `toml:"default_workload_trust" json:"default_workload_trust"`
	TrustPolicy              string `toml:"trust_policy" json:"trust_policy"`
	AuditLog                 string `toml:"audit_log" json:"audit_log"`
	CgroupManager            string `toml:"cgroup_manager" json:"cgroup_manager"`
	// UntrustedAllowedHostPaths are absolute, clean prefixes below which an
	// untrusted pod may mount host paths, beside its own kubelet directory.
	UntrustedAllowedHostPaths []string `toml:"untrusted_allowed_host_paths" json:"untrusted_allowed_host_paths"`
	// UntrustedAllowedDevices are the host devices (CRI devices[].host_path)
	// an untrusted pod may ask for. Empty: none.
	UntrustedAllowedDevices []string `toml:"untrusted_allowed_devices" json:"untrusted_allowed_devices"`
	// UntrustedPrivilegedInVM lets an untrusted pod be privileged inside
	// its VM (all capabilities and devices of the guest, never the
	// host's). Host network, PID and IPC stay refused.
	UntrustedPrivilegedInVM bool `toml:"untrusted_privileged_in_vm" json:"untrusted_privileged_in_vm"`
	// SeccompUseDefaultWhenEmpty gives a container that asks for no
	// seccomp profile (no typed profile, no profile path) crivm's default
	// profile, as CRI-O's key of that name does, in both handlers. false:
	// such a container runs unconfined, which is what the CRI says an
	// empty profile means. (The kubelet sends an explicit profile for
	// every container: Unconfined, or RuntimeDefault with seccompDefault.)
	SeccompUseDefaultWhenEmpty bool `toml:"seccomp_use_default_when_empty" json:"seccomp_use_default_when_empty"`
	// DropInfraCtr runs the runc pods that need no infra (pause) container
	// without one, as CRI-O's key of that name does: pods whose containers
	// share no PID namespace and that have no user namespace of their own.
	// Their IPC and UTS namespaces are pinned instead. false: every runc
	// pod gets an infra container.
	DropInfraCtr bool `toml:"drop_infra_ctr" json:"drop_infra_ctr"`
	// KubeletRootDir is the kubelet's --root-dir; an untrusted pod may mount
	// what is below KubeletRootDir/pods/<its UID>.
	KubeletRootDir string                     `toml:"kubelet_root_dir" json:"kubelet_root_dir"`
	Runtimes       map[string]*RuntimeHandler `toml:"runtimes" json:"runtimes"`
}

// RuntimeHandler is one [crivm.runtime.runtimes.NAME] table. The keys in the
// second group apply to runtime_type "vm" only.
type RuntimeHandler struct {
	RuntimeType string   `toml:"runtime_type" json:"runtime_type"`
	Aliases     []string `toml:"aliases" json:"aliases,omitempty"`
	RuntimePath string   `toml:"runtime_path" json:"runtime_path,omitempty"`
	MonitorPath string   `toml:"monitor_path" json:"monitor_path,omitempty"`

	Hypervisor       string `toml:"hypervisor" json:"hypervisor,omitempty"`
	HypervisorPath   string `toml:"hypervisor_path" json:"hypervisor_path,omitempty"`
	Accel            string `toml:"accel" json:"accel,omitempty"`
	MachineType      string `toml:"machine_type" json:"machine_type,omitempty"`
	Kernel           string `toml:"kernel" json:"kernel,omitempty"`
	DefaultVCPUs     int    `toml:"default_vcpus" json:"default_vcpus,omitempty"`
	DefaultMemoryMiB int    `toml:"default_memory_mib" json:"default_memory_mib,omitempty"`
	// MaxVCPUs and MaxMemoryMiB bound what a pod may ask for (its CPU
	// limit rounded up, its memory limit plus guest headroom); above
	// either, RunPodSandbox is InvalidArgument. Zero: the host's CPUs and
	// RAM.
	MaxVCPUs     int `toml:"max_vcpus" json:"max_vcpus,omitempty"`
	MaxMemoryMiB int `toml:"max_memory_mib" json:"max_memory_mib,omitempty"`
	// VMMUIDBase and VMMUIDCount are the host uids (and gids) QEMU runs
	// as: each VM pod gets its own, base + a free slot below count.
	VMMUIDBase     uint32 `toml:"vmm_uid_base" json:"vmm_uid_base,omitempty"`
	VMMUIDCount    uint32 `toml:"vmm_uid_count" json:"vmm_uid_count,omitempty"`
	SharedFS       string `toml:"shared_fs" json:"shared_fs,omitempty"`
	AgentTransport string `toml:"agent_transport" json:"agent_transport,omitempty"`
	// VirtioFSDaemon is virtiofsd for shared_fs = "virtio-fs". Empty: the
	// first of /usr/libexec/virtiofsd, /usr/lib/qemu/virtiofsd,
	// /usr/bin/virtiofsd.
	VirtioFSDaemon string `toml:"virtio_fs_daemon" json:"virtio_fs_daemon,omitempty"`
	// VirtioFSCache is virtiofsd's cache mode: auto, always or none.
	VirtioFSCache string `toml:"virtio_fs_cache" json:"virtio_fs_cache,omitempty"`
	// AgentPath is the static guest agent. Empty: crivm-agent next to the
	// crivm binary, else /usr/libexec/crivm/crivm-agent.
	AgentPath string `toml:"agent_path" json:"agent_path,omitempty"`
	// VMFactory is how VMs are made: "none" (each boots), "template"
	// (clones of a saved template VM; see handlers/vm/factory.go) or
	// "pool" (VMs booted ahead of pods; handlers/vm/pool.go).
	VMFactory string `toml:"vm_factory" json:"vm_factory,omitempty"`
	// VMPoolSize is how many VMs the pool keeps ready: booted ones under
	// "pool", started clones under "template" (0: clones start with
	// their pod).
	VMPoolSize int `toml:"vm_pool_size" json:"vm_pool_size,omitempty"`
	// KSM marks this handler's guest RAM mergeable and turns the host's
	// same-page merging on while crivm runs (internal/ksm).
	KSM bool `toml:"ksm" json:"ksm,omitempty"`
	// TCGCacheMiB bounds QEMU's TCG translation cache (tb-size) when VMs
	// run under TCG.
	TCGCacheMiB int `toml:"tcg_cache_mib" json:"tcg_cache_mib,omitempty"`
}

// NetworkConfig is [crivm.network].
type NetworkConfig struct {
	CNIPluginDirs []string `toml:"cni_plugin_dirs" json:"cni_plugin_dirs"`
	NetworkDir    string   `toml:"network_dir" json:"network_dir"`
}

// ImageConfig is [crivm.image].
type ImageConfig struct {
	PauseImage         string   `toml:"pause_image" json:"pause_image"`
	InsecureRegistries []string `toml:"insecure_registries" json:"insecure_registries"`
	// UnqualifiedSearchRegistries are tried in order for a short name such
	// as "busybox". Empty: Docker's rule, docker.io/library/busybox.
	UnqualifiedSearchRegistries []string `toml:"unqualified_search_registries" json:"unqualified_search_registries"`
	// RegistryMirrors maps a registry to the mirrors tried before it.
	RegistryMirrors map[string][]string `toml:"registry_mirrors" json:"registry_mirrors,omitempty"`
	// StorageDriver is "overlay" or "vfs".
	StorageDriver string `toml:"storage_driver" json:"storage_driver"`
}

// templateHandlers are the handler tables of DefaultTemplate, the one
// place where a handler's defaults are written: a table a drop-in adds
// under a new name is filled from the template's table of its type ("vm"
// for runtime_type = "vm", "runc" otherwise).
var templateHandlers = sync.OnceValue(func() map[string]*RuntimeHandler {
	var fc fileConfig
	if _, err := toml.Decode(DefaultTemplate, &fc); err != nil {
		panic(fmt.Sprintf("embedded default config does not parse: %v", err))
	}
	return fc.Crivm.Runtime.Runtimes
})

func (h *RuntimeHandler) fillDefaults() {
	d := templateHandlers()["runc"]
	if h.RuntimeType == RuntimeTypeVM {
		d = templateHandlers()["vm"]
	}
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	fill(&h.RuntimePath, d.RuntimePath)
	fill(&h.MonitorPath, d.MonitorPath)
	fill(&h.Hypervisor, d.Hypervisor)
	fill(&h.HypervisorPath, d.HypervisorPath)
	fill(&h.Accel, d.Accel)
	fill(&h.MachineType, d.MachineType)
	fill(&h.SharedFS, d.SharedFS)
	fill(&h.AgentTransport, d.AgentTransport)
	fill(&h.VirtioFSCache, d.VirtioFSCache)
	fill(&h.VMFactory, d.VMFactory)
	if h.DefaultVCPUs == 0 {
		h.DefaultVCPUs = d.DefaultVCPUs
	}
	if h.DefaultMemoryMiB == 0 {
		h.DefaultMemoryMiB = d.DefaultMemoryMiB
	}
	if h.TCGCacheMiB == 0 {
		h.TCGCacheMiB = d.TCGCacheMiB
	}
	if h.VMMUIDBase == 0 {
		h.VMMUIDBase = d.VMMUIDBase
	}
	if h.VMMUIDCount == 0 {
		h.VMMUIDCount = d.VMMUIDCount
	}
}

// HandlerNames returns the configured handler names, sorted.
func (c *Config) HandlerNames() []string {
	names := make([]string, 0, len(c.Runtime.Runtimes))
	for n := range c.Runtime.Runtimes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ResolveHandler maps a RuntimeClass handler name or one of its aliases to
// the configured name. The empty name resolves to default_runtime.
func (c *Config) ResolveHandler(name string) (string, *RuntimeHandler, bool) {
	if name == "" {
		name = c.Runtime.DefaultRuntime
	}
	if h, ok := c.Runtime.Runtimes[name]; ok {
		return name, h, true
	}
	for n, h := range c.Runtime.Runtimes {
		if slices.Contains(h.Aliases, name) {
			return n, h, true
		}
	}
	return "", nil, false
}

// SocketPath is listen without an optional unix:// scheme.
func (c *Config) SocketPath() string {
	return filepath.Clean(strings.TrimPrefix(c.Listen, "unix://"))
}

// StorageRoot and StorageRunroot hold containers/storage (images, layers,
// container rootfs).
func (c *Config) StorageRoot() string    { return filepath.Join(c.Root, "storage") }
func (c *Config) StorageRunroot() string { return filepath.Join(c.Runroot, "storage") }

// HandlerDir is a handler's state dir under runroot.
func (c *Config) HandlerDir(name string) string { return filepath.Join(c.Runroot, "handlers", name) }

// PodsDir holds each pod's resolv.conf, hosts, hostname and shm.
func (c *Config) PodsDir() string { return filepath.Join(c.Runroot, "pods") }

// StoreDir is where the sandbox/container store lives.
func (c *Config) StoreDir() string { return filepath.Join(c.Root, "store") }

// LockPath is the file whose flock keeps a second crivm off this root.
func (c *Config) LockPath() string { return filepath.Join(c.Root, "crivm.lock") }
