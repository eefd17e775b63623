package runc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/store"
)

// execProcess writes a process spec for cmd, derived from the container's
// own (user, env, cwd, capabilities, seccomp come with it), and returns its
// path. The caller removes it.
func (h *Handler) execProcess(c *store.Container, cmd []string, tty bool) (string, error) {
	if len(cmd) == 0 {
		return "", errdefs.InvalidArgument("exec command is empty")
	}
	if c.State != store.ContainerRunning {
		return "", errdefs.FailedPrecondition("container %s is not running (state %s)", c.ID, c.State)
	}
	b, err := os.ReadFile(filepath.Join(h.bundle(c.ID), "config.json"))
	if err != nil {
		return "", errdefs.FailedPrecondition("container %s has no bundle: %w", c.ID, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", fmt.Errorf("parsing spec: %w", err)
	}
	p := *spec.Process
	p.Args = cmd
	p.Terminal = tty
	p.ConsoleSize = nil
	f, err := os.CreateTemp(h.bundle(c.ID), "exec-*.json")
	if err != nil {
		return "", fmt.Errorf("writing exec process: %w", err)
	}
	defer f.Close()
	if err := json.NewEncoder(f).Encode(&p); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("writing exec process: %w", err)
	}
	return f.Name(), nil
}

// execCmd builds `runc exec` for a process file; pidFile receives the pid.
func (h *Handler) execCmd(id, processFile, pidFile string, extra ...string) *exec.Cmd {
	args := append(h.rt.globalArgs(), "exec", "--process", processFile, "--pid-file", pidFile)
	args = append(args, extra...)
	return exec.Command(h.rt.path, append(args, id)...)
}

// killExec kills the exec'd process (runc exec does not forward a kill).
func killExec(pidFile string) {
	if pid, err := readPidFile(pidFile); err == nil {
		unix.Kill(pid, unix.SIGKILL)
	}
}

// ExecSync runs cmd in the container and collects its output. When the
// timeout passes, the process is killed and the error is DeadlineExceeded.
func (h *Handler) ExecSync(ctx context.Context, c *store.Container, req handlers.ExecRequest) (*handlers.ExecResult, error) {
	pf, err := h.execProcess(c, req.Cmd, false)
	if err != nil {
		return nil, err
	}
	defer os.Remove(pf)
	pidFile := pf + ".pid"
	defer os.Remove(pidFile)
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	cmd := h.execCmd(c.ID, pf, pidFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running exec: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		killExec(pidFile)
		cmd.Process.Kill()
		<-done
		return nil, fmt.Errorf("exec %q in %s: %w", strings.Join(req.Cmd, " "), c.ID, ctx.Err())
	}
	res := &handlers.ExecResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.ExitCode = int32(ee.ExitCode())
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			res.ExitCode = 128 + int32(st.Signal())
		}
	default:
		return nil, fmt.Errorf("running exec: %w", err)
	}
	return res, nil
}

// Exec runs cmd with the caller's streams, with a terminal when asked.
func (h *Handler) Exec(ctx context.Context, c *store.Container, req handlers.StreamRequest) error {
	pf, err := h.execProcess(c, req.Cmd, req.TTY)
	if err != nil {
		return err
	}
	defer os.Remove(pf)
	pidFile := pf + ".pid"
	defer os.Remove(pidFile)

	var cmd *exec.Cmd
	var console *os.File
	if req.TTY {
		sockPath := pf + ".sock"
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sockPath, Net: "unix"})
		if err != nil {
			return fmt.Errorf("creating console socket: %w", err)
		}
		defer l.Close()
		defer os.Remove(sockPath)
		cmd = h.execCmd(c.ID, pf, pidFile, "--tty", "--console-socket", sockPath)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("running exec: %w", err)
		}
		console, err = receiveConsole(l)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return fmt.Errorf("receiving exec terminal: %w: %s", err, stderr.String())
		}
		defer console.Close()
	} else {
		cmd = h.execCmd(c.ID, pf, pidFile)
		cmd.Stdout, cmd.Stderr = req.Stdout, req.Stderr
		if req.Stdin != nil {
			cmd.Stdin = req.Stdin
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("running exec: %w", err)
		}
	}

	var copies sync.WaitGroup
	if console != nil {
		go resizeLoop(console, req.Resize)
		if req.Stdin != nil {
			go io.Copy(console, req.Stdin)
		}
		if req.Stdout != nil {
			copies.Go(func() { io.Copy(req.Stdout, console) })
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		killExec(pidFile)
		cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
	if console != nil {
		// The process is gone; the terminal drains and then reports EIO.
		copies.Wait()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return utilexec.CodeExitError{Err: err, Code: ee.ExitCode()}
	}
	return err
}

// receiveConsole accepts runc's connection on the console socket and takes
// the terminal master fd it sends.
func receiveConsole(l *net.UnixListener) (*os.File, error) {
	conn, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(name, oob)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("parsing console message: %v (%d messages)", err, len(msgs))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("parsing console fd: %v", err)
	}
	return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
}

func resizeLoop(console *os.File, resize <-chan remotecommand.TerminalSize) {
	for size := range resize {
		if size.Height == 0 && size.Width == 0 {
			continue
		}
		unix.IoctlSetWinsize(int(console.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
	}
}

// Attach connects the caller's streams to the container's stdio through
// conmon's attach socket. Output frames start with a byte naming the pipe.
func (h *Handler) Attach(ctx context.Context, c *store.Container, req handlers.StreamRequest) error {
	if c.State != store.ContainerRunning {
		return errdefs.FailedPrecondition("container %s is not running (state %s)", c.ID, c.State)
	}
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: h.attachSocket(c.ID), Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("connecting to the attach socket: %w", err)
	}
	defer conn.Close()
	if req.TTY {
		go func() {
			for size := range req.Resize {
				writeControl(h.bundle(c.ID), 1, int(size.Height), int(size.Width))
			}
		}()
	}
	if req.Stdin != nil {
		go func() {
			io.Copy(conn, req.Stdin)
			conn.CloseWrite()
		}()
	}
	out := make(chan error, 1)
	go func() { out <- copyAttachOutput(conn, req.Stdout, req.Stderr) }()
	select {
	case err := <-out:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Attach pipe numbers in conmon's frames.
const (
	attachStdout = 2
	attachStderr = 3
)

func copyAttachOutput(conn *net.UnixConn, stdout, stderr io.Writer) error {
	buf := make([]byte, 8193)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			var w io.Writer
			switch buf[0] {
			case attachStdout:
				w = stdout
			case attachStderr:
				w = stderr
			}
			if w != nil {
				if _, werr := w.Write(buf[1:n]); werr != nil {
					return werr
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
