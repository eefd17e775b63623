package agent

import (
	"context"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy/api"
)

// starter starts a process with the given stdio and returns its pid and
// the channel its wait status arrives on.
type starter func(stdio [3]*os.File) (pid int, exited <-chan unix.WaitStatus, err error)

// cmdStarter starts cmd through the reaper in its own process group.
func (s *Service) cmdStarter(cmd *exec.Cmd) starter {
	return func(stdio [3]*os.File) (int, <-chan unix.WaitStatus, error) {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio[0], stdio[1], stdio[2]
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &unix.SysProcAttr{}
		}
		cmd.SysProcAttr.Setpgid = true
		ch, err := s.reaper.Start(cmd)
		if err != nil {
			return 0, nil, err
		}
		defer cmd.Process.Release()
		return cmd.Process.Pid, ch, nil
	}
}

// runCollect starts a process with stdin fed from stdin and its stdout
// and stderr collected (each capped at MaxExecOutput). When ctx ends
// first, onCancel runs (it may kill what the process started), then the
// process (and its group) is killed; the response says TimedOut.
func (s *Service) runCollect(ctx context.Context, start starter, stdin []byte, onCancel func()) (*api.ExecProcessResponse, error) {
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW)
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW, outR, outW)
		return nil, err
	}
	pid, waitCh, err := start([3]*os.File{stdinR, outW, errW})
	// The child holds its own copies; the parent's ends must go so that
	// the readers see EOF when the child (and its children) exit.
	closeAll(stdinR, outW, errW)
	if err != nil {
		closeAll(stdinW, outR, errR)
		return nil, &startError{err}
	}

	go func() {
		stdinW.Write(stdin)
		stdinW.Close()
	}()
	var stdout, stderr cappedBuffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&stdout, outR) }()
	go func() { defer wg.Done(); io.Copy(&stderr, errR) }()

	resp := &api.ExecProcessResponse{}
	var ws unix.WaitStatus
	select {
	case ws = <-waitCh:
	case <-ctx.Done():
		if onCancel != nil {
			onCancel()
		}
		unix.Kill(-pid, unix.SIGKILL)
		unix.Kill(pid, unix.SIGKILL)
		ws = <-waitCh
		resp.TimedOut = true
	}
	// A daemon the command left behind may hold the pipes open; take what
	// arrived shortly after the exit and move on.
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(time.Second):
		outR.SetReadDeadline(time.Unix(1, 0))
		errR.SetReadDeadline(time.Unix(1, 0))
		<-drained
	}
	closeAll(outR, errR)
	resp.ExitCode = exitCode(ws)
	resp.Stdout, resp.StdoutTruncated = stdout.b.Bytes(), stdout.dropped
	resp.Stderr, resp.StderrTruncated = stderr.b.Bytes(), stderr.dropped
	return resp, nil
}

// startError is a command that could not be started at all.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
