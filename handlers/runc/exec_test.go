package runc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/store"
)

// TestWaitExecTimeout: when an exec's context ends, waitExec kills the
// exec'd process and returns only once it has been reaped, so nothing of
// it is left (critest's "execSync with timeout" looks for it with pgrep
// right away). A fake runc stands in: it runs the process as its child,
// writes its pid file and waits for it, as `runc exec` does. This test
// process is made a child subreaper, so an orphaned process would be
// reparented here and stay a zombie, as under an init that does not reap.
func TestWaitExecTimeout(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a child subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	defer func(g time.Duration) { execKillGrace = g }(execKillGrace)
	execKillGrace = 500 * time.Millisecond

	tests := []struct {
		name string
		// script is the fake runc: $0 is the pid file.
		script   string
		timeout  time.Duration
		wantCode int  // when the process ends before the timeout
		reaped   bool // the exec'd process must be gone on return
		maxTime  time.Duration
	}{
		{name: "times out: killed and reaped", script: `sleep 60 & echo $! > "$0"; wait $!`,
			timeout: 300 * time.Millisecond, reaped: true, maxTime: 2 * time.Second},
		{name: "times out before the pid file", script: `sleep 0.2; sleep 60 & echo $! > "$0"; wait $!`,
			timeout: 50 * time.Millisecond, reaped: true, maxTime: 2 * time.Second},
		{name: "ends first: its status", script: `sh -c 'exit 3' & echo $! > "$0"; wait $!`,
			timeout: 10 * time.Second, wantCode: 3, maxTime: 2 * time.Second},
		// A runc that never reaps nor exits is killed after the grace.
		{name: "runc hangs: bounded", script: `sleep 60 & echo $! > "$0"; exec sleep 60`,
			timeout: 100 * time.Millisecond, maxTime: 100*time.Millisecond + 3*execKillGrace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			cmd := exec.Command("sh", "-c", tt.script, pidFile)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			start := time.Now()
			err := waitExec(ctx, cmd, pidFile)
			took := time.Since(start)
			pid, perr := readPidFile(pidFile)
			if perr == nil {
				// Reap whatever was orphaned to this process.
				t.Cleanup(func() {
					unix.Kill(pid, unix.SIGKILL)
					var ws unix.WaitStatus
					unix.Wait4(pid, &ws, 0, nil)
				})
			}
			if took > tt.maxTime {
				t.Errorf("waitExec took %v, want at most %v", took, tt.maxTime)
			}
			if tt.wantCode != 0 {
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != tt.wantCode {
					t.Fatalf("err = %v, want exit code %d", err, tt.wantCode)
				}
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want DeadlineExceeded", err)
			}
			if perr != nil {
				t.Fatalf("the fake runc wrote no pid: %v", perr)
			}
			if tt.reaped && unix.Kill(pid, 0) != unix.ESRCH {
				t.Errorf("the exec'd process %d is still there on return: %s", pid, procState(pid))
			}
		})
	}
}

// procState is the state field of /proc/PID/stat ("Z" for a zombie).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err.Error()
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return "state " + s[i+2:i+3]
	}
	return s
}

// TestExecProcessEnv: an exec's process is the container's, with TERM=xterm
// when it has a terminal (replacing the container's TERM), as containerd
// does; without one the environment is the container's.
func TestExecProcessEnv(t *testing.T) {
	h := &Handler{dir: t.TempDir()}
	c := &store.Container{ID: "c1", State: store.ContainerRunning}
	if err := os.MkdirAll(h.bundle(c.ID), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		tty  bool
		want []string
	}{
		{"tty adds TERM", []string{"PATH=/bin", "HOME=/root"}, true, []string{"PATH=/bin", "HOME=/root", "TERM=xterm"}},
		{"tty replaces TERM", []string{"TERM=dumb", "PATH=/bin"}, true, []string{"PATH=/bin", "TERM=xterm"}},
		{"no tty keeps the env", []string{"PATH=/bin", "TERM=dumb"}, false, []string{"PATH=/bin", "TERM=dumb"}},
		{"no tty adds nothing", []string{"PATH=/bin"}, false, []string{"PATH=/bin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := specs.Spec{Process: &specs.Process{Args: []string{"sleep", "1"}, Env: tt.env, Cwd: "/"}}
			b, _ := json.Marshal(&spec)
			if err := os.WriteFile(filepath.Join(h.bundle(c.ID), "config.json"), b, 0o600); err != nil {
				t.Fatal(err)
			}
			pf, err := h.execProcess(c, []string{"sh"}, tt.tty, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer os.Remove(pf)
			var p specs.Process
			if b, err := os.ReadFile(pf); err != nil || json.Unmarshal(b, &p) != nil {
				t.Fatalf("reading the process file: %v", err)
			}
			if !slices.Equal(p.Env, tt.want) || p.Terminal != tt.tty || !slices.Equal(p.Args, []string{"sh"}) {
				t.Errorf("process: env %q terminal %v args %q, want env %q terminal %v", p.Env, p.Terminal, p.Args, tt.want, tt.tty)
			}
		})
	}
}
