// Package mountfs does mount work by file descriptor, for trees a hostile
// party can write to (a VM's share, a pod's volumes).
//
// Invariants: no path below a caller's directory is resolved through a
// symlink or across a mount (openat2 with RESOLVE_BENEATH,
// RESOLVE_NO_SYMLINKS and RESOLVE_NO_XDEV); mounts are made onto
// descriptors (open_tree + mount_setattr + move_mount), so what was opened
// and checked is what gets mounted; the mount table is read with the
// escapes of /proc/self/mountinfo decoded; a failed unmount is an error;
// and nothing is removed across a mount point.
package mountfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// resolveStrict confines a lookup to the directory it starts from.
const resolveStrict = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// OpenBeneath opens rel below the directory dirfd without following a
// symlink (the last element included) or crossing a mount on the way.
// flags get O_CLOEXEC.
func OpenBeneath(dirfd int, rel string, flags int) (int, error) {
	fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: resolveStrict,
	})
	if err != nil {
		return -1, &os.PathError{Op: "openat2", Path: rel, Err: err}
	}
	return fd, nil
}

// OpenDir opens the directory at the absolute path dir (trusted: it is the
// caller's own), refusing a symlink as its last element.
func OpenDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, nil
}

// OpenPath opens the file or directory at the absolute path p (trusted:
// the caller's own) as an O_PATH descriptor, refusing a symlink as its
// last element.
func OpenPath(p string) (int, error) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return fd, nil
}

// BindOptions shape a bind mount made by Bind.
type BindOptions struct {
	// Recursive takes the source's submounts along.
	Recursive bool
	// ReadOnly makes the top mount read-only; submounts keep their own
	// flags (a CRI readonly mount without recursive_read_only).
	ReadOnly bool
	// RecursiveReadOnly makes every mount of the copy read-only
	// (MOUNT_ATTR_RDONLY with AT_RECURSIVE).
	RecursiveReadOnly bool
	// NoExec adds MOUNT_ATTR_NOEXEC. nosuid is always set, and so is
	// nodev unless Devices: the host never runs or opens devices from
	// what it exposes.
	NoExec bool
	// Devices leaves nodev off: for the bind of a host device node into a
	// namespace the host builds (podns), never for shared content.
	Devices bool
	// Propagation is unix.MS_PRIVATE (the default) or unix.MS_SLAVE: the
	// copy never propagates back to the source's peers, so unmounting it
	// cannot unmount a host mount.
	Propagation uint64
}

// Bind mounts a copy of the file or directory srcfd refers to onto the
// file or directory targetfd refers to. Both may be O_PATH descriptors.
func Bind(srcfd, targetfd int, opts BindOptions) error {
	tree, err := Clone(srcfd, opts)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	return Attach(tree, targetfd)
}

// Clone makes a detached copy of the mount at srcfd with opts applied and
// returns its descriptor (close-on-exec). A detached copy is in no mount
// namespace until Attach puts it in the caller's: it can be made in one
// namespace and attached in another (podns), and until then it makes
// nothing a mount point anywhere.
func Clone(srcfd int, opts BindOptions) (int, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC | unix.AT_EMPTY_PATH)
	attrFlags := uint(unix.AT_EMPTY_PATH)
	if opts.Recursive {
		flags |= unix.AT_RECURSIVE
		attrFlags |= unix.AT_RECURSIVE
	}
	tree, err := unix.OpenTree(srcfd, "", flags)
	if err != nil {
		return -1, fmt.Errorf("cloning the source tree: %w", err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Propagation: opts.Propagation}
	if opts.Devices {
		attr.Attr_set &^= unix.MOUNT_ATTR_NODEV
	}
	if attr.Propagation == 0 {
		attr.Propagation = unix.MS_PRIVATE
	}
	if opts.RecursiveReadOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if opts.NoExec {
		attr.Attr_set |= unix.MOUNT_ATTR_NOEXEC
	}
	if err := unix.MountSetattr(tree, "", attrFlags, attr); err != nil {
		unix.Close(tree)
		return -1, fmt.Errorf("setting the copy's attributes: %w", err)
	}
	if opts.ReadOnly && !opts.RecursiveReadOnly {
		top := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, top); err != nil {
			unix.Close(tree)
			return -1, fmt.Errorf("making the copy read-only: %w", err)
		}
	}
	return tree, nil
}

// Attach mounts the detached tree Clone made onto targetfd, in the
// calling thread's mount namespace.
func Attach(tree, targetfd int) error {
	if err := unix.MoveMount(tree, "", targetfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching the copy: %w", err)
	}
	return nil
}

// SetPropagation changes the propagation of the mount at the directory
// dirfd refers to (not recursively).
func SetPropagation(dirfd int, propagation uint64) error {
	return unix.MountSetattr(dirfd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Propagation: propagation})
}

// MakePrivateMount makes the directory dir a mount point of its own with
// private propagation, so that mounts made below it are not copied to the
// peers of the mount it is on (a shared / on systemd hosts). Idempotent.
func MakePrivateMount(dir string) error {
	fd, err := OpenDir(dir)
	if err != nil {
		return err
	}
	// fd is replaced below: the deferred close takes the last one (a
	// descriptor closed twice may by then be another goroutine's).
	defer func() { unix.Close(fd) }()
	mounted, err := mountinfo.Mounted(dir)
	if err != nil {
		return fmt.Errorf("checking %s: %w", dir, err)
	}
	if !mounted {
		if err := Bind(fd, fd, BindOptions{}); err != nil {
			return fmt.Errorf("bind-mounting %s onto itself: %w", dir, err)
		}
		unix.Close(fd)
		if fd, err = OpenDir(dir); err != nil {
			fd = -1
			return err
		}
	}
	if err := SetPropagation(fd, unix.MS_PRIVATE); err != nil {
		return fmt.Errorf("making %s private: %w", dir, err)
	}
	return nil
}

// MountsBelow lists the mount points at or below dir in this mount
// namespace, decoded, deepest first.
func MountsBelow(dir string) ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	var out []string
	for _, m := range infos {
		out = append(out, m.Mountpoint)
	}
	slices.SortStableFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return slices.Compact(out), nil
}

// UnmountAll detaches every mount at or below dir, deepest first, without
// following a symlink at the mount point, and fails unless none is left.
// dir must be a path no hostile party can rename or replace a component
// of (a share's structure is read-only to the guest).
func UnmountAll(dir string) error {
	for range 8 { // stacked mounts come off one per pass
		mounts, err := MountsBelow(dir)
		if err != nil || len(mounts) == 0 {
			return err
		}
		for _, m := range mounts {
			// EINVAL: no longer a mount point (a lazy detach of its parent
			// took it along).
			if err := unix.Unmount(m, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmounting %q: %w", m, err)
			}
		}
	}
	mounts, err := MountsBelow(dir)
	if err == nil && len(mounts) > 0 {
		err = fmt.Errorf("unmounting below %s: %q still mounted", dir, mounts)
	}
	return err
}

// RemoveTree removes dir and everything below it without following a
// symlink or entering another mount: a mount point inside makes it fail
// (EXDEV or EBUSY), where os.RemoveAll would delete the mounted files.
// A missing dir is not an error.
func RemoveTree(dir string) error {
	parent, err := OpenDir(filepath.Dir(dir))
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	return removeAt(parent, filepath.Base(dir), 0)
}

// RemoveBeneath is RemoveTree of rel below the directory dirfd.
func RemoveBeneath(dirfd int, rel string) error {
	dir, name := filepath.Split(rel)
	if dir != "" {
		fd, err := OpenBeneath(dirfd, dir, unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		dirfd = fd
	}
	return removeAt(dirfd, name, 0)
}

// maxRemoveDepth bounds removeAt's recursion.
const maxRemoveDepth = 64

func removeAt(dirfd int, name string, depth int) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return &os.PathError{Op: "unlink", Path: name, Err: err}
	}
	if depth >= maxRemoveDepth {
		return &os.PathError{Op: "remove", Path: name, Err: unix.ELOOP}
	}
	fd, err := OpenBeneath(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err // EXDEV: a mount point
	}
	d := os.NewFile(uintptr(fd), name)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("listing %s: %w", name, err)
	}
	for _, n := range names {
		if err := removeAt(fd, n, depth+1); err != nil {
			return fmt.Errorf("in %s: %w", name, err)
		}
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "rmdir", Path: name, Err: err}
	}
	return nil
}

// CreateBeneath creates the empty regular file rel below dirfd (it must
// not exist), for a file bind mount to land on.
func CreateBeneath(dirfd int, rel string, mode uint32) error {
	fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
		Flags:   uint64(unix.O_CREAT | unix.O_EXCL | unix.O_RDONLY | unix.O_CLOEXEC),
		Mode:    uint64(mode),
		Resolve: resolveStrict,
	})
	if err != nil {
		return &os.PathError{Op: "create", Path: rel, Err: err}
	}
	return unix.Close(fd)
}

// MkdirBeneath creates the directory rel below dirfd; its parent is found
// as OpenBeneath finds it.
func MkdirBeneath(dirfd int, rel string, mode uint32) error {
	dir, name := filepath.Split(rel)
	if dir != "" {
		fd, err := OpenBeneath(dirfd, dir, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		dirfd = fd
	}
	if err := unix.Mkdirat(dirfd, name, mode); err != nil {
		return &os.PathError{Op: "mkdir", Path: rel, Err: err}
	}
	return nil
}
