package vm

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/mountfs"
	"github.com/crivm/crivm/internal/podns"
	"github.com/crivm/crivm/store"
)

// share is a pod's file share with its guest, and the pod's own mount
// namespace (podns) where the share's mounts live and QEMU and virtiofsd
// run. Layout, below the VM dir:
//
//	<vm dir>/           a private mount of its own: nothing mounted below it
//	                    propagates to the peers of the host mount it is on
//	  mnt.ns            the pin of the pod's mount namespace
//	  nsroot/           where that namespace's root was built (empty)
//	  virtiofsd/        virtiofsd's socket, pidfile and log (0700); the
//	                    only directory writable in the pod namespace, where
//	                    the VM dir is read-only
//	  staging/          the host's writable view of the tree; never exported
//	  shared/           the export (9p or virtiofsd): in the pod namespace
//	                    only, a bind of staging, read-only, nosuid, nodev,
//	                    noexec, in a peer group of its own whose only members
//	                    are the slaves of virtiofsd's sandbox namespace; an
//	                    empty directory in the host's
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
// descriptor. Every copy is a slave of its source and is made detached in
// the host's namespace and attached in the pod's: no copy is ever a mount
// in the host's namespace, so none pins a host directory (a hostPath's
// owner can unmount or remove it, as with a runc container), and no
// unmount in the share propagates to a host mount. When the pod namespace
// ends (its pin released, QEMU and virtiofsd gone), every copy ends with
// it.
type share struct{ dir string }

func (s share) staging() string { return filepath.Join(s.dir, "staging") }
func (s share) export() string  { return filepath.Join(s.dir, "shared") }
func (s share) pin() string     { return filepath.Join(s.dir, "mnt.ns") }
func (s share) nsroot() string  { return filepath.Join(s.dir, "nsroot") }

// virtiofsdDir holds virtiofsd's socket, pidfile and log: the only
// directory writable in the pod namespace (by virtiofsd, root, 0700).
func (s share) virtiofsdDir() string { return filepath.Join(s.dir, "virtiofsd") }

// inNS runs fn on a thread in the pod's mount namespace.
func (s share) inNS(fn func() error) error {
	return podns.Run(podns.Target{MountNS: s.pin()}, fn)
}

// vmmDevices are the host device nodes a VMM may open; those missing are
// left out of the pod namespace.
var vmmDevices = []string{
	"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
	"/dev/kvm", "/dev/net/tun", "/dev/vhost-net", "/dev/vhost-vsock",
}

// create makes the VM dir, its staging tree, the pod namespace (holding
// the system dirs, vmmDevices, the VM dir and vmmFiles: the QEMU and
// virtiofsd binaries, kernel and initrd) and the read-only export in it.
// On error the caller undoes it with destroy.
func (s share) create(vmmFiles []string) error {
	if err := os.MkdirAll(s.dir, 0o711); err != nil {
		return err
	}
	if err := mountfs.MakePrivateMount(s.dir); err != nil {
		return fmt.Errorf("isolating the VM dir: %w", err)
	}
	for _, d := range []string{s.staging(), s.export(), s.nsroot(), s.virtiofsdDir()} {
		if err := os.Mkdir(d, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	if err := os.Chmod(s.virtiofsdDir(), 0o700); err != nil {
		return err
	}
	root := podns.Root{
		ReadOnly:     slices.Clone(podns.SystemDirs),
		ReadOnlyDirs: []string{s.dir},
		Devices:      vmmDevices,
		Writable:     []string{s.virtiofsdDir()},
		Tmpfs:        []string{"/var/run"}, // virtiofsd's lock file
		Scratch:      s.nsroot(),
	}
	for _, f := range vmmFiles {
		if f != "" && !podns.Under(f, root.ReadOnly) {
			root.ReadOnly = append(root.ReadOnly, f)
		}
	}
	if err := podns.Create(s.pin(), root); err != nil {
		return fmt.Errorf("creating the pod mount namespace: %w", err)
	}
	return s.inNS(s.makeExport)
}

// makeExport binds staging read-only onto the export; it runs in the pod
// namespace.
func (s share) makeExport() error {
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

// destroy unmounts everything in the export, releases the pod namespace,
// unmounts everything below the VM dir and removes it. It fails, removing
// nothing across a mount, while anything stays mounted; a retry starts
// over. Idempotent. QEMU and virtiofsd must be gone: while one runs, the
// namespace (and so the copies in it) outlives its pin.
func (s share) destroy() error {
	if podns.Exists(s.pin()) {
		if err := s.inNS(func() error { return mountfs.UnmountAll(s.export()) }); err != nil {
			return fmt.Errorf("unmounting the export: %w", err)
		}
	}
	if err := podns.Release(s.pin()); err != nil {
		return err
	}
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

	// The copies are made here, in the host's namespace where their
	// sources are, and attached in the pod's.
	var trees []detached
	defer func() {
		for _, t := range trees {
			unix.Close(t.fd)
		}
	}()
	src, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("opening the rootfs: %w", err)
	}
	defer src.Close()
	tree, err := mountfs.Clone(int(src.Fd()), mountfs.BindOptions{Propagation: unix.MS_SLAVE})
	if err != nil {
		return fmt.Errorf("copying the rootfs: %w", err)
	}
	trees = append(trees, detached{fd: tree, at: id + "/rootfs", what: "the rootfs"})
	for _, b := range binds {
		opts := mountfs.BindOptions{Recursive: true, ReadOnly: b.readOnly, RecursiveReadOnly: b.recursiveReadOnly, Propagation: unix.MS_SLAVE}
		tree, err := mountfs.Clone(int(b.src.Fd()), opts)
		if err != nil {
			return fmt.Errorf("copying volume %d: %w", b.n, err)
		}
		trees = append(trees, detached{fd: tree, at: mountPointIn(id, b.n), what: fmt.Sprintf("volume %d", b.n)})
	}
	return s.inNS(func() error {
		exp, err := mountfs.OpenDir(s.export())
		if err != nil {
			return err
		}
		defer unix.Close(exp)
		for _, t := range trees {
			target, err := mountfs.OpenBeneath(exp, t.at, unix.O_PATH)
			if err != nil {
				return fmt.Errorf("exposing %s: %w", t.what, err)
			}
			err = mountfs.Attach(t.fd, target)
			unix.Close(target)
			if err != nil {
				return fmt.Errorf("exposing %s: %w", t.what, err)
			}
		}
		return nil
	})
}

// detached is a copy made by mountfs.Clone, to attach at "at" below the
// export.
type detached struct {
	fd       int
	at, what string
}

func mountPointIn(id string, n int) string { return id + "/mounts/" + strconv.Itoa(n) }

// unexpose undoes expose. Idempotent.
func (s share) unexpose(id string) error {
	if !validID(id) {
		return fmt.Errorf("container id %q: not a share entry", id)
	}
	if podns.Exists(s.pin()) {
		if err := s.inNS(func() error { return mountfs.UnmountAll(filepath.Join(s.export(), id)) }); err != nil {
			return err
		}
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

// validID holds for the hex IDs crivm makes, or a prefix of one: nothing
// that walks out of a directory.
func validID(id string) bool { return store.IsIDPrefix(id) }

// shareBinds opens the sources of binds. An untrusted pod's sources are
// the mount policy's descriptors (by the resolved path the spec names);
// one the policy did not check is refused. Image volumes, in any pod, are
// the server's descriptors of its read-only image mounts (by the path the
// spec names), which the spec binds read-only. A trusted pod's other
// sources are opened here. The caller closes what it opened (the returned
// closers).
func shareBinds(spec *specs.Spec, binds []agentproxy.HostBind, req *handlers.ContainerRequest) ([]shareBind, func(), error) {
	checked := map[string]*os.File{}
	for _, src := range req.Sources {
		checked[src.Resolved] = src.File
	}
	for _, v := range req.ImageVolumes {
		checked[v.Path] = v.File
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

// keepSubmountsWritable gives every submount of a readonly volume without
// recursive_read_only a guest bind of its own, after the volume's, with
// the submount's own read-only flag. In the guest the share is one
// filesystem, so the volume's read-only bind would cover its submounts,
// where runc makes only the top mount read-only. The submounts are the
// host's, read from its mount table when the copy is made; the guest has
// no say in them.
func keepSubmountsWritable(spec *specs.Spec, id string, binds []shareBind) error {
	for _, b := range binds {
		if !b.readOnly || b.recursiveReadOnly {
			continue
		}
		subs, err := submountsOf(b.src)
		if err != nil {
			return fmt.Errorf("listing volume %d's submounts: %w", b.n, err)
		}
		i := slices.IndexFunc(spec.Mounts, func(m specs.Mount) bool { return m.Source == agentproxy.GuestMountSource(id, b.n) })
		if i < 0 || len(subs) == 0 {
			continue
		}
		parent := spec.Mounts[i]
		var add []specs.Mount
		for _, sm := range subs {
			opts := []string{"rbind"}
			for _, o := range parent.Options {
				if !slices.Contains([]string{"ro", "rro", "rw", "bind", "rbind"}, o) {
					opts = append(opts, o)
				}
			}
			if sm.readOnly {
				opts = append(opts, "ro")
			}
			add = append(add, specs.Mount{
				Destination: path.Join(parent.Destination, sm.rel),
				Type:        "bind",
				Source:      path.Join(parent.Source, sm.rel),
				Options:     opts,
			})
		}
		spec.Mounts = slices.Insert(spec.Mounts, i+1, add...)
	}
	return nil
}

type submount struct {
	rel      string
	readOnly bool
}

// submountsOf lists the mounts below the directory src refers to in the
// host's mount table, parents first.
func submountsOf(src *os.File) ([]submount, error) {
	dir, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", src.Fd()))
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("volume source %q: not reachable from the host's root", dir)
	}
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, err
	}
	var out []submount
	for _, m := range infos {
		if m.Mountpoint == dir {
			continue
		}
		rel, err := filepath.Rel(dir, m.Mountpoint)
		if err != nil || rel == "." || strings.HasPrefix(rel, "../") {
			continue
		}
		out = append(out, submount{rel: rel, readOnly: slices.Contains(strings.Split(m.Options, ","), "ro")})
	}
	slices.SortStableFunc(out, func(a, b submount) int { return strings.Count(a.rel, "/") - strings.Count(b.rel, "/") })
	return slices.CompactFunc(out, func(a, b submount) bool { return a.rel == b.rel }), nil
}
