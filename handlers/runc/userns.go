package runc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"go.podman.io/storage/pkg/idmap"
	"go.podman.io/storage/pkg/idtools"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/log"
)

// Pods with their own user namespace (userns_options POD) on an OCI runtime
// that cannot idmap mounts itself, such as Debian 12's runc 1.1.5 (runc
// 1.2 reads mount uidMappings; 1.1 ignores them without a word).
//
// The container's root is an unprivileged host uid, so what it reaches
// must be owned by the mapped ids, and runc 1.1 resolves root.path and
// every bind source as that uid, inside the user namespace:
//   - the rootfs: containers/storage mounts it with the pod's mappings
//     (idmapped image layers, the writable layer owned by the mapped root;
//     the server asks for it), and image volumes likewise;
//   - bind sources (volumes, /etc/hosts, /etc/resolv.conf, the hostname,
//     /dev/shm): the handler clones each as an idmapped mount in the
//     sandbox's user namespace, so the container's root owns what the
//     host's root owns (and what it writes is host root's on disk), as
//     runc 1.2 and containerd do;
//   - both are staged below stagingRoot, in a directory of the container's
//     root (0700) below directories every uid may search. The bind sources are detached once `runc create` has
//     returned (the container's mount namespace keeps its own copies); the
//     rootfs stays until the container is removed, since runc starts every
//     exec in root.path.
// The sandbox creates the user namespace, and a network namespace owned by
// it (so that sysfs is mounted and network sysctls set in it); its own bind
// sources (the pod's files, world-readable) are not idmapped: the user
// namespace does not exist before it runs.

// usernsProbe caches whether this handler can run user namespaces.
type usernsProbe struct {
	once   sync.Once
	ok     bool
	reason string
}

// usernsSupported probes once: the runtime lists the user namespace in its
// features, and the kernel idmaps a mount in the staging directory.
func (h *Handler) usernsSupported() bool {
	h.userns.once.Do(func() {
		h.userns.reason = h.probeUserns()
		h.userns.ok = h.userns.reason == ""
	})
	return h.userns.ok
}

// usernsUnsupportedReason is why user namespaces are off ("" when on).
func (h *Handler) usernsUnsupportedReason() string {
	h.usernsSupported()
	return h.userns.reason
}

func (h *Handler) probeUserns() string {
	f, err := h.features()
	if err != nil {
		return err.Error()
	}
	if !f.hasUserns() {
		return fmt.Sprintf("%s does not list the user namespace in its features", h.rt.path)
	}
	if err := h.ensureStagingRoot(); err != nil {
		return err.Error()
	}
	if err := probeIDMap(h.stagingRoot()); err != nil {
		return fmt.Sprintf("idmapped mounts: %v", err)
	}
	return ""
}

// probeIDMap clones a directory below dir as an idmapped mount in a
// throwaway user namespace.
func probeIDMap(dir string) error {
	src, err := os.MkdirTemp(dir, "probe-")
	if err != nil {
		return err
	}
	defer os.Remove(src)
	m := []idtools.IDMap{{ContainerID: 0, HostID: 65536, Size: 65536}}
	pid, cleanup, err := idmap.CreateUsernsProcess(m, m)
	if err != nil {
		return fmt.Errorf("creating a user namespace: %w", err)
	}
	defer cleanup()
	ns, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/user")
	if err != nil {
		return err
	}
	defer ns.Close()
	dst := src + ".mapped"
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	defer os.Remove(dst)
	idmapped, err := cloneMount(src, dst, ns, false)
	if err == nil {
		defer unix.Unmount(dst, unix.MNT_DETACH)
		if !idmapped {
			err = errors.New("the kernel or the filesystem refuses idmapped mounts")
		}
	}
	return err
}

// stagingRoot holds each container's staged rootfs and bind sources.
func (h *Handler) stagingRoot() string      { return filepath.Join(h.dir, "userns") }
func (h *Handler) staging(id string) string { return filepath.Join(h.stagingRoot(), id) }

// ensureStagingRoot creates the staging root and makes it, the handler's
// directory and its parent searchable by any uid (0711: no listing); every
// directory above must be searchable already (the runroot is 0711).
func (h *Handler) ensureStagingRoot() error {
	root := h.stagingRoot()
	if err := os.MkdirAll(root, 0o711); err != nil {
		return err
	}
	for _, d := range []string{root, h.dir, filepath.Dir(h.dir)} {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	for d := filepath.Dir(filepath.Dir(h.dir)); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by other users: a user namespace's root could not reach its rootfs below it", d)
		}
		if d == "/" {
			return nil
		}
	}
}

// stageUserns stages spec's rootfs and, when usernsPath (the sandbox's user
// namespace) is set, an idmapped clone of each bind source, and points spec
// at them. Sources on a filesystem that cannot be idmapped are staged as
// plain clones: the container sees their files as owned by nobody. The
// sources in mapped (image volumes, which containers/storage mounts with the
// pod's mappings, as the rootfs) are owned by the mapped ids already and are
// staged as plain clones. On failure it leaves nothing staged.
func (h *Handler) stageUserns(ctx context.Context, id string, spec *specs.Spec, usernsPath string, mapped map[string]bool) (err error) {
	if err := h.ensureStagingRoot(); err != nil {
		return err
	}
	dir := h.staging(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("creating the staging directory: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, h.unstageUserns(id, false))
		}
	}()
	// Only the container's root (and the host's) may enter it: other host
	// users cannot reach the rootfs through it.
	uid, gid, err := hostRoot(spec)
	if err != nil {
		return err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	rootfs := filepath.Join(dir, stagedRootfs)
	if err := os.Mkdir(rootfs, 0o711); err != nil {
		return err
	}
	if _, err := cloneMount(spec.Root.Path, rootfs, nil, true); err != nil {
		return fmt.Errorf("staging the rootfs: %w", err)
	}
	spec.Root.Path = rootfs
	if usernsPath == "" {
		return nil
	}
	ns, err := os.Open(usernsPath)
	if err != nil {
		return fmt.Errorf("opening the sandbox's user namespace: %w", err)
	}
	defer ns.Close()
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		if !isBind(m) {
			continue
		}
		fi, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("bind source %s: %w", m.Source, err)
		}
		dst := filepath.Join(dir, strconv.Itoa(i))
		if fi.IsDir() {
			err = os.Mkdir(dst, 0o711)
		} else {
			err = os.WriteFile(dst, nil, 0o644)
		}
		if err != nil {
			return err
		}
		userns := ns
		if mapped[m.Source] {
			userns = nil
		}
		idmapped, err := cloneMount(m.Source, dst, userns, slices.Contains(m.Options, "rbind"))
		if err != nil {
			return fmt.Errorf("staging bind source %s for %s: %w", m.Source, m.Destination, err)
		}
		if !idmapped && userns != nil {
			log.G(ctx).Warn("bind source cannot be idmapped: the container sees its files as owned by nobody", "source", m.Source, "destination", m.Destination)
		}
		m.Source = dst
	}
	return nil
}

// stagedRootfs is the staged rootfs's name in the staging directory.
const stagedRootfs = "rootfs"

// hostRoot is the host uid and gid the spec's user namespace maps root to.
func hostRoot(spec *specs.Spec) (uid, gid int, err error) {
	find := func(ms []specs.LinuxIDMapping) (int, bool) {
		for _, m := range ms {
			if m.ContainerID == 0 && m.Size > 0 {
				return int(m.HostID), true
			}
		}
		return 0, false
	}
	var ok1, ok2 bool
	uid, ok1 = find(spec.Linux.UIDMappings)
	gid, ok2 = find(spec.Linux.GIDMappings)
	if !ok1 || !ok2 {
		return 0, 0, errors.New("the spec's user namespace does not map root")
	}
	return uid, gid, nil
}

// unstageUserns detaches and removes what stageUserns staged for id; with
// keepRootfs, all but the rootfs. It never removes anything recursively:
// an entry still mounted after the detach is left, with an error.
func (h *Handler) unstageUserns(id string, keepRootfs bool) error {
	dir := h.staging(id)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if keepRootfs && e.Name() == stagedRootfs {
			continue
		}
		p := filepath.Join(dir, e.Name())
		for range 8 {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
				}
				break
			}
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if keepRootfs {
		return errors.Join(errs...)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// isBind reports whether m binds a host path.
func isBind(m *specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// cloneMount attaches a clone of the mount tree at src (with its submounts
// when recursive) at dst. With userns, the clone is idmapped into it; when
// the filesystem refuses that, the clone stays plain and idmapped is false.
func cloneMount(src, dst string, userns *os.File, recursive bool) (idmapped bool, err error) {
	flags := unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, uint(flags))
	if err != nil {
		return false, &os.PathError{Op: "open_tree", Path: src, Err: err}
	}
	defer unix.Close(fd)
	if userns != nil {
		attrFlags := unix.AT_EMPTY_PATH
		if recursive {
			attrFlags |= unix.AT_RECURSIVE
		}
		err := unix.MountSetattr(fd, "", uint(attrFlags), &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())})
		switch {
		case err == nil:
			idmapped = true
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EPERM), errors.Is(err, unix.EOPNOTSUPP):
			// Not idmappable (procfs, sysfs, some network filesystems).
		default:
			return false, &os.PathError{Op: "mount_setattr", Path: src, Err: err}
		}
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return false, &os.PathError{Op: "move_mount", Path: dst, Err: err}
	}
	return idmapped, nil
}
