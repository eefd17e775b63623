package runc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/log"
)

// monitorOptions describe one container started under conmon.
type monitorOptions struct {
	ID, Name   string
	Bundle     string
	LogPath    string // "" for none
	Terminal   bool
	Stdin      bool
	StdinOnce  bool
	CreateWait time.Duration
}

// syncInfo is what conmon writes on the sync pipe once runc create is
// done. Without --api-version (as CRI-O runs it) the pid is in "pid".
type syncInfo struct {
	Pid     int    `json:"pid"`
	Message string `json:"message,omitempty"`
}

// createUnderMonitor runs conmon, which runs `runc create` and then stays as
// the container's monitor: it holds its stdio, writes the CRI log and, when
// the container exits, the exit file and (on OOM) bundle/oom. It returns
// the container's init pid and conmon's pid. A failure the request caused
// is classified (runtimeErrorClass).
func (h *Handler) createUnderMonitor(ctx context.Context, o monitorOptions) (pid, monitorPid int, err error) {
	syncParent, syncChild, err := socketPair()
	if err != nil {
		return 0, 0, fmt.Errorf("creating sync pipe: %w", err)
	}
	defer syncParent.Close()
	startChild, startParent, err := socketPair()
	if err != nil {
		syncChild.Close()
		return 0, 0, fmt.Errorf("creating start pipe: %w", err)
	}
	defer startParent.Close()

	args := []string{
		"-b", o.Bundle,
		"-c", o.ID,
		"-u", o.ID,
		"-n", o.Name,
		"-r", h.rt.path,
		"--runtime-arg", "--root=" + h.rt.root,
		"--runtime-arg", "--log=" + filepath.Join(o.Bundle, "runtime.log"),
		"--runtime-arg", "--log-format=json",
		"-p", filepath.Join(o.Bundle, "pidfile"),
		"-P", filepath.Join(o.Bundle, "conmon.pid"),
		"--persist-dir", o.Bundle,
		"--exit-dir", h.exitDir(),
		"--socket-dir-path", h.socketDir(),
		"--log-level", "error",
	}
	if h.rt.systemd {
		args = append(args, "-s")
	}
	// conmon insists on a log; without a CRI log path (the infra
	// container), the output stays in the bundle.
	logPath := o.LogPath
	if logPath == "" {
		logPath = filepath.Join(o.Bundle, "output.log")
	}
	args = append(args, "-l", "k8s-file:"+logPath)
	switch {
	case o.Terminal:
		args = append(args, "-t")
	case o.Stdin:
		if !o.StdinOnce {
			args = append(args, "--leave-stdin-open")
		}
		args = append(args, "-i")
	}
	cmd := exec.Command(h.monitorPath, args...)
	cmd.Dir = o.Bundle
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.ExtraFiles = []*os.File{syncChild, startChild} // fds 3 and 4
	cmd.Env = []string{"_OCI_SYNCPIPE=3", "_OCI_STARTPIPE=4", "PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	log.G(ctx).Debug("starting conmon", "path", h.monitorPath, "args", args)
	err = cmd.Start()
	syncChild.Close()
	startChild.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("starting conmon: %w", err)
	}
	// conmon waits for this byte before it forks the runtime.
	if _, err := startParent.Write([]byte{0}); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, 0, fmt.Errorf("signalling conmon to start: %w", err)
	}
	// The first conmon process exits once its child has taken over.
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		return 0, 0, classify(fmt.Errorf("conmon: %w: %s", err, msg), msg)
	}

	type result struct {
		si  syncInfo
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var si syncInfo
		err := json.NewDecoder(syncParent).Decode(&si)
		ch <- result{si, err}
	}()
	timeout := o.CreateWait
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	var si syncInfo
	select {
	case r := <-ch:
		if r.err != nil {
			return 0, 0, fmt.Errorf("reading container pid from conmon: %w", r.err)
		}
		si = r.si
	case <-time.After(timeout):
		return 0, 0, fmt.Errorf("runtime create did not finish within %v", timeout)
	case <-ctx.Done():
		return 0, 0, fmt.Errorf("waiting for runtime create: %w", ctx.Err())
	}
	if si.Pid <= 0 {
		msg := strings.TrimSpace(si.Message)
		if rl := runtimeError(filepath.Join(o.Bundle, "runtime.log")); rl != "" {
			msg = rl
		}
		return 0, 0, classify(fmt.Errorf("runtime create failed: %s", msg), msg)
	}
	monitorPid, err = readPidFile(filepath.Join(o.Bundle, "conmon.pid"))
	if err != nil {
		return 0, 0, err
	}
	return si.Pid, monitorPid, nil
}

func socketPair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_LOCAL, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[1]), "parent"), os.NewFile(uintptr(fds[0]), "child"), nil
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("parsing pid file %s: %w", path, err)
	}
	return pid, nil
}

// writeControl sends conmon a control message through bundle/ctl:
// "1 H W" resizes the terminal, "2 0 0" reopens the log file.
func writeControl(bundle string, kind, a, b int) error {
	f, err := os.OpenFile(filepath.Join(bundle, "ctl"), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("opening conmon control file: %w", err)
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%d %d %d\n", kind, a, b)
	return err
}

// runtimeError returns the last error the runtime logged in its JSON log.
func runtimeError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var last string
	for _, line := range strings.Split(string(b), "\n") {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			last = e.Msg
		}
	}
	return last
}
