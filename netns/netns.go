// Package netns owns pod network namespaces and their CNI networking.
//
// A pod's network namespace is persistent: it is bind-mounted onto a file
// (by default under /var/run/netns, the place `ip netns` uses), so it
// outlives any process and survives a daemon restart. The Manager attaches
// such a namespace to the default CNI network through libcni and detaches it
// again; the helpers tests use to prove that nothing was left behind are in
// test/framework/leakcheck.go.
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
)

// DefaultDir is where New puts namespaces when it is given no directory. It is
// the directory iproute2 uses, so `ip netns` lists crivm's pod namespaces.
const DefaultDir = "/var/run/netns"

// NetNS is a persistent network namespace bind-mounted at Path.
type NetNS struct {
	path string
}

// dirMu serializes the shared-mount setup of namespace directories within
// this process, so that concurrent New calls do not stack self-bind mounts.
var dirMu sync.Mutex

// New creates a network namespace, bind-mounts it at dir/name and brings its
// loopback interface up. dir defaults to DefaultDir. dir becomes a shared
// mount point (as with `ip netns add`) so the bind mount propagates to mount
// namespaces created later, and its removal propagates to them too.
//
// New fails with ErrAlreadyExists when dir/name exists. A failed New leaves
// neither the file nor a mount behind.
func New(dir, name string) (*NetNS, error) {
	return newAt(dir, name, createAt)
}

// NewFromPID is New for the network namespace process pid is in: it pins
// that namespace at dir/name and brings its loopback interface up. A pod
// with its own user namespace gets its network namespace this way: its
// sandbox creates it, so that the pod's user namespace owns it. The caller
// makes sure pid is still the process it means.
func NewFromPID(dir, name string, pid int) (*NetNS, error) {
	if pid <= 0 {
		return nil, errdefs.InvalidArgument("pinning the network namespace of pid %d", pid)
	}
	return newAt(dir, name, func(p string) error {
		src := fmt.Sprintf("/proc/%d/ns/net", pid)
		if err := unix.Mount(src, p, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting %s onto %s: %w", src, p, err)
		}
		if err := Do(p, func() error { return linkUp("lo") }); err != nil {
			return fmt.Errorf("bringing lo up: %w", err)
		}
		return nil
	})
}

// newAt creates the file dir/name and has create bind a namespace on it.
// PathIn is where New(dir, name) pins its namespace.
func PathIn(dir, name string) string {
	if dir == "" {
		dir = DefaultDir
	}
	return filepath.Join(dir, name)
}

func newAt(dir, name string, create func(p string) error) (*NetNS, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return nil, errdefs.InvalidArgument("invalid network namespace name %q", name)
	}
	if err := makeSharedDir(dir); err != nil {
		return nil, fmt.Errorf("preparing network namespace directory %s: %w", dir, err)
	}
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, errdefs.AlreadyExists("network namespace %s already exists", p)
		}
		return nil, fmt.Errorf("creating network namespace file: %w", err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(p)
		return nil, fmt.Errorf("creating network namespace file: %w", err)
	}
	if err := create(p); err != nil {
		// The mount, if any, is only on p; removing it releases the namespace.
		n := &NetNS{path: p}
		if rerr := n.Remove(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, fmt.Errorf("creating network namespace %s: %w", p, err)
	}
	return &NetNS{path: p}, nil
}

// FromPath returns the NetNS bind-mounted at path, for example one recorded
// before a daemon restart. It does not check the path.
func FromPath(path string) *NetNS { return &NetNS{path: path} }

// Path is the bind-mounted file that refers to the namespace. It is the value
// for CNI_NETNS and for the OCI spec's network namespace path.
func (n *NetNS) Path() string { return n.path }

// Remove unmounts the namespace file (lazily, so open handles keep the
// namespace alive until they close) and deletes it. A missing file or a file
// that is not mounted is not an error, so Remove may be called repeatedly.
func (n *NetNS) Remove() error {
	// Stacked mounts on the same file are unmounted one by one; the bound keeps
	// a misbehaving kernel from looping forever.
	for range 16 {
		err := unix.Unmount(n.path, unix.MNT_DETACH)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		return fmt.Errorf("unmounting network namespace %s: %w", n.path, err)
	}
	if err := os.Remove(n.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing network namespace file %s: %w", n.path, err)
	}
	return nil
}

// Do runs fn on an OS thread that has joined the network namespace at path.
// Sockets fn creates stay in that namespace; goroutines fn starts do not run
// in it. The calling goroutine's thread is never switched.
func Do(path string, fn func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// makeSharedDir makes dir a shared mount point, self-binding it first when it
// is not a mount point yet. It follows iproute2's netns_add.
func makeSharedDir(dir string) error {
	dirMu.Lock()
	defer dirMu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bound := false
	for {
		err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		// EINVAL: dir is not a mount point.
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("making %s a shared mount: %w", dir, err)
		}
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mounting %s onto itself: %w", dir, err)
		}
		bound = true
	}
}

// createAt creates a network namespace and bind-mounts it onto the existing
// file p. The work happens on a dedicated locked OS thread. That thread goes
// back to its original namespace and is unlocked afterwards; when going back
// fails it stays locked, so the Go runtime destroys it when its goroutine
// exits and no other goroutine ever runs in the new namespace.
func createAt(p string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening the thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unsharing the network namespace: %w", err)
			return
		}
		err = setupCurrent(p)
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			errc <- errors.Join(err, fmt.Errorf("restoring the thread's network namespace: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// testHookAfterMount, when set by a test, runs in setupCurrent after the bind
// mount; an error from it fails New there.
var testHookAfterMount func() error

// setupCurrent bind-mounts the calling thread's network namespace onto p and
// brings its loopback interface up. The caller has locked the thread.
func setupCurrent(p string) error {
	if err := unix.Mount("/proc/thread-self/ns/net", p, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting the namespace onto %s: %w", p, err)
	}
	if testHookAfterMount != nil {
		if err := testHookAfterMount(); err != nil {
			return err
		}
	}
	if err := linkUp("lo"); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

// linkUp sets IFF_UP on the interface named ifname in the calling thread's
// network namespace.
func linkUp(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening a control socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading %s flags: %w", ifname, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("setting %s flags: %w", ifname, err)
	}
	return nil
}
