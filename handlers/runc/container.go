package runc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/store"
)

// CreateContainer generates the spec and runs `runc create` under conmon.
// The container joins the infra process's namespaces, or the pinned ones
// of a pod without an infra container.
func (h *Handler) CreateContainer(ctx context.Context, sb *store.Sandbox, req *handlers.ContainerRequest) (*handlers.ContainerCreated, error) {
	c := req.Container
	ctx = logger(ctx, c.ID)
	spec, err := h.containerSpec(ctx, sb, req)
	if err != nil {
		return nil, err
	}
	user := handlers.SpecUser(spec)
	failed := true
	if spec.Linux.UIDMappings != nil {
		// Staged for runc (userns.go): the bind sources until create returns.
		mapped := map[string]bool{}
		for _, v := range req.ImageVolumes {
			mapped[v.Path] = true
		}
		if err := h.stageUserns(ctx, c.ID, spec, fmt.Sprintf("/proc/%d/ns/user", sb.Process.Pid), mapped); err != nil {
			return nil, fmt.Errorf("preparing mounts for the user namespace: %w", err)
		}
		defer func() {
			// The rootfs stays until RemoveContainer; after a failure
			// runContainer has removed the container and nothing stays.
			if err := h.unstageUserns(c.ID, !failed); err != nil {
				log.G(ctx).Warn("unstaging user namespace mounts", "err", err)
			}
		}()
	}
	p, err := h.runContainer(ctx, c.ID, c.Name, spec, req.LogPath, monitorOptions{
		Terminal: req.Config.GetTty(), Stdin: req.Config.GetStdin(), StdinOnce: req.Config.GetStdinOnce(),
	})
	failed = err != nil
	if err != nil {
		return nil, err
	}
	return &handlers.ContainerCreated{Process: p, ExitFile: h.exitFile(c.ID), User: user}, nil
}

// containerSpec generates the container's spec: its namespaces are the
// infra process's, or the pinned ones of a pod without an infra container.
func (h *Handler) containerSpec(ctx context.Context, sb *store.Sandbox, req *handlers.ContainerRequest) (*specs.Spec, error) {
	host := h.host
	host.Warnf = func(format string, args ...any) { log.G(ctx).Warn(fmt.Sprintf(format, args...)) }
	host.UserNamespaces = h.usernsSupported()
	in := oci.ContainerSpecInput{
		Host:           host,
		ID:             req.Container.ID,
		SandboxID:      sb.ID,
		Sandbox:        req.SandboxConfig,
		Config:         req.Config,
		Image:          req.Image,
		RootfsPath:     req.Rootfs,
		ResolvConfPath: req.ResolvConfPath,
		HostsPath:      req.HostsPath,
		HostnamePath:   req.HostnamePath,
		ShmPath:        req.ShmPath,
		ImageVolumes:   req.ImageVolumePaths(),
	}
	switch {
	case sb.Process != nil:
		if !proc.Alive(sb.Process.Pid, sb.Process.StartTime, sb.Process.BootID) {
			return nil, errdefs.FailedPrecondition("sandbox %s is not running: its infra process is gone", sb.ID)
		}
		in.SandboxPid = sb.Process.Pid
	case hasInfra(sb):
		return nil, errdefs.FailedPrecondition("sandbox %s is not running: it has no infra process", sb.ID)
	default:
		paths, err := pinnedNamespacePaths(sb, req.Config)
		if err != nil {
			return nil, err
		}
		in.NamespacePaths = paths
	}
	if req.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_TARGET {
		// Checked against its start time: the pid is the target's, not a
		// recycled one, when runc opens the path just after.
		t := req.Target
		if t == nil || !proc.Alive(t.Pid, t.StartTime, t.BootID) {
			return nil, errdefs.FailedPrecondition("the target container of the PID namespace is not running")
		}
		if in.NamespacePaths == nil {
			in.NamespacePaths = map[specs.LinuxNamespaceType]string{}
		}
		in.NamespacePaths[specs.PIDNamespace] = fmt.Sprintf("/proc/%d/ns/pid", t.Pid)
	}
	spec, err := oci.ContainerSpec(in)
	if err != nil {
		return nil, fmt.Errorf("generating spec: %w", err)
	}
	return spec, nil
}

// StartContainer runs `runc start`. A container that exits at once is
// reported exited, with its code.
func (h *Handler) StartContainer(ctx context.Context, sb *store.Sandbox, c *store.Container) (*handlers.ContainerState, error) {
	ctx = logger(ctx, c.ID)
	// Taken before the start, so a process that exits at once is never
	// reported finished before it started.
	started := time.Now()
	if err := h.rt.start(ctx, c.ID); err != nil {
		if st, ok, _ := h.exitState(c.ID); ok {
			return st, fmt.Errorf("starting container: %w (exit code %d)", err, st.ExitCode)
		}
		return nil, fmt.Errorf("starting container: %w", err)
	}
	st := &handlers.ContainerState{State: store.ContainerRunning, StartedAt: started, Process: c.Process}
	if ex, ok, _ := h.exitState(c.ID); ok {
		ex.StartedAt = st.StartedAt
		return ex, nil
	}
	return st, nil
}

// StopContainer sends the stop signal, waits, then SIGKILLs.
func (h *Handler) StopContainer(ctx context.Context, c *store.Container, opts handlers.StopOptions) (*handlers.ContainerState, error) {
	return h.stop(logger(ctx, c.ID), c.ID, opts)
}

func (h *Handler) stop(ctx context.Context, id string, opts handlers.StopOptions) (*handlers.ContainerState, error) {
	if st, ok, err := h.exitState(id); ok || err != nil {
		return st, err
	}
	sig := opts.Signal
	if sig == 0 {
		sig = int(syscall.SIGTERM)
	}
	// runc has no such container (it was never created, or a crash came
	// between its creation and its record): there is nothing to stop.
	gone := &handlers.ContainerState{State: store.ContainerExited, ExitCode: 137, Reason: "Error",
		FinishedAt: time.Now(), Message: "the OCI runtime has no such container"}
	if opts.Timeout > 0 {
		err := h.rt.kill(ctx, id, sig, false)
		switch {
		case errors.Is(err, errNotExist):
			return gone, nil
		case err != nil:
			log.G(ctx).Warn("stop signal failed; killing", "signal", sig, "err", err)
		default:
			if st, ok, err := h.waitExit(ctx, id, opts.Timeout); ok || err != nil {
				return st, err
			}
		}
	}
	if err := h.rt.kill(ctx, id, int(syscall.SIGKILL), true); errors.Is(err, errNotExist) {
		return gone, nil
	} else if err != nil {
		return nil, fmt.Errorf("killing container: %w", err)
	}
	st, ok, err := h.waitExit(ctx, id, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if !ok {
		// A container that was created but never started has no exit to
		// wait for once runc kills its init: conmon still writes one, but
		// give up here rather than hang.
		return &handlers.ContainerState{State: store.ContainerExited, ExitCode: 137, Reason: "Error",
			FinishedAt: time.Now(), Message: "no exit code after SIGKILL"}, nil
	}
	return st, nil
}

// RemoveContainer deletes the runtime state, bundle and exit file.
func (h *Handler) RemoveContainer(ctx context.Context, c *store.Container) error {
	return h.cleanupContainer(logger(ctx, c.ID), c.ID)
}

// ContainerState reads the exit file; a running container's process is
// checked so that a container whose monitor died is not reported running.
func (h *Handler) ContainerState(ctx context.Context, c *store.Container) (*handlers.ContainerState, error) {
	st, ok, err := h.exitState(c.ID)
	if err != nil {
		return nil, fmt.Errorf("reading exit state: %w", err)
	}
	if ok {
		return st, nil
	}
	cur := &handlers.ContainerState{State: c.State, StartedAt: c.StartedAt, Process: c.Process}
	if c.State == store.ContainerRunning && (c.Process == nil || !proc.Alive(c.Process.Pid, c.Process.StartTime, c.Process.BootID)) {
		// The process is gone but conmon wrote nothing: give it a moment.
		if st, ok, _ := h.waitExit(ctx, c.ID, 2*time.Second); ok {
			return st, nil
		}
		return &handlers.ContainerState{State: store.ContainerExited, ExitCode: 255, Reason: "Error",
			FinishedAt: time.Now(), Message: "the container's process is gone and its monitor left no exit code"}, nil
	}
	return cur, nil
}

// ReopenLog asks conmon to reopen the log file (after the kubelet rotated
// it) and returns once it has: the kubelet, and critest, expect the file
// at the log path as soon as the call returns. conmon answers nothing on
// its control FIFO; it reopens by creating a new file and renaming it onto
// the log path, so the path's inode changes, which is what is awaited (as
// CRI-O watches for that file to be created).
func (h *Handler) ReopenLog(ctx context.Context, c *store.Container) error {
	if c.State != store.ContainerRunning {
		return errdefs.FailedPrecondition("container %s is not running", c.ID)
	}
	logPath := c.LogPath
	if logPath == "" {
		logPath = filepath.Join(h.bundle(c.ID), "output.log")
	}
	before := fileIno(logPath)
	if err := writeControl(h.bundle(c.ID), 2, 0, 0); err != nil {
		return err
	}
	return waitReopened(ctx, logPath, before, c.Process, reopenTimeout)
}

// reopenTimeout bounds the wait for conmon to reopen a log.
const reopenTimeout = 10 * time.Second

// fileIno is path's inode number, 0 when it does not exist.
func fileIno(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// waitReopened waits until a file other than the one with inode before
// (0: none) is at path. It fails when the container's process ends first
// (conmon, which exits with it, will not reopen) or after timeout.
func waitReopened(ctx context.Context, path string, before uint64, p *store.Process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if ino := fileIno(path); ino != 0 && ino != before {
			return nil
		}
		if p != nil && !proc.Alive(p.Pid, p.StartTime, p.BootID) {
			return errdefs.FailedPrecondition("the container exited before its log was reopened")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("conmon did not reopen %s within %v", path, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for conmon to reopen %s: %w", path, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
