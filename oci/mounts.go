package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// defaultMounts are the kernel filesystems every container gets, as in
// runc's and CRI-O's default spec. /dev/shm is a bind of shmPath when set,
// else a private 64 MiB tmpfs. A privileged container gets /sys and
// /sys/fs/cgroup read-write.
func defaultMounts(shmPath string, privileged bool) []specs.Mount {
	sysMode := "ro"
	if privileged {
		sysMode = "rw"
	}
	ms := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", sysMode}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", sysMode}},
	}
	if shmPath != "" {
		ms = append(ms, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: shmPath, Options: []string{"rbind", "nosuid", "noexec", "nodev", "rw"}})
	} else {
		ms = append(ms, specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}})
	}
	return ms
}

// etcMounts bind-mounts the pod's resolv.conf, hosts and hostname files
// where given: read-write like CRI-O, read-only with a read-only rootfs.
func etcMounts(resolvConf, hosts, hostname string, readonly bool) []specs.Mount {
	mode := "rw"
	if readonly {
		mode = "ro"
	}
	var ms []specs.Mount
	for _, f := range []struct{ src, dst string }{
		{resolvConf, "/etc/resolv.conf"},
		{hosts, "/etc/hosts"},
		{hostname, "/etc/hostname"},
	} {
		if f.src != "" {
			ms = append(ms, specs.Mount{Destination: f.dst, Type: "bind", Source: f.src, Options: []string{"bind", "nosuid", "noexec", "nodev", mode}})
		}
	}
	return ms
}

// allowedMountOptions are the CRI mount_options accepted: they only take
// rights away from a bind mount.
var allowedMountOptions = []string{"nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime", "strictatime", "ro"}

// CheckMountOptions refuses a CRI mount option that is not one of
// allowedMountOptions.
func CheckMountOptions(m *runtimeapi.Mount) error {
	for _, o := range m.GetMountOptions() {
		if !slices.Contains(allowedMountOptions, o) {
			return errdefs.InvalidArgument("mount at %q: mount option %q is not allowed", m.GetContainerPath(), o)
		}
	}
	return nil
}

// criMounts converts the CRI mounts into bind mounts and returns the rootfs
// propagation they need: "rshared" when any mount is BIDIRECTIONAL, else
// "rslave" when any is HOST_TO_CONTAINER, else "" (runc's default).
// A missing host path is created as a directory and symlinks in it are
// resolved, as CRI-O and containerd do; selinux_relabel is ignored. With
// resolved non-nil (an untrusted pod, whose sources the mount policy has
// already resolved and checked), each source is taken from it instead and
// nothing is created or resolved on the host. An image volume's source is
// imageVolumes[i], i the mount's index (see imageVolumeMount).
func criMounts(ms []*runtimeapi.Mount, privileged bool, resolved map[string]string, imageVolumes map[int]string) ([]specs.Mount, string, error) {
	var out []specs.Mount
	propagation := ""
	for i, m := range ms {
		dst := m.GetContainerPath()
		if !path.IsAbs(dst) || path.Clean(dst) == "/" {
			return nil, "", errdefs.InvalidArgument("mount destination %q is not an absolute path below /", dst)
		}
		if len(m.GetUidMappings()) > 0 || len(m.GetGidMappings()) > 0 {
			return nil, "", errdefs.Unimplemented("mount at %q: idmapped mounts are not supported", dst)
		}
		var src string
		var opts []string
		var err error
		if m.GetImage() != nil {
			src, opts, err = imageVolumeMount(dst, imageVolumes[i])
		} else {
			var needs string
			src, opts, needs, err = hostPathMount(m, privileged, resolved)
			if needs == "rshared" || (needs == "rslave" && propagation == "") {
				propagation = needs
			}
		}
		if err != nil {
			return nil, "", err
		}
		if err := CheckMountOptions(m); err != nil {
			return nil, "", err
		}
		for _, o := range m.GetMountOptions() {
			if !slices.Contains(opts, o) {
				opts = append(opts, o)
			}
		}
		out = append(out, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts})
	}
	return out, propagation, nil
}

// imageVolumeMount is the source and options of the image volume at dst,
// whose source src the server mounted ("" when it did not). It is bound
// read-only, private, nosuid and nodev, executable, whatever the request's
// propagation: nothing is ever mounted below crivm's read-only mount of an
// image, so there is nothing to propagate (CRI-O, too, mounts image volumes
// without propagation), and nothing the container mounts there may reach
// crivm's storage. It has no submounts, so read-only is recursive.
func imageVolumeMount(dst, src string) (string, []string, error) {
	if src == "" {
		return "", nil, errdefs.FailedPrecondition("image volume at %q was not mounted", dst)
	}
	return src, []string{"rbind", "rprivate", "ro", "nosuid", "nodev"}, nil
}

// hostPathMount is the source and options of the hostPath mount m, and the
// rootfs propagation it needs ("rshared", "rslave" or "").
func hostPathMount(m *runtimeapi.Mount, privileged bool, resolved map[string]string) (src string, opts []string, needs string, err error) {
	dst := m.GetContainerPath()
	if src, err = mountSource(m.GetHostPath(), resolved); err != nil {
		return "", nil, "", err
	}
	opts = []string{"rbind"}
	switch m.GetPropagation() {
	case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
		opts = append(opts, "rprivate")
	case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		opts = append(opts, "rslave")
		needs = "rslave"
	case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		if !privileged {
			return "", nil, "", errdefs.InvalidArgument("mount at %q: bidirectional propagation needs a privileged container", dst)
		}
		opts = append(opts, "rshared")
		needs = "rshared"
	default:
		return "", nil, "", errdefs.InvalidArgument("mount at %q: unknown propagation %v", dst, m.GetPropagation())
	}
	if err := checkPropagation(src, m.GetPropagation()); err != nil {
		return "", nil, "", err
	}
	switch {
	case m.GetRecursiveReadOnly() && !m.GetReadonly():
		return "", nil, "", errdefs.InvalidArgument("mount at %q: recursive read-only needs readonly", dst)
	case m.GetRecursiveReadOnly() && m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
		return "", nil, "", errdefs.InvalidArgument("mount at %q: recursive read-only needs private propagation", dst)
	case m.GetRecursiveReadOnly():
		opts = append(opts, "rro")
	case m.GetReadonly():
		opts = append(opts, "ro")
	default:
		opts = append(opts, "rw")
	}
	return src, opts, needs, nil
}

// mountSource resolves a CRI mount's host path, creating it as a directory
// when missing; with resolved non-nil it only looks the path up there.
func mountSource(hostPath string, resolved map[string]string) (string, error) {
	if !filepath.IsAbs(hostPath) {
		return "", errdefs.InvalidArgument("mount source %q is not an absolute path", hostPath)
	}
	if resolved != nil {
		src, ok := resolved[hostPath]
		if !ok {
			return "", errdefs.FailedPrecondition("mount source %q was not checked by the mount policy", hostPath)
		}
		return src, nil
	}
	if _, err := os.Stat(hostPath); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(hostPath, 0o755); err != nil {
			return "", fmt.Errorf("creating mount source: %w", err)
		}
	} else if err != nil {
		return "", fmt.Errorf("checking mount source: %w", err)
	}
	src, err := filepath.EvalSymlinks(hostPath)
	if err != nil {
		return "", fmt.Errorf("resolving mount source: %w", err)
	}
	return src, nil
}

// mergeMounts returns the default mounts minus those a CRI mount replaces
// (same destination, or anything under /dev when a CRI mount is /dev),
// followed by the CRI mounts, sorted so parents precede children.
func mergeMounts(defaults, cri []specs.Mount) []specs.Mount {
	dsts := map[string]bool{}
	for _, m := range cri {
		dsts[path.Clean(m.Destination)] = true
	}
	var out []specs.Mount
	for _, m := range defaults {
		d := path.Clean(m.Destination)
		if dsts[d] || (dsts["/dev"] && strings.HasPrefix(d, "/dev/")) {
			continue
		}
		out = append(out, m)
	}
	return sortMounts(append(out, cri...))
}

// sortMounts orders mounts by the depth of their destination, keeping the
// given order among equal depths, so that a mount never hides one made on
// a path below it.
func sortMounts(ms []specs.Mount) []specs.Mount {
	sort.SliceStable(ms, func(i, j int) bool { return mountDepth(ms[i]) < mountDepth(ms[j]) })
	return ms
}

func mountDepth(m specs.Mount) int {
	d := path.Clean(m.Destination)
	if d == "/" {
		return 0
	}
	return strings.Count(d, "/")
}
