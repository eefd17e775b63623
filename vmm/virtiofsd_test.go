package vmm_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/test/testutil"
	"github.com/crivm/crivm/vmm"
)

// TestVirtiofsdLifecycle: a real virtiofsd starts with its socket and
// pidfile, a second one for the same dir is refused, and StopVirtiofsd
// kills one that does not exit by itself (no QEMU ever connected) and
// removes its files; stopping again is a no-op.
func TestVirtiofsdLifecycle(t *testing.T) {
	testutil.RequiresRoot(t)
	path, err := vmm.FindVirtiofsd("")
	if err != nil {
		t.Skipf("no virtiofsd installed: %v", err)
	}
	ctx := context.Background()
	dir, src := shortDir(t), t.TempDir()

	// 1. Start: socket and pidfile appear, the process runs.
	d, err := vmm.StartVirtiofsd(ctx, vmm.VirtiofsdConfig{Path: path, Source: src, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(d.Socket()); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket %s: %v", d.Socket(), err)
	}
	if err := unix.Kill(d.PID(), 0); err != nil {
		t.Fatalf("virtiofsd %d: %v", d.PID(), err)
	}

	// 2. A second virtiofsd for the same dir is refused.
	if _, err := vmm.StartVirtiofsd(ctx, vmm.VirtiofsdConfig{Path: path, Source: src, Dir: dir}); !errdefs.IsClass(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second start: %v, want AlreadyExists", err)
	}

	// 3. Stop kills it after the grace and removes its files.
	if err := vmm.StopVirtiofsd(ctx, dir, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); unix.Kill(d.PID(), 0) == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
	}
	if err := unix.Kill(d.PID(), 0); err == nil {
		t.Errorf("virtiofsd %d still runs", d.PID())
	}
	for _, n := range []string{vmm.VirtiofsdSocketName, vmm.VirtiofsdPidfileName} {
		if _, err := os.Stat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", n, err)
		}
	}
	if err := vmm.StopVirtiofsd(ctx, dir, time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}

	// 4. A bad source fails the start and leaves nothing running.
	if _, err := vmm.StartVirtiofsd(ctx, vmm.VirtiofsdConfig{Path: path, Source: "/nonexistent/src", Dir: dir}); err == nil {
		t.Error("virtiofsd started on a missing source")
	}
	if _, err := os.Stat(filepath.Join(dir, vmm.VirtiofsdPidfileName)); !os.IsNotExist(err) {
		t.Errorf("pidfile left after a failed start (%v)", err)
	}
}
