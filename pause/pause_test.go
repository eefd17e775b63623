package pause

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/crivm/crivm/test/testutil"
)

var binDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "crivm-pause-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func build(t *testing.T) string {
	t.Helper()
	testutil.RequiresBinary(t, "gcc")
	p, err := Build(binDir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildIsCachedAndStatic(t *testing.T) {
	testutil.RequiresBinary(t, "gcc")
	dir := t.TempDir()
	start := time.Now()
	p1, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	cold := time.Since(start)
	fi1, err := os.Stat(p1)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	p2, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	warm := time.Since(start)
	t.Logf("build cold %v, warm %v, %d bytes", cold, warm, fi1.Size())
	if p1 != p2 {
		t.Fatalf("second build path %q, want cached %q", p2, p1)
	}
	fi2, _ := os.Stat(p2)
	if !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Errorf("second build rewrote the binary")
	}
	if fi1.Mode().Perm()&0o111 == 0 {
		t.Errorf("binary mode %v is not executable", fi1.Mode())
	}
	// No leftover build dirs.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("outDir holds %d entries, want only the binary", len(ents))
	}

	f, err := elf.Open(p1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Errorf("ELF type %v, want ET_EXEC (static, not PIE)", f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Fatalf("pause has a PT_INTERP program header: it is dynamically linked")
		}
	}
	if _, err := f.DynamicSymbols(); err == nil {
		t.Errorf("pause has dynamic symbols")
	}
}

func TestIsStatic(t *testing.T) {
	p := build(t)
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to compare against")
	}
	sh, _ = filepath.EvalSymlinks(sh)
	for _, tc := range []struct {
		path string
		want bool
	}{
		{p, true},
		{sh, false}, // Debian's dash is dynamically linked
	} {
		got, err := IsStatic(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("IsStatic(%s) = %v, want %v", tc.path, got, tc.want)
		}
	}
	if _, err := IsStatic("/etc/hostname"); err == nil {
		t.Errorf("IsStatic of a text file: want an error")
	}
}

func TestVersionFlag(t *testing.T) {
	p := build(t)
	out, err := exec.Command(p, "-v").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "pause " + Version + "\n"; string(out) != want {
		t.Errorf("pause -v printed %q, want %q", out, want)
	}
}

// waitHandlers waits until pid has installed handlers for SIGINT and SIGTERM,
// read from the SigCgt mask in /proc/PID/status.
func waitHandlers(t *testing.T, pid int) {
	t.Helper()
	want := uint64(1)<<(uint(syscall.SIGINT)-1) | uint64(1)<<(uint(syscall.SIGTERM)-1) | uint64(1)<<(uint(syscall.SIGCHLD)-1)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatalf("reading status: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err != nil {
					t.Fatalf("parsing SigCgt %q: %v", v, err)
				}
				if mask&want == want {
					return
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pause (pid %d) did not install its signal handlers within 5s", pid)
}

// syncBuffer is a bytes.Buffer that the process's stderr copier and the
// test may use at the same time.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, p string, attr *syscall.SysProcAttr) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	stderr := &syncBuffer{}
	cmd := exec.Command(p)
	cmd.Stderr = stderr
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		if attr != nil && errors.Is(err, syscall.EPERM) {
			t.Skipf("cannot create a PID namespace here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	waitHandlers(t, cmd.Process.Pid)
	return cmd, stderr
}

func waitExit(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("pause did not exit within 5s of the signal")
		return nil
	}
}

func TestExitsZeroOnSignal(t *testing.T) {
	p := build(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, stderr := start(t, p, nil)
			// Still running: it does not exit on its own.
			time.Sleep(50 * time.Millisecond)
			if err := syscall.Kill(cmd.Process.Pid, 0); err != nil {
				t.Fatalf("pause exited before the signal: %v", err)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if err := waitExit(t, cmd); err != nil {
				t.Fatalf("pause after %v: %v (stderr %q)", sig, err, stderr)
			}
			if code := cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("exit code %d, want 0", code)
			}
			if !strings.Contains(stderr.String(), "shutting down") {
				t.Errorf("stderr %q lacks the shutdown message", stderr)
			}
		})
	}
}

// children returns the host PIDs whose parent is ppid, with their state
// letter (R, S, Z, ...).
func children(ppid int) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so cut at the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if pp, _ := strconv.Atoi(f[1]); pp == ppid {
			out[pid] = f[0]
		}
	}
	return out
}

// TestReapsOrphans runs pause as PID 1 of a new PID namespace, orphans a
// process inside that namespace so the kernel reparents it to pause, and
// checks that pause reaps it when it exits instead of leaving a zombie.
func TestReapsOrphans(t *testing.T) {
	testutil.RequiresRoot(t)
	nsenter := testutil.RequiresBinary(t, "nsenter")
	busybox := testutil.RequiresBinary(t, "busybox")
	p := build(t)
	cmd, stderr := start(t, p, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID})
	pid := cmd.Process.Pid
	if strings.Contains(stderr.String(), "not PID 1") {
		t.Fatalf("pause in a new PID namespace says it is not PID 1")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// sh starts a sleep in the background and exits at once: the sleep is
	// orphaned and the kernel hands it to the namespace's init, pause. The
	// sleep must not hold the output pipe, or CombinedOutput waits for it.
	orphan := exec.CommandContext(ctx, nsenter, "--target", strconv.Itoa(pid), "--pid", "--",
		busybox, "sh", "-c", busybox+" sleep 0.5 </dev/null >/dev/null 2>&1 & exit 0")
	if out, err := orphan.CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v\n%s", err, out)
	}

	var adopted int
	deadline := time.Now().Add(2 * time.Second)
	for adopted == 0 && time.Now().Before(deadline) {
		for c := range children(pid) {
			adopted = c
		}
		if adopted == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if adopted == 0 {
		t.Fatalf("no process was reparented to pause (pid %d)", pid)
	}

	deadline = time.Now().Add(5 * time.Second)
	for {
		kids := children(pid)
		if len(kids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pause left children behind 4.5s after they exited: %v (Z = unreaped zombie)", kids)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, cmd); err != nil {
		t.Fatalf("pause as PID 1 after SIGTERM: %v (stderr %q)", err, stderr)
	}
}
