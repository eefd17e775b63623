package agentproxy

import (
	"path"
	"path/filepath"
	"slices"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crivm/crivm/internal/errdefs"
)

// The guest filesystem contract between the host (handlers/vm) and the
// agent; agentproxy/api/agent.proto describes it in full.
const (
	// SharedTag is the 9p tag of the sandbox's one shared directory.
	SharedTag = "crivm-shared"
	// GuestSharedDir is where CreateSandbox mounts SharedTag in the guest.
	GuestSharedDir = "/run/crivm/shared"
	// GuestPIDNamespace is the pod-shared PID namespace the agent holds
	// (for shareProcessNamespace pods).
	GuestPIDNamespace = "/run/crivm/sandbox/ns/pid"
	// GuestResolvConf, GuestHosts and GuestHostname are the files
	// CreateSandbox writes; containers may bind-mount them.
	GuestResolvConf = "/etc/resolv.conf"
	GuestHosts      = "/etc/hosts"
	GuestHostname   = "/etc/hostname"
	// GuestShm is the guest's /dev/shm tmpfs, which belongs to the pod's
	// IPC namespace (the guest's own).
	GuestShm = "/dev/shm"
	// GuestCgroupParent is the cgroup (v2, cgroupfs form) under which
	// GuestSpec places containers.
	GuestCgroupParent = "/crivm"
	// GuestModulesOrder is the initrd's list of the kernel modules the
	// agent loads, absolute paths one a line, dependencies first.
	GuestModulesOrder = "/modules.order"
)

// GuestRootfs is the guest path of container id's rootfs.
func GuestRootfs(id string) string { return path.Join(GuestSharedDir, id, "rootfs") }

// GuestMountSource is the guest path of the n-th bind mount's source of
// container id.
func GuestMountSource(id string, n int) string {
	return path.Join(GuestSharedDir, id, "mounts", strconv.Itoa(n))
}

// HostRootfs is GuestRootfs below the host's end of the share.
func HostRootfs(hostShared, id string) string { return filepath.Join(hostShared, id, "rootfs") }

// HostMountSource is where the host exposes the n-th bind mount's source.
func HostMountSource(hostShared, id string, n int) string {
	return filepath.Join(hostShared, id, "mounts", strconv.Itoa(n))
}

// GuestContainerPIDPrefix starts the spec path of the PID namespace of
// another container of the pod (pid mode TARGET): the agent replaces
// GuestContainerPIDPrefix + ID by /proc/<that container's init>/ns/pid,
// which only it knows.
const GuestContainerPIDPrefix = "/run/crivm/containers/pid-of/"

// GuestContainerPIDNamespace is the spec path of container id's PID
// namespace (see GuestContainerPIDPrefix).
func GuestContainerPIDNamespace(id string) string { return GuestContainerPIDPrefix + id }

// GuestNamespacePaths is oci.ContainerSpecInput.NamespacePaths for a VM
// pod (with SandboxPid 0): the pod's network, IPC and UTS namespaces are
// the guest's own, and a pod-shared PID namespace is the agent's holder.
// Namespaces the spec creates (a container's own PID namespace, the mount
// namespace) are not listed, so they stay new.
func GuestNamespacePaths(podSharesPID bool) map[specs.LinuxNamespaceType]string {
	m := map[specs.LinuxNamespaceType]string{
		specs.NetworkNamespace: "/proc/1/ns/net",
		specs.IPCNamespace:     "/proc/1/ns/ipc",
		specs.UTSNamespace:     "/proc/1/ns/uts",
	}
	if podSharesPID {
		m[specs.PIDNamespace] = GuestPIDNamespace
	}
	return m
}

// HostBind is one bind mount the host must expose in the share.
type HostBind struct {
	// HostPath is the mount's source on the host; the host bind-mounts it
	// at HostMountSource(shared, id, N) (or copies it there) before
	// CreateContainer.
	HostPath string
	N        int
	// GuestPath is what the spec's mount source now says.
	GuestPath string
}

// GuestSpecOptions configures GuestSpec.
type GuestSpecOptions struct {
	// Keep maps host bind sources to guest paths used as they are, not
	// shared: typically the pod's resolv.conf, hosts, hostname and shm
	// to GuestResolvConf, GuestHosts, GuestHostname and GuestShm.
	Keep map[string]string
}

// GuestSpec rewrites a host-generated container spec (oci.ContainerSpec
// with host paths) for the guest, in place: root.path becomes
// GuestRootfs(id); each bind mount's source becomes Keep's guest path or
// GuestMountSource(id, n), n counting the shared binds from 0; the cgroup
// path becomes GuestCgroupParent/<id> (the guest has no systemd and its own
// hierarchy); AppArmor and SELinux labels go (the guest loads no LSM
// policy; the VM is the boundary). It returns the binds the host must
// expose, in n order.
func GuestSpec(s *specs.Spec, id string, opts GuestSpecOptions) ([]HostBind, error) {
	if s == nil || s.Root == nil || s.Process == nil {
		return nil, errdefs.InvalidArgument("guest spec for %s: spec has no root or process", id)
	}
	s.Root.Path = GuestRootfs(id)
	var binds []HostBind
	for i := range s.Mounts {
		m := &s.Mounts[i]
		if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
			continue
		}
		if g, ok := opts.Keep[m.Source]; ok {
			m.Source = g
			continue
		}
		n := len(binds)
		b := HostBind{HostPath: m.Source, N: n, GuestPath: GuestMountSource(id, n)}
		binds = append(binds, b)
		m.Source = b.GuestPath
	}
	if s.Linux != nil {
		s.Linux.CgroupsPath = path.Join(GuestCgroupParent, id)
		s.Linux.MountLabel = ""
	}
	s.Process.ApparmorProfile = ""
	s.Process.SelinuxLabel = ""
	return binds, nil
}
