package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy/api"
)

// Guest paths of the container runtime.
const (
	// RuncRoot is runc's state directory (--root).
	RuncRoot = "/run/runc"
	// BundleRoot holds one bundle directory per container.
	BundleRoot = "/run/crivm/bundles"
	// consoleDir holds the --console-socket sockets: bundle paths of
	// 64-character ids are too long for sun_path.
	consoleDir = "/run/crivm/console"
)

// runcTimeout bounds one runc invocation other than exec: under TCG a
// create takes well under a second, but a loaded guest is slow.
const runcTimeout = 2 * time.Minute

// runcCmd returns `runc --root RuncRoot [--log logFile] args...` in its own
// process group. Its stdio is the caller's to set.
func runcCmd(logFile string, args ...string) (*exec.Cmd, error) {
	path, err := lookPath("runc", nil)
	if err != nil {
		return nil, fmt.Errorf("finding runc: %w", err)
	}
	argv := []string{"runc", "--root", RuncRoot}
	if logFile != "" {
		argv = append(argv, "--log", logFile, "--log-format", "json")
	}
	return &exec.Cmd{
		Path:        path,
		Args:        append(argv, args...),
		Env:         []string{"PATH=" + GuestPath},
		SysProcAttr: &unix.SysProcAttr{Setpgid: true},
	}, nil
}

// runCollect runs cmd through the reaper with stdin fed from stdin and its
// stdout and stderr collected (each capped at MaxExecOutput). When ctx
// ends first, onCancel runs (it may kill what cmd started), then cmd's
// process group is killed; the response says TimedOut. cmd's stdio must be
// unset.
func (s *Service) runCollect(ctx context.Context, cmd *exec.Cmd, stdin []byte, onCancel func()) (*api.ExecProcessResponse, error) {
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
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, outW, errW
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &unix.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	waitCh, err := s.reaper.Start(cmd)
	// The child holds its own copies; the parent's ends must go so that
	// the readers see EOF when the child (and its children) exit.
	closeAll(stdinR, outW, errW)
	if err != nil {
		closeAll(stdinW, outR, errR)
		return nil, &startError{err}
	}
	defer cmd.Process.Release()
	pid := cmd.Process.Pid

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

// runc runs one runc subcommand to completion and turns a failure into an
// error carrying runc's message (from stderr, else from its log).
func (s *Service) runc(ctx context.Context, logFile string, args ...string) error {
	cmd, err := runcCmd(logFile, args...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, runcTimeout)
	defer cancel()
	r, err := s.runCollect(ctx, cmd, nil, nil)
	if err != nil {
		return fmt.Errorf("running runc %s: %w", args[0], err)
	}
	if r.TimedOut {
		return fmt.Errorf("runc %s: timed out", args[0])
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("runc %s: exit %d: %s", args[0], r.ExitCode, runcMessage(r.Stderr, logFile))
	}
	return nil
}

// runcMessage is runc's error: its stderr, or the last error of its JSON
// log when stderr is empty (runc create's stderr is the container's).
func runcMessage(stderr []byte, logFile string) string {
	if msg := strings.TrimSpace(string(stderr)); msg != "" {
		return msg
	}
	if logFile == "" {
		return "no message"
	}
	return lastLogError(logFile)
}

// lastLogError returns the last error-level message of a runc JSON log.
func lastLogError(logFile string) string {
	f, err := os.Open(logFile)
	if err != nil {
		return "no message"
	}
	defer f.Close()
	msg := "no message"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			msg = e.Msg
		}
	}
	return msg
}

// consoleSocket receives the pty master runc sends over
// --console-socket.
type consoleSocket struct {
	l    *net.UnixListener
	path string
	got  chan consoleResult
}

type consoleResult struct {
	f   *os.File
	err error
}

// newConsoleSocket listens on a fresh socket in consoleDir.
func newConsoleSocket() (*consoleSocket, error) {
	if err := os.MkdirAll(consoleDir, 0o700); err != nil {
		return nil, fmt.Errorf("listening for the console: %w", err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	path := filepath.Join(consoleDir, hex.EncodeToString(rnd[:])+".sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening for the console: %w", err)
	}
	cs := &consoleSocket{l: l, path: path, got: make(chan consoleResult, 1)}
	go func() {
		f, err := cs.accept()
		cs.got <- consoleResult{f, err}
	}()
	return cs, nil
}

func (cs *consoleSocket) accept() (*os.File, error) {
	conn, err := cs.l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("receiving the console: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) == 0 {
		return nil, fmt.Errorf("receiving the console: no control message (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("receiving the console: want one fd, got %d (%v)", len(fds), err)
	}
	// Non-blocking, so the *os.File is pollable and write deadlines work
	// (a process that never reads its terminal cannot wedge WriteStdin).
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("receiving the console: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), string(bytes.TrimRight(buf[:n], "\x00"))), nil
}

// wait returns the received master, or an error when none came within
// timeout. It closes the listener.
func (cs *consoleSocket) wait(timeout time.Duration) (*os.File, error) {
	defer cs.close()
	select {
	case r := <-cs.got:
		return r.f, r.err
	case <-time.After(timeout):
		return nil, fmt.Errorf("receiving the console: runc sent none within %v", timeout)
	}
}

func (cs *consoleSocket) close() {
	cs.l.Close()
	os.Remove(cs.path)
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// readPid reads a runc pid file.
func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var pid int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &pid); err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", path, b)
	}
	return pid, nil
}

// procCgroup returns the cgroup v2 directory of pid.
func procCgroup(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(cgroupRoot, p), nil
		}
	}
	return "", fmt.Errorf("pid %d has no cgroup v2 entry", pid)
}
