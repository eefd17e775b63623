package vm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/test/testutil"
	"github.com/crivm/crivm/vmm"
)

func TestVMCgroupOf(t *testing.T) {
	id := strings.Repeat("ab", 32)
	key := id[:32]
	for _, tt := range []struct {
		path string
		want bool
	}{
		{"/crivm/crivm-" + id, true},
		{"/kubepods/besteffort/pod1/crivm-" + id, true},
		{"/system.slice/crivm-vm-" + id + ".scope", true},
		{"/crivm/crivm-" + strings.Repeat("cd", 32), false}, // another sandbox's
		{"/crivm/crivm-" + key, false},                      // not a whole ID
		{"/crivm/" + id, false},
		{"crivm/crivm-" + id, false},
		{"/crivm/../crivm-" + id, false},
		{"/crivm/crivm-vm-" + id, false},
		{"/crivm/crivm-" + strings.ToUpper(id), false},
	} {
		if got := vmCgroupOf(tt.path, key); got != tt.want {
			t.Errorf("vmCgroupOf(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// TestOwnedVMDirs: the handler's VM dirs are listed by name; other
// entries of its dir are not.
func TestOwnedVMDirs(t *testing.T) {
	h := &Handler{dir: t.TempDir()}
	a, b := strings.Repeat("a", 32), strings.Repeat("0b", 16)
	for _, d := range []string{a, b, strings.Repeat("c", 64), strings.Repeat("D", 32), "assets"} {
		if err := os.Mkdir(filepath.Join(h.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(h.dir, strings.Repeat("e", 32)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := h.Owned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != b || got[1].ID != a || got[1].Found != "VM dir "+filepath.Join(h.dir, a) {
		t.Errorf("Owned: %+v, want %s and %s", got, b, a)
	}
	if err := h.ReleaseOrphan(context.Background(), "../"+a); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ReleaseOrphan of a path: %v, want InvalidArgument", err)
	}
}

// TestOwnedPoolAliases: a pod that took a pooled VM is listed by its VM
// dir name, a symlink to the pooled VM's dir, which vmDir follows and
// ReleaseOrphan removes with the dir; a symlink to anything else is
// neither followed nor listed, and a pooled VM's own dir is the pool's
// (sweepPool), not an orphan.
func TestOwnedPoolAliases(t *testing.T) {
	h := &Handler{dir: t.TempDir()}
	id := strings.Repeat("ab", 32)
	pool := poolDirPrefix + strings.Repeat("c", 32)
	elsewhere := strings.Repeat("d", 32)
	for _, d := range []string{pool, elsewhere} {
		if err := os.Mkdir(filepath.Join(h.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{id[:32]: pool, strings.Repeat("e", 32): "../" + elsewhere, strings.Repeat("f", 32): elsewhere} {
		if err := os.Symlink(target, filepath.Join(h.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := h.vmDir(id), filepath.Join(h.dir, pool); got != want {
		t.Errorf("vmDir of a pod that took a pooled VM: %s, want %s", got, want)
	}
	if got, want := h.vmDir(strings.Repeat("f", 64)), filepath.Join(h.dir, strings.Repeat("f", 32)); got != want {
		t.Errorf("vmDir through a symlink to a non-pool dir: %s, want the name itself %s", got, want)
	}
	got, err := h.Owned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range got {
		ids = append(ids, o.ID)
	}
	if want := []string{id[:32], elsewhere}; !slices.Equal(ids, want) {
		t.Errorf("Owned: %v, want %v", ids, want)
	}
	if err := h.ReleaseOrphan(context.Background(), id[:32]); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{id[:32], pool} {
		if _, err := os.Lstat(filepath.Join(h.dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after ReleaseOrphan: %v, want it gone", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(h.dir, elsewhere)); err != nil {
		t.Errorf("another dir after ReleaseOrphan: %v", err)
	}
}

// cgroupWithSleeper makes the cgroup p and starts a process in it,
// removed at cleanup.
func cgroupWithSleeper(t *testing.T, p string) (*vmm.Cgroup, *exec.Cmd) {
	t.Helper()
	cg, err := vmm.NewCgroup(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.Create(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cg.KillAll()
		cg.Remove(context.Background())
	})
	if err := os.WriteFile(filepath.Join(cg.Dirs()[0], "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cg, cmd
}

// TestReleaseOrphanCgroup: a VM dir's release kills what runs in the
// cgroup it records and removes the cgroup and the dir; a recorded cgroup
// that is not this VM's is left alone, processes and all.
func TestReleaseOrphanCgroup(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	parent := "/crivm-orphan-test-" + strconv.Itoa(os.Getpid())
	t.Cleanup(func() {
		if cg, err := vmm.NewCgroup(parent); err == nil {
			cg.Remove(ctx)
		}
	})
	h := &Handler{dir: t.TempDir()}
	id := strings.Repeat("5a", 32)
	mine, sleeper := cgroupWithSleeper(t, parent+"/crivm-"+id)
	foreign, stranger := cgroupWithSleeper(t, parent+"/crivm-"+strings.Repeat("6b", 32))

	// 1. A VM dir recording its cgroup.
	dir := filepath.Join(h.dir, id[:32])
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := writeCgroupRecord(dir, mine.Path); err != nil {
		t.Fatal(err)
	}
	owned, err := h.Owned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(owned) != 1 || !strings.HasSuffix(owned[0].Found, "cgroup "+mine.Path) {
		t.Fatalf("Owned: %+v, want the VM dir with cgroup %s", owned, mine.Path)
	}
	if err := h.ReleaseOrphan(ctx, id[:32]); err != nil {
		t.Fatal(err)
	}
	if cgroupExists(mine) {
		t.Errorf("cgroup %s left", mine.Path)
	}
	if !waitGone(sleeper.Process.Pid) {
		t.Errorf("the process in the VM's cgroup still runs")
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("VM dir left (%v)", err)
	}

	// 2. A VM dir whose record names another sandbox's cgroup.
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := writeCgroupRecord(dir, foreign.Path); err != nil {
		t.Fatal(err)
	}
	if err := h.ReleaseOrphan(ctx, id[:32]); err != nil {
		t.Fatal(err)
	}
	if !cgroupExists(foreign) || waitGone(stranger.Process.Pid) {
		t.Errorf("another sandbox's cgroup %s or its process was released", foreign.Path)
	}
}

// waitGone waits a little for pid to be gone.
func waitGone(pid int) bool {
	for range 50 {
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err != nil || strings.Contains(string(b), ") Z ") {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestSweepPool: at start, the pool dirs a previous daemon left go; one a
// pod's VM dir names stays, and so does one this daemon is booting.
func TestSweepPool(t *testing.T) {
	h := &Handler{dir: t.TempDir()}
	left, taken, booting := poolDirPrefix+strings.Repeat("a", 32), poolDirPrefix+strings.Repeat("b", 32), poolDirPrefix+strings.Repeat("c", 32)
	for _, d := range []string{left, taken, booting} {
		if err := os.Mkdir(filepath.Join(h.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(taken, filepath.Join(h.dir, strings.Repeat("d", 32))); err != nil {
		t.Fatal(err)
	}
	h.pool.own = map[string]bool{booting: true}
	h.sweepPool(context.Background())
	for d, want := range map[string]bool{left: false, taken: true, booting: true} {
		_, err := os.Stat(filepath.Join(h.dir, d))
		if got := err == nil; got != want {
			t.Errorf("%s after the sweep: exists %v, want %v", d, got, want)
		}
	}
}
