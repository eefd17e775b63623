package hostprobe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// panicMarkers prove that the guest kernel ran to the root mount. Without an
// initrd or root= it always panics there; the panic line is printed at
// KERN_EMERG, so it reaches the console even with "quiet".
var panicMarkers = [][]byte{
	[]byte("Kernel panic - not syncing"),
	[]byte("VFS: Unable to mount root fs"),
}

// consoleTail is how much of the serial console a probe keeps for its
// failure detail.
const consoleTail = 2048

// bootResult is one probe boot. Exactly one of booted and timedOut is true,
// or neither when QEMU exited before the kernel panicked.
type bootResult struct {
	booted   bool
	timedOut bool
	elapsed  time.Duration
	detail   string
}

// probeBoot boots kernel under accel with no initrd and reports whether the
// guest kernel reached its root-mount panic on the serial console within
// timeout. err is set only when the probe itself could not run (QEMU would
// not start, ctx was cancelled); a guest that hangs or a QEMU that rejects
// the accelerator is booted=false with detail saying which.
func probeBoot(ctx context.Context, qemu, kernel, accel string, timeout time.Duration) (bool, string, error) {
	r, err := runProbeBoot(ctx, qemu, kernel, accel, timeout)
	return r.booted, r.detail, err
}

func probeArgs(kernel, accel string) []string {
	return []string{
		"-name", "crivm-accel-probe",
		"-accel", accel,
		"-M", "q35",
		"-cpu", "qemu64", // host and max abort on PVM hosts (MSR 0x10a)
		"-m", "128",
		"-nodefaults", "-no-user-config", "-nographic",
		"-no-reboot", // with panic=-1 QEMU exits right after the panic
		"-kernel", kernel,
		"-append", "console=ttyS0 panic=-1 quiet",
		"-serial", "stdio",
	}
}

// runProbeBoot runs QEMU in its own process group. Every return path has
// killed that group and reaped QEMU.
func runProbeBoot(ctx context.Context, qemu, kernel, accel string, timeout time.Duration) (bootResult, error) {
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	console := newMarkerWriter(panicMarkers, consoleTail)
	var stderr tailBuffer
	stderr.max = consoleTail
	cmd := exec.Command(qemu, probeArgs(kernel, accel)...)
	cmd.Stdout = console
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// QEMU has no children, so its pipes close when it dies; this only bounds
	// Wait should something else inherit them.
	cmd.WaitDelay = 2 * time.Second

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return bootResult{}, fmt.Errorf("starting %s: %w", qemu, err)
	}
	pid := cmd.Process.Pid

	// exited is closed once QEMU has exited but before it is reaped: the
	// zombie keeps its pid and process group id, so killing -pid below can
	// never hit a recycled pid.
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}()
	finish := func() error {
		_ = unix.Kill(-pid, unix.SIGKILL)
		<-exited
		return cmd.Wait()
	}

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var r bootResult
	select {
	case <-console.seen:
		r.elapsed = time.Since(start)
		finish()
	case <-exited:
		r.elapsed = time.Since(start)
		waitErr := finish()
		// The marker may be the last thing QEMU wrote before exiting.
		if console.found() {
			break
		}
		r.detail = fmt.Sprintf("qemu exited before the guest kernel ran (%s): %s", exitText(waitErr), lastLine(stderr.String(), console.tail()))
		return r, nil
	case <-timer.C:
		r.elapsed = time.Since(start)
		finish()
		if console.found() {
			break
		}
		r.timedOut = true
		r.detail = fmt.Sprintf("did not boot under %s within %s (last console output: %q)", accel, timeout, lastLine(console.tail()))
		return r, nil
	case <-ctx.Done():
		finish()
		return bootResult{}, fmt.Errorf("probing %s boot: %w", accel, ctx.Err())
	}
	r.booted = true
	r.detail = fmt.Sprintf("guest kernel reached its root-mount panic under %s in %s", accel, r.elapsed.Round(10*time.Millisecond))
	return r, nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// markerWriter receives the serial console and closes seen the first time
// any marker appears, also when a marker spans two writes.
type markerWriter struct {
	markers [][]byte
	seen    chan struct{}

	mu    sync.Mutex
	hit   bool
	carry []byte // the last maxMarker-1 bytes, for markers split across writes
	ring  tailBuffer
}

func newMarkerWriter(markers [][]byte, keep int) *markerWriter {
	return &markerWriter{markers: markers, seen: make(chan struct{}), ring: tailBuffer{max: keep}}
}

func (w *markerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ring.Write(p)
	if w.hit {
		return len(p), nil
	}
	buf := append(w.carry, p...)
	longest := 0
	for _, m := range w.markers {
		if bytes.Contains(buf, m) {
			w.hit = true
			close(w.seen)
			w.carry = nil
			return len(p), nil
		}
		longest = max(longest, len(m))
	}
	keep := min(len(buf), longest-1)
	w.carry = append(w.carry[:0:0], buf[len(buf)-keep:]...)
	return len(p), nil
}

func (w *markerWriter) found() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hit
}

func (w *markerWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ring.String()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// ansiRE matches the terminal escapes SeaBIOS and QEMU write to the console.
var ansiRE = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|c)`)

// lastLine returns the last non-blank line of the first text that has one,
// without terminal escapes.
func lastLine(texts ...string) string {
	for _, s := range texts {
		s = ansiRE.ReplaceAllString(s, "")
		lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
		for i := len(lines) - 1; i >= 0; i-- {
			if l := strings.TrimSpace(lines[i]); l != "" {
				return l
			}
		}
	}
	return "(none)"
}
