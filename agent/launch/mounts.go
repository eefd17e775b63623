package launch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// mountInRootfs mounts m below rootfs. The destination is resolved inside
// rootfs (symlinks cannot lead out), and created as a directory, or as a
// file when a bind mount's source is one.
func mountInRootfs(rootfs string, m specs.Mount) error {
	dest, err := securejoin.SecureJoin(rootfs, m.Destination)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", m.Destination, err)
	}
	flags, prop, data := parseMountOptions(m.Options)
	typ := m.Type
	if typ == "bind" || flags&unix.MS_BIND != 0 {
		typ, flags = "", flags|unix.MS_BIND
	}
	if err := makeMountpoint(m.Source, dest, flags&unix.MS_BIND != 0); err != nil {
		return fmt.Errorf("creating mount point %s: %w", m.Destination, err)
	}
	switch {
	case flags&unix.MS_BIND != 0:
		// A bind ignores all flags but MS_REC; the rest apply on a remount.
		if err := unix.Mount(m.Source, dest, "", flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
			return fmt.Errorf("bind-mounting %s on %s: %w", m.Source, m.Destination, err)
		}
		if rest := flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); rest != 0 {
			if err := remountBind(dest, rest); err != nil {
				return fmt.Errorf("remounting %s: %w", m.Destination, err)
			}
		}
	case typ == "cgroup" || typ == "cgroup2":
		// The guest is cgroup v2 only; the container is in its own cgroup
		// namespace, so this shows its own subtree.
		if err := unix.Mount("cgroup2", dest, "cgroup2", flags, ""); err != nil {
			return fmt.Errorf("mounting cgroup2 on %s: %w", m.Destination, err)
		}
	default:
		err := unix.Mount(m.Source, dest, typ, flags, data)
		if errors.Is(err, unix.EPERM) && typ == "sysfs" {
			// sysfs cannot be mounted outside its network namespace's
			// owner; bind the guest's instead, read-only.
			err = unix.Mount("/sys", dest, "", unix.MS_BIND|unix.MS_REC, "")
			if err == nil {
				err = remountBind(dest, flags|unix.MS_RDONLY)
			}
		}
		if err != nil {
			return fmt.Errorf("mounting %s on %s: %w", typ, m.Destination, err)
		}
	}
	if slices.Contains(m.Options, "rro") {
		attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(unix.AT_FDCWD, dest, unix.AT_RECURSIVE|unix.AT_SYMLINK_NOFOLLOW, attr); err != nil {
			return fmt.Errorf("making %s read-only recursively: %w", m.Destination, err)
		}
	}
	for _, p := range prop {
		if err := unix.Mount("", dest, "", p, ""); err != nil {
			return fmt.Errorf("setting the propagation of %s: %w", m.Destination, err)
		}
	}
	return nil
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

func makeMountpoint(source, dest string, bind bool) error {
	if bind {
		if st, err := os.Stat(source); err == nil && !st.IsDir() {
			if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(dest, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
	}
	return os.MkdirAll(dest, 0o755)
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
// standard /dev links below rootfs.
func makeDevices(rootfs string, devs []specs.LinuxDevice) error {
	for _, d := range append(append([]specs.LinuxDevice(nil), defaultDevices...), devs...) {
		dest, err := securejoin.SecureJoin(rootfs, d.Path)
		if err != nil {
			return fmt.Errorf("resolving device %s: %w", d.Path, err)
		}
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
			return fmt.Errorf("device %s: unknown type %q", d.Path, d.Type)
		}
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return err
		}
		os.Remove(dest)
		if err := unix.Mknod(dest, mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))); err != nil {
			return fmt.Errorf("creating device %s: %w", d.Path, err)
		}
		// mknod applies the umask; the spec's mode is exact.
		if err := unix.Chmod(dest, mode&0o7777); err != nil {
			return fmt.Errorf("creating device %s: %w", d.Path, err)
		}
		uid, gid := -1, -1
		if d.UID != nil {
			uid = int(*d.UID)
		}
		if d.GID != nil {
			gid = int(*d.GID)
		}
		if uid >= 0 || gid >= 0 {
			if err := unix.Chown(dest, uid, gid); err != nil {
				return fmt.Errorf("owning device %s: %w", d.Path, err)
			}
		}
	}
	for link, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2", "/dev/ptmx": "pts/ptmx", "/dev/core": "/proc/kcore",
	} {
		p := filepath.Join(rootfs, link)
		if err := os.Symlink(target, p); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("linking %s: %w", link, err)
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
