// Package oci turns CRI sandbox and container configs into OCI runtime specs.
//
// One generator serves both handlers: the runc handler writes the spec into a
// bundle for runc (under conmon); the vm handler sends the same spec to the
// guest agent, which applies it inside the VM. Specs follow CRI-O's defaults
// where a kubelet user would notice a difference (capabilities, mounts,
// masked paths, cgroup paths) and containerd's where CRI-O has none
// (annotations, the seccomp profile's shape).
//
// The generator reads the host only where a spec needs host facts: the
// image's /etc/passwd and /etc/group under the rootfs, Localhost seccomp
// profiles, device nodes named by CRI devices, and CRI mount sources (a
// missing source directory is created, as CRI-O and containerd do). All
// other host facts come in through Host.
package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	imgspec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/podhost"
)

// Host describes the daemon and the machine the spec is applied on. A daemon
// fills it once and passes it with every request.
type Host struct {
	// CgroupDriver is "cgroupfs" (the default when empty) or "systemd".
	CgroupDriver string
	// Cgroups describes the cgroup hierarchy the spec is applied under.
	Cgroups CgroupFeatures
	// DaemonOOMScoreAdj is the lowest oom_score_adj the runtime may set.
	// Use OOMScoreAdjFloor: without CAP_SYS_RESOURCE it is the daemon's own
	// value, with it -1000. The zero value clamps to 0.
	DaemonOOMScoreAdj int
	// HostHasAppArmor says whether AppArmor is enabled on the host.
	HostHasAppArmor bool
	// AppArmorDefault is the profile RuntimeDefault maps to when the host has
	// AppArmor. Empty means none is loaded: such containers run unconfined,
	// with a warning.
	AppArmorDefault string
	// SeccompProfileRoot is the directory relative Localhost seccomp profiles
	// are resolved against. The kubelet sends absolute paths.
	SeccompProfileRoot string
	// SeccompUseDefaultWhenEmpty gives a container that asks for no seccomp
	// profile the runtime default one; false leaves it unconfined, as the
	// CRI says (config key seccomp_use_default_when_empty).
	SeccompUseDefaultWhenEmpty bool
	// Capabilities are what a privileged container, or "ALL" in
	// add_capabilities, gets: the runtime's own bounding set
	// (RuntimeCapabilities), as containerd does, since runc cannot grant a
	// capability outside it. Nil means every capability Linux defines, for
	// a VM guest, whose agent holds them all.
	Capabilities []string
	// PidsLimit is the pids cgroup limit for containers; 0 means unlimited.
	PidsLimit int64
	// UserNamespaces says the runtime applying the spec runs pods in their
	// own user namespace (userns_options mode POD); without it such pods
	// are refused with Unimplemented. The caller makes the rootfs and bind
	// mount sources usable by the mapped ids (runc handler: idmapped mounts).
	UserNamespaces bool
	// Warnf reports settings the generator ignored. It may be nil.
	Warnf func(format string, args ...any)
}

func (h *Host) warnf(format string, args ...any) {
	if h.Warnf != nil {
		h.Warnf(format, args...)
	}
}

// SandboxSpecInput is everything SandboxSpec needs for a pod's infra (pause)
// container.
type SandboxSpecInput struct {
	Host
	ID     string
	Config *runtimeapi.PodSandboxConfig
	// Image is the pause image's config; nil runs /pause.
	Image *imgspec.ImageConfig
	// ImageName is the pause image reference, recorded in an annotation.
	ImageName  string
	RootfsPath string
	// NetNSPath is the pod's network namespace. With host networking it is
	// ignored; when empty otherwise, the sandbox gets a new, empty one. It
	// must be empty for a pod with its own user namespace, which owns the
	// network namespace the sandbox creates.
	NetNSPath string
	// CgroupParent overrides Config.Linux.CgroupParent when set.
	CgroupParent string
	// Hostname overrides Config.Hostname when set.
	Hostname string
	// ResolvConfPath, HostsPath and HostnamePath are bind-mounted over the
	// image's files when set. ShmPath is bind-mounted at /dev/shm; when empty
	// the sandbox gets its own 64 MiB tmpfs (the host's /dev/shm with host IPC).
	ResolvConfPath, HostsPath, HostnamePath, ShmPath string
	// OOMScoreAdj is the infra process's oom_score_adj (CRI-O and containerd
	// use -998), clamped to DaemonOOMScoreAdj.
	OOMScoreAdj int
}

// ContainerSpecInput is everything ContainerSpec needs for one container.
type ContainerSpecInput struct {
	Host
	ID        string
	SandboxID string
	Sandbox   *runtimeapi.PodSandboxConfig
	Config    *runtimeapi.ContainerConfig
	// Image is the container image's config; nil means none (the CRI config
	// must then name the command).
	Image      *imgspec.ImageConfig
	RootfsPath string
	// SandboxPid is the infra process; the container joins the pod's
	// namespaces through /proc/SandboxPid/ns/*. The vm handler, and the runc
	// handler for a pod without an infra container (its network, IPC and UTS
	// namespaces pinned), pass 0 and name the namespaces in NamespacePaths
	// instead.
	SandboxPid int
	// NamespacePaths replaces the path of any namespace the spec joins or
	// creates; a TARGET pid namespace must be named here.
	NamespacePaths map[specs.LinuxNamespaceType]string
	// CgroupParent overrides Sandbox.Linux.CgroupParent when set.
	CgroupParent string
	// As in SandboxSpecInput. ShmPath should be the sandbox's, so the pod's
	// containers share /dev/shm with their IPC namespace.
	ResolvConfPath, HostsPath, HostnamePath, ShmPath string
	// ResolvedSources maps each CRI mount's host_path to the path the mount
	// policy resolved and checked (untrusted pods). When non-nil, sources
	// are taken from it: none is created or resolved again.
	ResolvedSources map[string]string
	// ImageVolumes maps the index of each image mount in Config.Mounts to
	// its source: the image mount the caller made (read-only, crivm's own
	// storage), or the image_sub_path inside it.
	ImageVolumes map[int]string
}

// Annotation keys, as containerd's CRI plugin sets them (Kata and other
// runtimes read these).
const (
	AnnotationContainerType     = "io.kubernetes.cri.container-type"
	AnnotationSandboxID         = "io.kubernetes.cri.sandbox-id"
	AnnotationSandboxName       = "io.kubernetes.cri.sandbox-name"
	AnnotationSandboxNamespace  = "io.kubernetes.cri.sandbox-namespace"
	AnnotationSandboxUID        = "io.kubernetes.cri.sandbox-uid"
	AnnotationSandboxLogDir     = "io.kubernetes.cri.sandbox-log-directory"
	AnnotationSandboxImageName  = "io.kubernetes.cri.podsandbox.image-name"
	AnnotationContainerName     = "io.kubernetes.cri.container-name"
	AnnotationImageName         = "io.kubernetes.cri.image-name"
	ContainerTypeSandbox        = "sandbox"
	ContainerTypeContainer      = "container"
	defaultCgroupParentCgroupfs = "/crivm"
)

// SandboxSpec returns the spec of a pod's infra container. The infra process
// holds the pod's namespaces and does nothing else, so unless the pod is
// privileged it gets no capabilities, no new privileges and a read-only root.
func SandboxSpec(in SandboxSpecInput) (*specs.Spec, error) {
	if in.ID == "" || in.Config == nil {
		return nil, errdefs.InvalidArgument("sandbox spec needs an ID and a config")
	}
	lc := in.Config.GetLinux()
	sc := lc.GetSecurityContext()
	nsOpts := sc.GetNamespaceOptions()
	privileged := sc.GetPrivileged()
	hostNet := nsOpts.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostIPC := nsOpts.GetIpc() == runtimeapi.NamespaceMode_NODE

	args := processArgsSandbox(in.Image)
	user, err := resolveProcessUser(in.RootfsPath, userRequest{
		runAsUser:    sc.GetRunAsUser(),
		runAsGroup:   sc.GetRunAsGroup(),
		supplemental: sc.GetSupplementalGroups(),
		strict:       sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Strict,
		imageUser:    imageConfig(in.Image).User,
	})
	if err != nil {
		return nil, err
	}
	cwd, err := workingDir("", in.Image)
	if err != nil {
		return nil, err
	}
	caps := &specs.LinuxCapabilities{}
	if privileged {
		caps = privilegedCapabilities(in.Capabilities)
	}
	adj := clampOOMScoreAdj(in.OOMScoreAdj, in.DaemonOOMScoreAdj)

	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User:            user,
			Args:            args,
			Env:             mergeEnv(imageConfig(in.Image).Env),
			Cwd:             cwd,
			Capabilities:    caps,
			NoNewPrivileges: true,
			OOMScoreAdj:     &adj,
		},
		Root: &specs.Root{Path: in.RootfsPath, Readonly: true},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{
				Devices: deviceRules(privileged, nil),
				// Like containerd: the infra process needs next to no CPU.
				CPU: &specs.LinuxCPU{Shares: ptr(uint64(2))},
			},
		},
	}

	hostname := in.Hostname
	if hostname == "" {
		hostname = podhost.Hostname(in.Config)
	}
	// With host networking the sandbox stays in the host's UTS namespace, so
	// it may not set a hostname.
	if !hostNet {
		s.Hostname = hostname
	}

	userns, err := podUserns(nsOpts, in.UserNamespaces)
	if err != nil {
		return nil, err
	}
	if s.Linux.Namespaces, err = sandboxNamespaces(nsOpts, in.NetNSPath, in.Cgroups, userns); err != nil {
		return nil, err
	}
	if userns != nil {
		s.Linux.UIDMappings, s.Linux.GIDMappings = userns.UIDs, userns.GIDs
	}
	if s.Linux.CgroupsPath, err = cgroupsPath(firstNonEmpty(in.CgroupParent, lc.GetCgroupParent()), in.CgroupDriver, in.ID); err != nil {
		return nil, err
	}
	if s.Linux.Sysctl, err = sysctls(lc.GetSysctls(), hostNet, hostIPC); err != nil {
		return nil, err
	}

	shm := in.ShmPath
	if shm == "" && hostIPC {
		shm = "/dev/shm"
	}
	mounts := defaultMounts(shm, privileged)
	mounts = append(mounts, etcMounts(in.ResolvConfPath, in.HostsPath, in.HostnamePath, false)...)
	s.Mounts = sortMounts(mounts)

	if !privileged {
		s.Linux.MaskedPaths = slices.Clone(defaultMaskedPaths)
		s.Linux.ReadonlyPaths = slices.Clone(defaultReadonlyPaths)
	}
	if s.Process.ApparmorProfile, err = apparmorProfile(&in.Host, sc.GetApparmor(), "", privileged); err != nil {
		return nil, err
	}
	if s.Linux.Seccomp, err = seccompProfile(&in.Host, sc.GetSeccomp(), sc.GetSeccompProfilePath(), privileged, caps.Bounding); err != nil {
		return nil, err
	}

	s.Annotations = copyMap(in.Config.GetAnnotations())
	md := in.Config.GetMetadata()
	setAnnotations(s.Annotations, map[string]string{
		AnnotationContainerType:    ContainerTypeSandbox,
		AnnotationSandboxID:        in.ID,
		AnnotationSandboxName:      md.GetName(),
		AnnotationSandboxNamespace: md.GetNamespace(),
		AnnotationSandboxUID:       md.GetUid(),
		AnnotationSandboxLogDir:    in.Config.GetLogDirectory(),
		AnnotationSandboxImageName: in.ImageName,
	})
	return s, nil
}

// ContainerSpec returns the spec of one container of a pod.
func ContainerSpec(in ContainerSpecInput) (*specs.Spec, error) {
	if in.ID == "" || in.Config == nil || in.Sandbox == nil {
		return nil, errdefs.InvalidArgument("container spec needs an ID, a container config and a sandbox config")
	}
	cfg := in.Config
	sc := cfg.GetLinux().GetSecurityContext()
	podSC := in.Sandbox.GetLinux().GetSecurityContext()
	podNS := podSC.GetNamespaceOptions()
	if podNS == nil {
		podNS = sc.GetNamespaceOptions()
	}
	privileged := sc.GetPrivileged()
	if privileged && !podSC.GetPrivileged() {
		return nil, errdefs.InvalidArgument("privileged container %q in a sandbox that is not privileged", cfg.GetMetadata().GetName())
	}
	hostNet := podNS.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostIPC := podNS.GetIpc() == runtimeapi.NamespaceMode_NODE
	img := imageConfig(in.Image)

	args, err := processArgs(cfg.GetCommand(), cfg.GetArgs(), in.Image)
	if err != nil {
		return nil, err
	}
	cwd, err := workingDir(cfg.GetWorkingDir(), in.Image)
	if err != nil {
		return nil, err
	}
	user, err := resolveProcessUser(in.RootfsPath, userRequest{
		runAsUser:     sc.GetRunAsUser(),
		runAsGroup:    sc.GetRunAsGroup(),
		runAsUsername: sc.GetRunAsUsername(),
		supplemental:  sc.GetSupplementalGroups(),
		strict:        sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Strict,
		imageUser:     img.User,
	})
	if err != nil {
		return nil, err
	}
	var caps *specs.LinuxCapabilities
	if privileged {
		caps = privilegedCapabilities(in.Capabilities)
	} else if caps, err = capabilities(sc.GetCapabilities(), in.Capabilities); err != nil {
		return nil, err
	}

	var ctrEnv []string
	if h := podhost.Hostname(in.Sandbox); h != "" {
		ctrEnv = append(ctrEnv, "HOSTNAME="+h)
	}
	if cfg.GetTty() {
		ctrEnv = append(ctrEnv, "TERM=xterm")
	}
	for _, kv := range cfg.GetEnvs() {
		ctrEnv = append(ctrEnv, kv.GetKey()+"="+string(kv.GetValue()))
	}

	readonly := sc.GetReadonlyRootfs()
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal:        cfg.GetTty(),
			User:            user,
			Args:            args,
			Env:             mergeEnv(img.Env, ctrEnv),
			Cwd:             cwd,
			Capabilities:    caps,
			NoNewPrivileges: sc.GetNoNewPrivs(),
		},
		Root:  &specs.Root{Path: in.RootfsPath, Readonly: readonly},
		Linux: &specs.Linux{},
	}
	if sc.GetNoNewPrivs() && privileged {
		in.warnf("container %q: no_new_privs has no effect on a privileged container", cfg.GetMetadata().GetName())
	}

	res := cfg.GetLinux().GetResources()
	if s.Linux.Resources, err = linuxResources(res, &in.Host); err != nil {
		return nil, err
	}
	if res != nil {
		if res.GetOomScoreAdj() < -1000 || res.GetOomScoreAdj() > 1000 {
			return nil, errdefs.InvalidArgument("oom_score_adj %d is outside [-1000, 1000]", res.GetOomScoreAdj())
		}
		adj := clampOOMScoreAdj(int(res.GetOomScoreAdj()), in.DaemonOOMScoreAdj)
		s.Process.OOMScoreAdj = &adj
	}

	userns, err := podUserns(podNS, in.UserNamespaces)
	if err != nil {
		return nil, err
	}
	if s.Linux.Namespaces, err = containerNamespaces(podNS, sc.GetNamespaceOptions(), in.SandboxPid, in.NamespacePaths, in.Cgroups, userns); err != nil {
		return nil, err
	}
	if userns != nil {
		// runc needs the mappings of the user namespace it joins.
		s.Linux.UIDMappings, s.Linux.GIDMappings = userns.UIDs, userns.GIDs
	}
	if s.Linux.CgroupsPath, err = cgroupsPath(firstNonEmpty(in.CgroupParent, in.Sandbox.GetLinux().GetCgroupParent()), in.CgroupDriver, in.ID); err != nil {
		return nil, err
	}
	if s.Linux.Sysctl, err = sysctls(in.Sandbox.GetLinux().GetSysctls(), hostNet, hostIPC); err != nil {
		return nil, err
	}

	devs, devRules, err := criDevices(cfg.GetDevices())
	if err != nil {
		return nil, err
	}
	s.Linux.Devices = devs
	s.Linux.Resources.Devices = deviceRules(privileged, devRules)

	shm := in.ShmPath
	if shm == "" && hostIPC {
		shm = "/dev/shm"
	}
	mounts := defaultMounts(shm, privileged)
	mounts = append(mounts, etcMounts(in.ResolvConfPath, in.HostsPath, in.HostnamePath, readonly)...)
	user2, propagation, err := criMounts(cfg.GetMounts(), privileged, in.ResolvedSources, in.ImageVolumes)
	if err != nil {
		return nil, err
	}
	s.Mounts = mergeMounts(mounts, user2)
	s.Linux.RootfsPropagation = propagation

	if !privileged {
		s.Linux.MaskedPaths = pathsOrDefault(sc.GetMaskedPaths(), defaultMaskedPaths)
		s.Linux.ReadonlyPaths = pathsOrDefault(sc.GetReadonlyPaths(), defaultReadonlyPaths)
	}
	if s.Process.ApparmorProfile, err = apparmorProfile(&in.Host, sc.GetApparmor(), sc.GetApparmorProfile(), privileged); err != nil {
		return nil, err
	}
	if s.Linux.Seccomp, err = seccompProfile(&in.Host, sc.GetSeccomp(), sc.GetSeccompProfilePath(), privileged, caps.Bounding); err != nil {
		return nil, err
	}

	s.Annotations = copyMap(cfg.GetAnnotations())
	md := in.Sandbox.GetMetadata()
	setAnnotations(s.Annotations, map[string]string{
		AnnotationContainerType:    ContainerTypeContainer,
		AnnotationSandboxID:        in.SandboxID,
		AnnotationSandboxName:      md.GetName(),
		AnnotationSandboxNamespace: md.GetNamespace(),
		AnnotationSandboxUID:       md.GetUid(),
		AnnotationContainerName:    cfg.GetMetadata().GetName(),
		AnnotationImageName:        firstNonEmpty(cfg.GetImage().GetUserSpecifiedImage(), cfg.GetImage().GetImage()),
	})
	return s, nil
}

// WriteSpec writes s to bundleDir/config.json atomically: readers see the
// old file or the complete new one. The file is mode 0600 because the
// process environment may carry secrets.
func WriteSpec(bundleDir string, s *specs.Spec) error {
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encoding spec: %w", err)
	}
	f, err := os.CreateTemp(bundleDir, ".config.json-")
	if err != nil {
		return fmt.Errorf("writing spec: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(bundleDir, "config.json"))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing spec: %w", err)
	}
	return nil
}

func imageConfig(c *imgspec.ImageConfig) *imgspec.ImageConfig {
	if c == nil {
		return &imgspec.ImageConfig{}
	}
	return c
}

// setAnnotations sets the non-empty values of kv in m.
func setAnnotations(m, kv map[string]string) {
	for k, v := range kv {
		if v != "" {
			m[k] = v
		}
	}
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+8)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }
