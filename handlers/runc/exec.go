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
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/envlist"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/store"
)

// execProcess writes a process spec for cmd, derived from the container's
// own (user, env, cwd, capabilities, seccomp come with it), and returns its
// path. The caller removes it. With a terminal, TERM is xterm, as
// containerd sets it for exec (whatever TERM the container has), and size,
// when known, is the terminal's size from the first instruction (runc
// sizes the console before it execs the process; a resize after the start
// races the process's first look at it).
func (h *Handler) execProcess(c *store.Container, cmd []string, tty bool, size *remotecommand.TerminalSize) (string, error) {
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
	if tty {
		p.Env = envlist.Set(p.Env, "TERM=xterm")
		if size != nil && size.Width > 0 && size.Height > 0 {
			p.ConsoleSize = &specs.Box{Height: uint(size.Height), Width: uint(size.Width)}
		}
	}
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

// execKillGrace bounds how long runc exec may take to reap the process it
// ran once that is killed; then runc itself is killed.
var execKillGrace = 5 * time.Second

// waitExec waits for runc exec. When ctx ends first, it kills the exec'd
// process and returns once that has been reaped, so a timed-out exec leaves
// nothing in the container, not even a zombie. runc reaps it: runc is the
// process's parent and exits once it has collected its status. Killing
// runc first would orphan the process to the host's init (or a
// subreaper), which may never reap it, and the zombie would stay visible
// in the container's PID namespace. runc is killed only when it has not
// exited within execKillGrace.
func waitExec(ctx context.Context, cmd *exec.Cmd, pidFile string) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	// runc writes the pid file once the process runs; until then it may
	// still be starting it.
	grace := time.NewTimer(execKillGrace)
	defer grace.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	pid := 0
	for {
		if pid == 0 {
			// The pid is runc's unreaped child: it cannot have been
			// recycled while runc runs.
			if p, err := readPidFile(pidFile); err == nil && p > 0 {
				pid = p
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		select {
		case <-done:
			// runc has reaped what it started (or exited before it
			// started anything).
			return ctx.Err()
		case <-poll.C:
		case <-grace.C:
			cmd.Process.Kill()
			<-done
			if pid != 0 {
				waitGone(pid, execKillGrace)
			}
			return ctx.Err()
		}
	}
}

// waitGone waits up to timeout for pid to leave the process table (to be
// reaped by whoever inherited it).
func waitGone(pid int, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if unix.Kill(pid, 0) == unix.ESRCH {
			return
		}
	}
}

// ExecSync runs cmd in the container and collects its output. When the
// timeout passes, the process is killed and the error is DeadlineExceeded.
func (h *Handler) ExecSync(ctx context.Context, c *store.Container, req handlers.ExecRequest) (*handlers.ExecResult, error) {
	pf, err := h.execProcess(c, req.Cmd, false, nil)
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
	if err = waitExec(ctx, cmd, pidFile); ctx.Err() != nil {
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
	var size *remotecommand.TerminalSize
	if req.TTY {
		size = firstSize(req.Resize)
	}
	pf, err := h.execProcess(c, req.Cmd, req.TTY, size)
	if err != nil {
		return err
	}
	defer os.Remove(pf)
	pidFile := pf + ".pid"
	defer os.Remove(pidFile)

	var cmd *exec.Cmd
	var console *os.File
	if req.TTY {
		// runc in the foreground copies between its own terminal and the
		// container's; give it a pty whose master is ours. Resizing the
		// master sends runc SIGWINCH, and runc passes the size on.
		master, slave, err := openPTY()
		if err != nil {
			return fmt.Errorf("allocating a terminal: %w", err)
		}
		defer master.Close()
		if size != nil {
			setSize(master, *size)
		}
		cmd = h.execCmd(c.ID, pf, pidFile, "--tty")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		err = cmd.Start()
		slave.Close()
		if err != nil {
			return fmt.Errorf("running exec: %w", err)
		}
		console = master
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
	if err = waitExec(ctx, cmd, pidFile); ctx.Err() != nil {
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

func resizeLoop(console *os.File, resize <-chan remotecommand.TerminalSize) {
	for size := range resize {
		setSize(console, size)
	}
}

func setSize(f *os.File, size remotecommand.TerminalSize) {
	if size.Height == 0 && size.Width == 0 {
		return
	}
	unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
}

// firstSize waits briefly for the client's first terminal size, which
// it sends as the session opens, so the process starts at the right size.
func firstSize(resize <-chan remotecommand.TerminalSize) *remotecommand.TerminalSize {
	if resize == nil {
		return nil
	}
	select {
	case size, ok := <-resize:
		if ok {
			return &size
		}
	case <-time.After(200 * time.Millisecond):
	}
	return nil
}

// openPTY opens a new pseudo-terminal pair.
func openPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlocking pty: %w", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("reading pty number: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// Attach connects the caller's streams to the container's stdio through
// conmon's attach socket. Output frames start with a byte naming the pipe.
func (h *Handler) Attach(ctx context.Context, c *store.Container, req handlers.StreamRequest) error {
	if c.State != store.ContainerRunning {
		return errdefs.FailedPrecondition("container %s is not running (state %s)", c.ID, c.State)
	}
	conn, err := dialAttach(h.attachSocket(c.ID))
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

// dialAttach connects to conmon's attach socket. The path may be longer than
// a sockaddr holds, so it is reached through an fd of its directory, as
// conmon itself binds it.
func dialAttach(path string) (*net.UnixConn, error) {
	dir, err := os.OpenFile(filepath.Dir(path), unix.O_PATH, 0)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	short := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	return net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: short, Net: "unixpacket"})
}
