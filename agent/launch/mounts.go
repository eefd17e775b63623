package launch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountFlags maps OCI mount options to flags; clear says the option
// removes the flag.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"async": {true, unix.MS_SYNCHRONOUS}, "atime": {true, unix.MS_NOATIME},
	"bind": {false, unix.MS_BIND}, "defaults": {false, 0},
	"dev": {true, unix.MS_NODEV}, "diratime": {true, unix.MS_NODIRATIME},
	"dirsync": {false, unix.MS_DIRSYNC}, "exec": {true, unix.MS_NOEXEC},
	"mand": {false, unix.MS_MANDLOCK}, "noatime": {false, unix.MS_NOATIME},
	"nodev": {false, unix.MS_NODEV}, "nodiratime": {false, unix.MS_NODIRATIME},
	"noexec": {false, unix.MS_NOEXEC}, "nomand": {true, unix.MS_MANDLOCK},
	"norelatime": {true, unix.MS_RELATIME}, "nostrictatime": {true, unix.MS_STRICTATIME},
	"nosuid": {false, unix.MS_NOSUID}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"relatime": {false, unix.MS_RELATIME}, "remount": {false, unix.MS_REMOUNT},
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	// rro: read-only, in every submount too (applied after the mount).
	"rro":         {false, unix.MS_RDONLY},
	"strictatime": {false, unix.MS_STRICTATIME}, "suid": {true, unix.MS_NOSUID},
	"sync": {false, unix.MS_SYNCHRONOUS},
}

// propagationFlags are the propagation options; they apply after the
// mount, as a separate mount(2) call each.
var propagationFlags = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// parseMountOptions splits options into flags, propagation flags and the
// data string for the filesystem.
func parseMountOptions(opts []string) (flags uintptr, prop []uintptr, data string) {
	var d []string
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if p, ok := propagationFlags[o]; ok {
			prop = append(prop, p)
			continue
		}
		d = append(d, o)
	}
	return flags, prop, strings.Join(d, ",")
}

// rootfsDir is the container's rootfs while it is set up: its path, and
// an O_PATH fd of the bind mount of it that becomes the container's root.
// Everything below it is created and mounted through fds resolved beneath
// fd, never by a path string, so that a symlink swapped into the tree
// (say by another container sharing a volume) cannot lead out of it.
type rootfsDir struct {
	path string
	fd   int
}

// inRoot resolves path inside the rootfs as if it were "/", symlinks
// included (a dangling one names the path it would lead to), and returns
// it relative to the rootfs ("." for the rootfs itself).
func (r rootfsDir) inRoot(path string) (string, error) {
	full, err := securejoin.SecureJoin(r.path, path)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", path, err)
	}
	return filepath.Rel(r.path, full)
}

// openInRoot opens rel below the rootfs with O_PATH, resolving symlinks
// (the final one too) and ".." as if the rootfs were "/" and refusing
// magic links: whatever rel's components are by now, the fd is inside the
// rootfs.
func (r rootfsDir) openInRoot(rel string) (int, error) {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	for {
		// EAGAIN: a rename raced with the ".." checks; resolve again.
		fd, err := unix.Openat2(r.fd, rel, how)
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// openMountpoint returns an O_PATH fd of rel below the rootfs, creating
// it, and its missing parents as directories, by fd: as an empty file
// when file, else as a directory.
func (r rootfsDir) openMountpoint(rel string, file bool) (int, error) {
	fd, err := r.openInRoot(rel)
	if !errors.Is(err, unix.ENOENT) || rel == "." {
		return fd, err
	}
	parent, name := filepath.Split(rel)
	pfd, err := r.openMountpoint(filepath.Clean(parent), false)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	// EEXIST: it appeared meanwhile, or it is a dangling symlink, which
	// the open below then refuses.
	if file {
		f, err := unix.Openat(pfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(f)
		} else if !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("creating %s: %w", rel, err)
		}
	} else if err := unix.Mkdirat(pfd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("creating %s: %w", rel, err)
	}
	return r.openInRoot(rel)
}

// procFd is the path of fd in /proc: a mount(2) target given as this
// path is exactly fd's file, whatever its path in the tree says by now.
func procFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// mountInRootfs mounts m below the rootfs. The destination is resolved
// inside the rootfs (symlinks cannot lead out), and created as a
// directory, or as a file when a bind mount's source is one.
func mountInRootfs(root rootfsDir, m specs.Mount) error {
	rel, err := root.inRoot(m.Destination)
	if err != nil {
		return err
	}
	flags, prop, data := parseMountOptions(m.Options)
	typ := m.Type
	if typ == "bind" || flags&unix.MS_BIND != 0 {
		typ, flags = "", flags|unix.MS_BIND
	}
	bind := flags&unix.MS_BIND != 0
	file := false
	if bind {
		if st, err := os.Stat(m.Source); err == nil && !st.IsDir() {
			file = true
		}
	}
	dst, err := root.openMountpoint(rel, file)
	if err != nil {
		return fmt.Errorf("creating mount point %s: %w", m.Destination, err)
	}
	defer unix.Close(dst)
	if bind {
		var all unix.MountAttr
		if slices.Contains(m.Options, "rro") {
			all.Attr_set = unix.MOUNT_ATTR_RDONLY
		}
		if err := bindMount(m.Source, dst, flags, mountAttr(flags), all, prop); err != nil {
			return fmt.Errorf("bind-mounting %s on %s: %w", m.Source, m.Destination, err)
		}
		return nil
	}
	switch {
	case typ == "cgroup" || typ == "cgroup2":
		// The guest is cgroup v2 only; the container is in its own cgroup
		// namespace, so this shows its own subtree.
		if err := unix.Mount("cgroup2", procFd(dst), "cgroup2", flags, ""); err != nil {
			return fmt.Errorf("mounting cgroup2 on %s: %w", m.Destination, err)
		}
	default:
		err := unix.Mount(m.Source, procFd(dst), typ, flags, data)
		if errors.Is(err, unix.EPERM) && typ == "sysfs" {
			err = bindSysfs(dst, flags, prop)
			prop = nil
		}
		if err != nil {
			return fmt.Errorf("mounting %s on %s: %w", typ, m.Destination, err)
		}
	}
	// A new filesystem has no submounts: "rro" is the MS_RDONLY it was
	// mounted with. Propagation applies to the mount now on top of the
	// destination.
	if len(prop) == 0 {
		return nil
	}
	top, err := root.openInRoot(rel)
	if err != nil {
		return fmt.Errorf("opening the mount on %s: %w", m.Destination, err)
	}
	defer unix.Close(top)
	for _, p := range prop {
		if err := setPropagation(top, p); err != nil {
			return fmt.Errorf("setting the propagation of %s: %w", m.Destination, err)
		}
	}
	return nil
}

// bindMount clones source (with its submounts when flags has MS_REC) as a
// detached tree, applies top to the tree's top mount and all to every
// mount of it, attaches it on the file dst is open on, and sets the
// propagation types prop. The tree is read-only before it is attached:
// there is no moment at which the destination shows it writable.
func bindMount(source string, dst int, flags uintptr, top, all unix.MountAttr, prop []uintptr) error {
	treeFlags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if flags&unix.MS_REC != 0 {
		treeFlags |= unix.AT_RECURSIVE
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, source, treeFlags)
	if err != nil {
		return fmt.Errorf("cloning the mount: %w", err)
	}
	defer unix.Close(tree)
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &top); err != nil {
		return fmt.Errorf("setting the mount's flags: %w", err)
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &all); err != nil {
		return fmt.Errorf("setting the submounts' flags: %w", err)
	}
	if err := unix.MoveMount(tree, "", dst, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching the mount: %w", err)
	}
	for _, p := range prop {
		if err := setPropagation(tree, p); err != nil {
			return fmt.Errorf("setting the propagation: %w", err)
		}
	}
	return nil
}

// bindSysfs binds the guest's /sys on dst with flags and the propagation
// types prop, read-only in every submount: a sysfs cannot be mounted
// outside the owner of its network namespace, and the guest's must not be
// writable from the container, /sys/fs/cgroup and the other submounts
// included.
func bindSysfs(dst int, flags uintptr, prop []uintptr) error {
	attr := mountAttr(flags | unix.MS_RDONLY)
	return bindMount("/sys", dst, unix.MS_BIND|unix.MS_REC, attr, attr, prop)
}

// mountAttr converts the per-mount flags of a mount(2) flag set to
// mount_setattr(2) attributes to set. Flags that are absent are left as
// they are, so a bind keeps the flags of its source.
func mountAttr(flags uintptr) unix.MountAttr {
	var a unix.MountAttr
	for _, f := range []struct {
		ms   uintptr
		attr uint64
	}{
		{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY}, {unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
		{unix.MS_NODEV, unix.MOUNT_ATTR_NODEV}, {unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
		{unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME},
	} {
		if flags&f.ms != 0 {
			a.Attr_set |= f.attr
		}
	}
	for _, f := range []struct {
		ms   uintptr
		attr uint64
	}{
		{unix.MS_NOATIME, unix.MOUNT_ATTR_NOATIME}, {unix.MS_STRICTATIME, unix.MOUNT_ATTR_STRICTATIME},
		{unix.MS_RELATIME, unix.MOUNT_ATTR_RELATIME},
	} {
		if flags&f.ms != 0 {
			a.Attr_clr, a.Attr_set = unix.MOUNT_ATTR__ATIME, a.Attr_set|f.attr
			break
		}
	}
	return a
}

// setPropagation sets the propagation type p (MS_SHARED, MS_SLAVE, ...,
// with MS_REC for every submount too) of the mount fd is open on.
func setPropagation(fd int, p uintptr) error {
	flags := uint(unix.AT_EMPTY_PATH)
	if p&unix.MS_REC != 0 {
		flags |= unix.AT_RECURSIVE
	}
	return unix.MountSetattr(fd, "", flags, &unix.MountAttr{Propagation: uint64(p &^ unix.MS_REC)})
}

// remountBind applies flags to the bind mount at dest, keeping the
// flags the kernel locked on it (nodev, nosuid, noexec of the source).
func remountBind(dest string, flags uintptr) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dest, &st); err == nil {
		for _, f := range []struct{ st, ms uintptr }{
			{unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		} {
			if uintptr(st.Flags)&f.st != 0 {
				flags |= f.ms
			}
		}
	}
	return unix.Mount("", dest, "", unix.MS_BIND|unix.MS_REMOUNT|flags, "")
}

// defaultDevices are the devices every container gets (as runc makes
// them), before the spec's own.
var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

// makeDevices creates the default and the spec's device nodes and the
// standard /dev links below the rootfs, by fd.
func makeDevices(root rootfsDir, devs []specs.LinuxDevice) error {
	// The nodes get the spec's modes exactly.
	defer unix.Umask(unix.Umask(0))
	for _, d := range append(append([]specs.LinuxDevice(nil), defaultDevices...), devs...) {
		if err := makeDevice(root, d); err != nil {
			return fmt.Errorf("creating device %s: %w", d.Path, err)
		}
	}
	dev, err := root.openMountpoint("dev", false)
	if err != nil {
		return err
	}
	defer unix.Close(dev)
	for link, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore",
	} {
		if err := unix.Symlinkat(target, dev, link); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("linking /dev/%s: %w", link, err)
		}
	}
	return nil
}

func makeDevice(root rootfsDir, d specs.LinuxDevice) error {
	mode := uint32(0o666)
	if d.FileMode != nil {
		mode = uint32(*d.FileMode & 0o7777)
	}
	switch d.Type {
	case "c", "u":
		mode |= unix.S_IFCHR
	case "b":
		mode |= unix.S_IFBLK
	case "p":
		mode |= unix.S_IFIFO
	default:
		return fmt.Errorf("unknown type %q", d.Type)
	}
	rel, err := root.inRoot(d.Path)
	if err != nil {
		return err
	}
	parent, name := filepath.Split(rel)
	dir, err := root.openMountpoint(filepath.Clean(parent), false)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	unix.Unlinkat(dir, name, 0)
	if err := unix.Mknodat(dir, name, mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))); err != nil {
		return err
	}
	uid, gid := -1, -1
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	if uid >= 0 || gid >= 0 {
		if err := unix.Fchownat(dir, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("owning it: %w", err)
		}
	}
	return nil
}

// pivotRoot makes rootfs the root of the mount namespace and detaches the
// old root, so nothing of the guest's tree stays reachable.
func pivotRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(oldroot)
	if err := unix.Chdir(rootfs); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// The old root is now stacked under the new one at "/": detach it
	// without letting the unmount propagate back to the guest.
	if err := unix.Fchdir(oldroot); err != nil {
		return err
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making the old root a slave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	return unix.Chdir("/")
}

// maskPaths hides paths: a directory under an empty read-only tmpfs, a
// file under /dev/null. Missing paths are fine.
func maskPaths(paths []string) error {
	for _, p := range paths {
		err := unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
		if errors.Is(err, unix.ENOTDIR) {
			err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "")
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("masking %s: %w", p, err)
		}
	}
	return nil
}

// readonlyPaths makes paths read-only bind mounts of themselves.
func readonlyPaths(paths []string) error {
	for _, p := range paths {
		err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, "")
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err == nil {
			err = remountBind(p, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC)
		}
		if err != nil {
			return fmt.Errorf("making %s read-only: %w", p, err)
		}
	}
	return nil
}

// writeSysctls sets the container's sysctls (namespaced ones: its own
// ipc/uts/net namespaces, or the guest's).
func writeSysctls(sysctls map[string]string) error {
	for k, v := range sysctls {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			return fmt.Errorf("setting sysctl %s: %w", k, err)
		}
	}
	return nil
}

// rootPropagation is the flag for the spec's rootfsPropagation; default
// rslave, as runc.
func rootPropagation(s string) (uintptr, error) {
	if s == "" {
		return unix.MS_SLAVE | unix.MS_REC, nil
	}
	if f, ok := propagationFlags[s]; ok {
		return f, nil
	}
	return 0, fmt.Errorf("rootfsPropagation %q", s)
}
