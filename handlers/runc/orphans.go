package runc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/store"
)

// Orphans. Everything this handler keeps for a container (a pod's infra
// container too) is below its dir, named by the container's ID: the
// bundle (spec, conmon's pidfile), the runtime's state, the exit file,
// the attach socket dir and the user namespace staging. The handler's dir
// is this daemon's own (under its runroot), so an entry there named by an
// ID of crivm's form is crivm's.

var _ handlers.OrphanSweeper = (*Handler)(nil)

// idDir is a dir whose entries are named by container IDs, and what such
// an entry is.
type idDir struct{ dir, what string }

func (h *Handler) idDirs() []idDir {
	return []idDir{
		{filepath.Join(h.dir, "bundles"), "bundle"},
		{h.rt.root, "runtime state"},
		{h.exitDir(), "exit file"},
		{h.socketDir(), "attach socket dir"},
		{h.stagingRoot(), "user namespace staging"},
	}
}

// Owned lists the containers this handler holds state for, by ID.
func (h *Handler) Owned(ctx context.Context) ([]handlers.Owned, error) {
	found := map[string][]string{}
	for _, d := range h.idDirs() {
		entries, err := os.ReadDir(d.dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", d.dir, err)
		}
		for _, e := range entries {
			if store.IsID(e.Name()) {
				found[e.Name()] = append(found[e.Name()], d.what)
			}
		}
	}
	var out []handlers.Owned
	for _, id := range slices.Sorted(maps.Keys(found)) {
		what := found[id]
		if pid, fd, ok := h.monitorOf(id); ok {
			unix.Close(fd)
			what = append(what, fmt.Sprintf("conmon %d running", pid))
		}
		out = append(out, handlers.Owned{ID: id, Found: strings.Join(what, ", ")})
	}
	return out, nil
}

// ReleaseOrphan deletes container id with the runtime (--force: its
// processes are killed first) and what is left of its state, waits for
// its conmon to exit (killing it after monitorGrace), removes a cgroup the
// runtime left, and removes the bundle, exit file, sockets and staging.
func (h *Handler) ReleaseOrphan(ctx context.Context, id string) error {
	if !store.IsID(id) {
		return errdefs.InvalidArgument("runc orphan %q: not a container ID", id)
	}
	ctx = logger(ctx, id)
	// Found before the delete: the container's end ends conmon, and the
	// cleanup removes its pidfile.
	pid, fd, monitored := h.monitorOf(id)
	if monitored {
		defer unix.Close(fd)
	}
	if err := h.rt.delete(ctx, id); err != nil {
		return fmt.Errorf("deleting the container: %w", err)
	}
	// What the runtime no longer takes for a container (no state.json)
	// would be listed at every start.
	if err := os.RemoveAll(filepath.Join(h.rt.root, id)); err != nil {
		return fmt.Errorf("removing runtime state: %w", err)
	}
	// conmon writes the exit file as it ends: waited for before the
	// cleanup removes it.
	if monitored {
		if err := stopMonitor(fd, pid); err != nil {
			return err
		}
	}
	// Read from the bundle, so before the cleanup removes it.
	if err := h.removeLeftCgroup(id); err != nil {
		return err
	}
	return h.cleanupContainer(ctx, id)
}

// monitorOf finds conmon of container id from the pidfile in its bundle,
// checked against the process's command line (this bundle and this
// container) once a pidfd pins it, so that a recycled pid is never taken
// for it. The caller closes fd.
func (h *Handler) monitorOf(id string) (pid, fd int, ok bool) {
	b := h.bundle(id)
	pid, err := readPidFile(filepath.Join(b, "conmon.pid"))
	if err != nil || pid <= 0 {
		return 0, -1, false
	}
	fd, err = unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, -1, false
	}
	if !monitors(pid, b, id) {
		unix.Close(fd)
		return 0, -1, false
	}
	return pid, fd, true
}

// monitors reports whether process pid is a conmon run with bundle b for
// container id (createUnderMonitor's -b and -c).
func monitors(pid int, b, id string) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	pairs := adjacent(strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00"))
	return slices.Contains(pairs, "-b\x00"+b) && slices.Contains(pairs, "-c\x00"+id)
}

// adjacent joins each argument with the next, NUL between.
func adjacent(args []string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		out = append(out, args[i]+"\x00"+args[i+1])
	}
	return out
}

// monitorGrace bounds conmon's own exit after its container's before it
// is killed; monitorKillWait bounds its death after SIGKILL.
const (
	monitorGrace    = 2 * time.Second
	monitorKillWait = 5 * time.Second
)

// stopMonitor waits for the conmon fd pins to exit, and kills it after
// monitorGrace.
func stopMonitor(fd, pid int) error {
	if pidfdExited(fd, monitorGrace) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("killing conmon %d: %w", pid, err)
	}
	if !pidfdExited(fd, monitorKillWait) {
		return fmt.Errorf("killing conmon %d: still running %s after SIGKILL", pid, monitorKillWait)
	}
	return nil
}

// pidfdExited waits up to d for the process of pidfd fd to exit.
func pidfdExited(fd int, d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for deadline := time.Now().Add(d); ; {
		n, err := unix.Poll(fds, int(max(time.Until(deadline), 0).Milliseconds()))
		if err == nil {
			return n > 0
		}
		if !errors.Is(err, unix.EINTR) {
			return false
		}
	}
}

// removeLeftCgroup removes the cgroup container id's spec names when the
// runtime left it (its state was gone before its cgroup): only a
// cgroupfs path whose last element is crivm's name for id, and only
// while empty. The systemd driver's scope goes with its processes.
func (h *Handler) removeLeftCgroup(id string) error {
	spec, err := h.readSpec(id)
	if err != nil || spec.Linux == nil {
		return nil // no bundle: nothing names a cgroup
	}
	p := spec.Linux.CgroupsPath
	if strings.Contains(p, ":") || !strings.HasPrefix(p, "/") || filepath.Base(p) != "crivm-"+id || filepath.Clean(p) != p {
		return nil
	}
	dirs := []string{filepath.Join("/sys/fs/cgroup", p)}
	if !h.host.Cgroups.V2 {
		dirs, _ = filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", p))
	}
	var errs []error
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
