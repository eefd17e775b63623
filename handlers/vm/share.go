package vm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/mountfs"
)

// share is a pod's file share with its guest. Layout, below the VM dir:
//
//	<vm dir>/           a private mount of its own: nothing mounted below it
//	                    propagates to the peers of the host mount it is on
//	  staging/          the host's writable view of the tree; never exported
//	  shared/           the export (9p or virtiofsd): a bind of staging,
//	                    read-only, nosuid, nodev, noexec, in a peer group of
//	                    its own whose only members are the slaves of
//	                    virtiofsd's sandbox namespace
//	    <ctr>/rootfs    the container's rootfs: its own mount, read-write
//	    <ctr>/mounts/N  its N-th bind volume: its own mount, read-only as
//	                    the container sees it (the top mount for readonly,
//	                    every submount for recursive_read_only)
//
// Invariants: the guest can write inside a rootfs and inside writable
// volumes, never to the tree's structure (the export is read-only), so
// every entry the host creates, mounts onto, unmounts or removes is one
// the guest cannot create, rename, remove or replace. The host creates
// entries below staging by descriptor without following symlinks, and
// mounts copies of sources it opened (and the mount policy checked) by
// descriptor. Every copy is a slave of its source: an unmount in the
// share never propagates to a host mount.
type share struct{ dir string }

func (s share) staging() string { return filepath.Join(s.dir, "staging") }
func (s share) export() string  { return filepath.Join(s.dir, "shared") }

// create makes the VM dir, its staging tree and the read-only export.
func (s share) create() error {
	if err := os.MkdirAll(s.dir, 0o711); err != nil {
		return err
	}
	if err := mountfs.MakePrivateMount(s.dir); err != nil {
		return fmt.Errorf("isolating the VM dir: %w", err)
	}
	for _, d := range []string{s.staging(), s.export()} {
		if err := os.Mkdir(d, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	stg, err := mountfs.OpenDir(s.staging())
	if err != nil {
		return err
	}
	defer unix.Close(stg)
	exp, err := mountfs.OpenDir(s.export())
	if err != nil {
		return err
	}
	defer unix.Close(exp)
	if err := mountfs.Bind(stg, exp, mountfs.BindOptions{ReadOnly: true, NoExec: true}); err != nil {
		return fmt.Errorf("exporting the staging tree: %w", err)
	}
	// The export's own peer group carries the container mounts made on
	// it into virtiofsd's namespace.
	mounted, err := mountfs.OpenDir(s.export())
	if err != nil {
		return err
	}
	defer unix.Close(mounted)
	if err := mountfs.SetPropagation(mounted, unix.MS_SHARED); err != nil {
		return fmt.Errorf("sharing the export: %w", err)
	}
	return nil
}

// destroy unmounts everything below the VM dir and removes it. It fails,
// removing nothing across a mount, while anything stays mounted; a retry
// starts over. Idempotent.
func (s share) destroy() error {
	if err := mountfs.UnmountAll(s.dir); err != nil {
		return err
	}
	return mountfs.RemoveTree(s.dir)
}

// shareBind is one volume to expose: the n-th of agentproxy.GuestSpec's
// binds, with its source opened.
type shareBind struct {
	n   int
	src *os.File // O_PATH
	// readOnly and recursiveReadOnly are the CRI mount's readonly and
	// recursive_read_only: what the container sees is what the guest gets.
	readOnly, recursiveReadOnly bool
}

// expose makes container id's entries and mounts its rootfs and volumes
// on them. On error the caller undoes it with unexpose.
func (s share) expose(id, rootfs string, binds []shareBind) error {
	stg, err := mountfs.OpenDir(s.staging())
	if err != nil {
		return err
	}
	defer unix.Close(stg)
	for _, d := range []string{id, id + "/rootfs", id + "/mounts"} {
		if err := mountfs.MkdirBeneath(stg, d, 0o711); err != nil {
			return fmt.Errorf("creating the share entries: %w", err)
		}
	}
	for _, b := range binds {
		var st unix.Stat_t
		if err := unix.Fstat(int(b.src.Fd()), &st); err != nil {
			return fmt.Errorf("reading volume %d's source: %w", b.n, err)
		}
		at := mountPointIn(id, b.n)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = mountfs.MkdirBeneath(stg, at, 0o755)
		} else {
			err = mountfs.CreateBeneath(stg, at, 0o444)
		}
		if err != nil {
			return fmt.Errorf("creating the share entries: %w", err)
		}
	}

	exp, err := mountfs.OpenDir(s.export())
	if err != nil {
		return err
	}
	defer unix.Close(exp)
	src, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("opening the rootfs: %w", err)
	}
	defer src.Close()
	if err := mountOnto(exp, id+"/rootfs", src, mountfs.BindOptions{Propagation: unix.MS_SLAVE}); err != nil {
		return fmt.Errorf("exposing the rootfs: %w", err)
	}
	for _, b := range binds {
		opts := mountfs.BindOptions{Recursive: true, ReadOnly: b.readOnly, RecursiveReadOnly: b.recursiveReadOnly, Propagation: unix.MS_SLAVE}
		if err := mountOnto(exp, mountPointIn(id, b.n), b.src, opts); err != nil {
			return fmt.Errorf("exposing volume %d: %w", b.n, err)
		}
	}
	return nil
}

func mountPointIn(id string, n int) string { return id + "/mounts/" + strconv.Itoa(n) }

// mountOnto mounts a copy of src on rel below the export exp.
func mountOnto(exp int, rel string, src *os.File, opts mountfs.BindOptions) error {
	target, err := mountfs.OpenBeneath(exp, rel, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	return mountfs.Bind(int(src.Fd()), target, opts)
}

// unexpose undoes expose. Idempotent.
func (s share) unexpose(id string) error {
	if !validID(id) {
		return fmt.Errorf("container id %q: not a share entry", id)
	}
	if err := mountfs.UnmountAll(filepath.Join(s.export(), id)); err != nil {
		return err
	}
	stg, err := mountfs.OpenDir(s.staging())
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(stg)
	return mountfs.RemoveBeneath(stg, id)
}

// validID holds for the hex IDs crivm makes: nothing that walks out of a
// directory.
func validID(id string) bool {
	return id != "" && len(id) <= 64 && !slices.ContainsFunc([]byte(id), func(c byte) bool {
		return !('0' <= c && c <= '9' || 'a' <= c && c <= 'f')
	})
}

// shareBinds opens the sources of binds. An untrusted pod's sources are
// the mount policy's descriptors (by the resolved path the spec names);
// one the policy did not check is refused. A trusted pod's are opened
// here. The caller closes what it opened (the returned closers).
func shareBinds(spec *specs.Spec, binds []agentproxy.HostBind, req *handlers.ContainerRequest) ([]shareBind, func(), error) {
	checked := map[string]*os.File{}
	for _, src := range req.Sources {
		checked[src.Resolved] = src.File
	}
	var opened []*os.File
	closeAll := func() {
		for _, f := range opened {
			f.Close()
		}
	}
	readOnly, recursive := map[string]bool{}, map[string]bool{}
	for _, m := range spec.Mounts {
		readOnly[m.Source] = slices.Contains(m.Options, "ro")
		recursive[m.Source] = slices.Contains(m.Options, "rro")
	}
	var out []shareBind
	for _, b := range binds {
		f, ok := checked[b.HostPath]
		if !ok && req.Untrusted {
			closeAll()
			return nil, nil, errdefs.FailedPrecondition("volume source %q was not checked by the mount policy", b.HostPath)
		}
		if !ok {
			var err error
			if f, err = os.OpenFile(b.HostPath, unix.O_PATH, 0); err != nil {
				closeAll()
				return nil, nil, errdefs.FailedPrecondition("opening volume source: %w", err)
			}
			opened = append(opened, f)
		}
		out = append(out, shareBind{n: b.N, src: f, readOnly: readOnly[b.GuestPath], recursiveReadOnly: recursive[b.GuestPath]})
	}
	return out, closeAll, nil
}
