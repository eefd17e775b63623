package hostprobe

import (
	"bytes"
	"context"
	"github.com/crivm/crivm/vmm"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/vmm/assets"
)

// realProbeInputs returns the host's QEMU and a kernel from /boot, or skips
// the test saying which is missing.
func realProbeInputs(t *testing.T) (string, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a real guest under TCG (several seconds); skipped with -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not found in PATH (apt-get install qemu-system-x86)")
	}
	kernel, err := assets.FindKernel("")
	if err != nil {
		t.Skipf("no /boot/vmlinuz-* to boot (apt-get install linux-image-amd64): %v", err)
	}
	return qemu, kernel
}

func TestProbeBootTCG(t *testing.T) {
	qemu, kernel := realProbeInputs(t)
	start := time.Now()
	booted, detail, err := probeBoot(context.Background(), qemu, kernel, vmm.AccelTCG, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !booted {
		t.Fatalf("guest did not boot under TCG: %s", detail)
	}
	t.Logf("%s booted %s under TCG in %s: %s", qemu, kernel, time.Since(start).Round(time.Millisecond), detail)
}

// TestProbeBootTimeoutLeavesNothing stops a TCG boot that cannot finish in
// time and checks that its QEMU is gone.
func TestProbeBootTimeoutLeavesNothing(t *testing.T) {
	qemu, kernel := realProbeInputs(t)
	// A private copy makes this probe's command line unique on the host.
	own := filepath.Join(t.TempDir(), "vmlinuz-probe-timeout")
	copyFile(t, kernel, own)
	r, err := runProbeBoot(context.Background(), qemu, own, vmm.AccelTCG, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.booted || !r.timedOut {
		t.Fatalf("want a timeout, got %+v", r)
	}
	if pids := processesWithArg(t, own); len(pids) > 0 {
		t.Errorf("qemu left running: pids %v", pids)
	}
}

func TestProbeBootQEMUExits(t *testing.T) {
	qemu, kernel := realProbeInputs(t)
	r, err := runProbeBoot(context.Background(), qemu, kernel, "no-such-accel", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.booted || r.timedOut || !strings.Contains(r.detail, "qemu exited") || !strings.Contains(r.detail, "no-such-accel") {
		t.Errorf("got %+v", r)
	}
}

func TestProbeBootCancel(t *testing.T) {
	qemu, kernel := realProbeInputs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, _, err := probeBoot(ctx, qemu, kernel, vmm.AccelTCG, 60*time.Second)
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("err = %v, want the context's error", err)
	}
}

func TestProbeBootNoQEMU(t *testing.T) {
	_, _, err := probeBoot(context.Background(), filepath.Join(t.TempDir(), "qemu"), "/nonexistent", vmm.AccelTCG, time.Second)
	if err == nil || !strings.Contains(err.Error(), "starting") {
		t.Errorf("err = %v", err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// processesWithArg lists the pids whose command line has arg as one argument.
func processesWithArg(t *testing.T, arg string) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(b, []byte{0}) {
			if string(a) == arg {
				pids = append(pids, filepath.Base(filepath.Dir(f)))
			}
		}
	}
	return pids
}
