package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/internal/log"
)

// PauseArg is the argument on which crivm-agent runs Pause instead of
// being PID 1.
const PauseArg = "pause"

// Pause is the life of the pod's PID namespace holder: PID 1 of that
// namespace, it reaps the orphans reparented to it and otherwise sleeps.
// Signals from inside the namespace do not reach it (PID 1 without
// handlers); the agent ends it with SIGKILL.
func Pause() {
	// Shown as PID 1 inside the pod ("init" would be the agent binary's
	// name), as the infra container's pause of a runc pod.
	os.WriteFile("/proc/self/comm", []byte("pause"), 0)
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for s := range sig {
		if s != syscall.SIGCHLD {
			continue
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
		}
	}
}

// pidHolder is the running holder of the pod's PID namespace.
type pidHolder struct {
	pid    int
	exited <-chan unix.WaitStatus
}

// ensurePIDHolder starts the PID namespace holder (crivm-agent pause in a
// new PID namespace) and binds its namespace at
// agentproxy.GuestPIDNamespace, unless that is done already.
func (s *Service) ensurePIDHolder(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pidHolder != nil {
		select {
		case <-s.pidHolder.exited:
			// It died (it should not); containers that joined its
			// namespace are gone with it. Start a new one.
			unix.Unmount(agentproxy.GuestPIDNamespace, unix.MNT_DETACH)
			s.pidHolder = nil
		default:
			return nil
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("starting the pid namespace holder: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        []string{"crivm-agent", PauseArg},
		SysProcAttr: &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID, Setsid: true},
	}
	ch, err := s.reaper.Start(cmd)
	if err != nil {
		return fmt.Errorf("starting the pid namespace holder: %w", err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	h := &pidHolder{pid: pid, exited: ch}
	fail := func(err error) error {
		unix.Kill(pid, unix.SIGKILL)
		return fmt.Errorf("pinning the pod pid namespace: %w", err)
	}
	target := agentproxy.GuestPIDNamespace
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(target, nil, 0o444); err != nil && !errors.Is(err, os.ErrExist) {
		return fail(err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/pid", pid), target, "", unix.MS_BIND, ""); err != nil {
		return fail(err)
	}
	s.pidHolder = h
	log.G(ctx).Debug("pod pid namespace holder started", "pid", pid)
	return nil
}

// stopPIDHolder kills the holder and unbinds its namespace. s.mu is held.
func (s *Service) stopPIDHolder(ctx context.Context) {
	h := s.pidHolder
	if h == nil {
		return
	}
	s.pidHolder = nil
	unix.Unmount(agentproxy.GuestPIDNamespace, unix.MNT_DETACH)
	unix.Kill(h.pid, unix.SIGKILL)
	select {
	case <-h.exited:
	case <-time.After(5 * time.Second):
		log.G(ctx).Warn("pid namespace holder outlived SIGKILL", "pid", h.pid)
	}
}
