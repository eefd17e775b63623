// Package podns gives a VM pod a mount namespace of its own, where its
// QEMU and virtiofsd run and where its share's mounts live.
//
// The namespace is built from nothing the host does not name: its root is
// a read-only tmpfs holding read-only binds of the host directories and
// files the VMM needs (Root.ReadOnly), the host device nodes it opens
// (Root.Devices), its VM dir read-write (Root.Writable) and a procfs. No
// other host mount, and so no other pod's volume, rootfs, network
// namespace or share, is visible or pinned in it, and nothing mounted in
// it propagates back: it is a slave of nothing the host shares after the
// pivot.
//
// Invariants:
//   - The namespace lives while its pin (a bind of its nsfs file in the
//     host's mount namespace, on a private mount) or a process in it does;
//     when both are gone every mount in it goes with it. Release drops the
//     pin.
//   - A goroutine that enters the namespace (Run) does so on a locked
//     thread, never the main one, with its own fs struct (unshare(CLONE_FS):
//     setns to a mount namespace refuses a thread that shares it), and that
//     thread is never unlocked: it ends with the goroutine, so no other
//     goroutine ever runs in the pod's namespace. Processes forked there
//     (os/exec on that thread) are born in it.
package podns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/mountfs"
)

// Root is what a new namespace's root holds, each at its host path.
type Root struct {
	// ReadOnly are host directories (bound recursively, read-only
	// throughout, nosuid, nodev) and files (bound read-only). A symlink
	// is recreated as the same symlink, and its target is expected among
	// the other entries (/lib -> usr/lib). Missing paths are skipped.
	ReadOnly []string
	// ReadOnlyDirs are directories bound read-only, not recursively
	// (nosuid, nodev, noexec): the VM dir, whose own mounts are made in
	// the namespace later.
	ReadOnlyDirs []string
	// Devices are host device nodes, bound as they are. Missing ones are
	// skipped.
	Devices []string
	// Writable are directories bound read-write, not recursively (nosuid,
	// nodev, noexec): the VM dir.
	Writable []string
	// Tmpfs are directories that get a small tmpfs of their own, private
	// to the namespace (virtiofsd's lock files in /var/run).
	Tmpfs []string
	// Scratch is an empty directory the new root's tmpfs is mounted on
	// while it is built (in the new namespace only).
	Scratch string
}

// Target names the namespaces Run enters.
type Target struct {
	// MountNS is a pin made by Create; empty stays in the host's.
	MountNS string
	// NetNS is a network namespace path (a bind of an nsfs file); empty
	// stays in the host's.
	NetNS string
}

// Create makes a new mount namespace holding root and pins it at pin (an
// empty file is made there; its directory must be on a private mount so
// the pin does not propagate). On error nothing is left.
func Create(pin string, root Root) error {
	if err := checkPaths(root); err != nil {
		return err
	}
	f, err := os.OpenFile(pin, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating the namespace pin: %w", err)
	}
	f.Close()
	// Linux 6.18 numbers namespaces from per-CPU batches, and binds a
	// mount namespace's file only if its number is above the binder's own
	// namespace's (a guard against namespace loops). In a daemon that runs
	// in a namespace of its own (a container, a unit with PrivateTmp) a
	// new namespace made on one CPU may be numbered below the daemon's and
	// refused with EINVAL where one made on another CPU is not. Each CPU's
	// numbers rise, so the CPU that made the daemon's namespace (if the
	// daemon may still run there) gives one that binds: on EINVAL the
	// namespace is made again on each allowed CPU in turn.
	for _, cpu := range cpusToTry() {
		var nsfd int
		if nsfd, err = newNamespace(root, cpu); err != nil {
			break
		}
		// This goroutine runs on a thread in the host's namespace: only
		// Run's and Create's locked threads ever enter another.
		err = unix.Mount(fmt.Sprintf("/proc/self/fd/%d", nsfd), pin, "", unix.MS_BIND, "")
		unix.Close(nsfd)
		if err == nil {
			return nil
		}
		err = fmt.Errorf("pinning the namespace: %w", err)
		if !errors.Is(err, unix.EINVAL) {
			break
		}
	}
	return errors.Join(err, os.Remove(pin))
}

// cpusToTry is where Create makes a namespace: first wherever the thread
// runs (-1), then on each CPU the process may use.
func cpusToTry() []int {
	cpus := []int{-1}
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil {
		return cpus
	}
	for i := 0; i < len(set)*64; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus
}

// newNamespace makes a mount namespace holding root on a spare thread
// bound to cpu (-1: any) and returns a descriptor of it, which keeps it
// alive once that thread is gone.
func newNamespace(root Root, cpu int) (int, error) {
	nsfd := -1
	var err error
	onSpareThread(func() {
		if cpu >= 0 {
			var set unix.CPUSet
			set.Set(cpu)
			if err = unix.SchedSetaffinity(0, &set); err != nil {
				err = fmt.Errorf("binding the thread to CPU %d: %w", cpu, err)
				return
			}
		}
		if err = unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
			err = fmt.Errorf("unsharing the mount namespace: %w", err)
			return
		}
		if err = build(root); err != nil {
			return
		}
		if nsfd, err = unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			err = fmt.Errorf("opening the new namespace: %w", err)
		}
	})
	return nsfd, err
}

func checkPaths(root Root) error {
	all := slices.Concat([]string{root.Scratch}, root.ReadOnly, root.ReadOnlyDirs, root.Devices, root.Writable, root.Tmpfs)
	for _, p := range all {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			return fmt.Errorf("namespace root entry %q: not a clean absolute path below /", p)
		}
	}
	return nil
}

// build runs on the locked thread in the new namespace: it makes the
// namespace a slave of the host's, builds root on a tmpfs at
// root.Scratch and pivots into it.
func build(root Root) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("making the namespace a slave: %w", err)
	}
	nr := root.Scratch
	if err := unix.Mount("tmpfs", nr, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("mounting the new root: %w", err)
	}
	for _, p := range root.ReadOnly {
		if err := place(nr, p, mountfs.BindOptions{Recursive: true, RecursiveReadOnly: true}); err != nil {
			return err
		}
	}
	for _, p := range root.ReadOnlyDirs {
		if err := place(nr, p, mountfs.BindOptions{ReadOnly: true, NoExec: true}); err != nil {
			return err
		}
	}
	for _, p := range root.Devices {
		if err := place(nr, p, mountfs.BindOptions{Devices: true}); err != nil {
			return err
		}
	}
	for _, p := range root.Writable {
		if err := place(nr, p, mountfs.BindOptions{NoExec: true}); err != nil {
			return err
		}
	}
	for _, p := range root.Tmpfs {
		at := filepath.Join(nr, p)
		if err := os.MkdirAll(at, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", at, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=1m"); err != nil {
			return fmt.Errorf("mounting a tmpfs on %s: %w", p, err)
		}
	}
	if err := os.Mkdir(filepath.Join(nr, "proc"), 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", filepath.Join(nr, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting proc: %w", err)
	}
	if err := unix.Chdir(nr); err != nil {
		return err
	}
	// pivot_root(".", ".") stacks the old root under the new one; the
	// detach below takes it (and every host mount in it) away.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivoting into the new root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("making the new root read-only: %w", err)
	}
	return nil
}

// place puts the host's p at the same path below newRoot. newRoot is the
// host's own tmpfs: nothing in it is anyone else's to replace.
func place(newRoot, p string, opts mountfs.BindOptions) error {
	st, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	at := filepath.Join(newRoot, p)
	if err := os.MkdirAll(filepath.Dir(at), 0o755); err != nil {
		return err
	}
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		return os.Symlink(target, at)
	case st.IsDir():
		err = os.Mkdir(at, 0o755)
	default:
		var f *os.File
		if f, err = os.OpenFile(at, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444); err == nil {
			f.Close()
		}
	}
	if err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	src, err := mountfs.OpenPath(p)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	dst, err := mountfs.OpenPath(at)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	if !st.IsDir() && !opts.Devices {
		opts.Recursive, opts.ReadOnly, opts.RecursiveReadOnly = false, true, false
	}
	if err := mountfs.Bind(src, dst, opts); err != nil {
		return fmt.Errorf("binding %s into the pod namespace: %w", p, err)
	}
	return nil
}

// Run calls fn on a thread inside t's namespaces. The thread is
// discarded afterwards (see the package doc); fn must not start
// goroutines that expect to stay there.
func Run(t Target, fn func() error) error {
	errc := make(chan error, 1)
	onSpareThread(func() { errc <- enter(t, fn) })
	return <-errc
}

// onSpareThread runs fn on a goroutine locked to an OS thread that is not
// the process's main thread, and never unlocks it: the thread ends with
// the goroutine, and whatever fn changed about it (its namespaces, its fs
// struct) with it. The main thread is handed over because Go parks it
// instead of ending it, and /proc/self (the daemon's own mountinfo, for
// one) names it.
func onSpareThread(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			onSpareThread(fn) // another thread: this one is held
			runtime.UnlockOSThread()
			return
		}
		fn()
	}()
	<-done
}

func enter(t Target, fn func() error) error {
	var mnt, net int = -1, -1
	if t.MountNS != "" {
		fd, err := unix.Open(t.MountNS, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("opening the pod mount namespace: %w", err)
		}
		defer unix.Close(fd)
		mnt = fd
	}
	if t.NetNS != "" {
		fd, err := unix.Open(t.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening netns %s: %w", t.NetNS, err)
		}
		defer unix.Close(fd)
		net = fd
	}
	if mnt >= 0 {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unsharing the fs struct: %w", err)
		}
		if err := unix.Setns(mnt, unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("entering the pod mount namespace: %w", err)
		}
	}
	if net >= 0 {
		if err := unix.Setns(net, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("entering netns %s: %w", t.NetNS, err)
		}
	}
	return fn()
}

// Exists reports whether pin holds a namespace.
func Exists(pin string) bool {
	var st unix.Statfs_t
	return unix.Statfs(pin, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// Release drops the pin and removes its file: once no process runs in
// the namespace, it and its mounts are gone. A missing pin is no error.
func Release(pin string) error {
	if Exists(pin) {
		if err := unix.Unmount(pin, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unpinning the pod mount namespace: %w", err)
		}
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// SystemDirs are the host directories a dynamically linked VMM and its
// data files need: the /usr tree and its merged-/usr symlinks.
var SystemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc/ld.so.cache"}

// Under reports whether p is at or below one of dirs.
func Under(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}
