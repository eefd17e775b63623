package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/store"
)

// exitCodeUnknown is reported for a container that died while the daemon was
// down and left no exit file, as CRI-O does.
const exitCodeUnknown = 255

// Reconcile brings the persisted records in line with the processes that
// really run, after a daemon restart. It never starts or kills anything:
// a sandbox whose process is gone (or, without a process, whose pinned
// namespaces are: sandboxAlive) becomes NotReady, a container whose
// process is gone becomes Exited with the code from its exit file if any.
// A container without a host process (it runs in a VM) is left to its
// handler, which asks the guest after the restart (Restore).
func Reconcile(ctx context.Context, st *store.Store) error {
	var errs []error
	for _, sb := range st.Sandboxes.List(nil) {
		if sb.State != store.SandboxReady || sandboxAlive(sb) {
			continue
		}
		_, err := st.Sandboxes.Update(sb.ID, func(s *store.Sandbox) error {
			s.State = store.SandboxNotReady
			return nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		log.G(ctx).Info("sandbox process gone while crivm was down: sandbox is NotReady", "sandbox", sb.ID, "name", sb.Name)
	}
	for _, c := range st.Containers.List(nil) {
		if c.State != store.ContainerRunning || c.Process == nil || processAlive(c.Process) {
			continue
		}
		_, err := st.Containers.Update(c.ID, func(c *store.Container) error {
			markExited(c)
			return nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		log.G(ctx).Info("container exited while crivm was down", "container", c.ID, "name", c.Name)
	}
	if len(errs) > 0 {
		return fmt.Errorf("reconciling store: %w", errors.Join(errs...))
	}
	return nil
}

func processAlive(p *store.Process) bool {
	return p != nil && proc.Alive(p.Pid, p.StartTime, p.BootID)
}

// markExited records the exit of a container whose process is gone. The exit
// file's code and mtime are used when the monitor wrote one.
func markExited(c *store.Container) {
	c.State = store.ContainerExited
	c.FinishedAt = time.Now()
	c.ExitCode, c.Reason = exitCodeUnknown, "Unknown"
	c.Message = "the container's process exited while crivm was down and left no exit code"
	if c.ExitFile == "" {
		return
	}
	code, err := proc.ReadExitFile(c.ExitFile)
	if err != nil {
		return
	}
	c.ExitCode, c.Message = code, ""
	c.Reason = "Completed"
	if code != 0 {
		c.Reason = "Error"
	}
	if fi, err := os.Stat(c.ExitFile); err == nil {
		c.FinishedAt = fi.ModTime()
	}
}

// Restore reattaches every handler to the ready sandboxes a previous daemon
// left running. A sandbox that cannot be reattached is marked NotReady.
func (s *RuntimeService) Restore(ctx context.Context) {
	for _, sb := range s.deps.Store.Sandboxes.List(func(sb *store.Sandbox) bool { return sb.State == store.SandboxReady }) {
		h, err := s.sandboxHandler(sb)
		if err != nil {
			continue
		}
		ctrs := s.deps.Store.Containers.List(func(c *store.Container) bool {
			return c.SandboxID == sb.ID && c.State != store.ContainerExited
		})
		if err := h.Restore(ctx, sb, ctrs); err != nil {
			log.G(ctx).Warn("cannot reattach to a sandbox: marking it NotReady", "sandbox", sb.ID, "err", err)
			s.setSandboxNotReady(ctx, sb.ID)
		}
	}
}
