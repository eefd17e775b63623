package runc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
)

// orphanHandler is a Handler on a temp dir whose runtime is a stand-in
// that succeeds at everything.
func orphanHandler(t *testing.T) *Handler {
	t.Helper()
	dir := t.TempDir()
	h := &Handler{dir: dir, rt: runtime{path: "/bin/true", root: filepath.Join(dir, "state")}}
	for _, d := range []string{h.rt.root, h.exitDir(), h.socketDir(), filepath.Join(dir, "bundles"), h.stagingRoot()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOwned: every container with state below the handler's dir is listed
// once, with what it has; entries not named by an ID of crivm's form are
// not; a pidfile naming a process that is not this container's conmon
// counts for nothing.
func TestOwned(t *testing.T) {
	h := orphanHandler(t)
	a, b := strings.Repeat("a", 64), strings.Repeat("0b", 32)
	mkdirs(t, h.bundle(a), filepath.Join(h.rt.root, a), filepath.Join(h.socketDir(), b),
		h.bundle("not-an-id"), h.bundle(strings.Repeat("A", 64)), h.bundle(strings.Repeat("a", 63)), filepath.Join(h.dir, "bundles", "..."))
	if err := os.WriteFile(h.exitFile(b), []byte("0"), 0o600); err != nil {
		t.Fatal(err)
	}
	// This test's own pid: alive, but no conmon of a.
	if err := os.WriteFile(filepath.Join(h.bundle(a), "conmon.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := h.Owned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []handlers.Owned{
		{ID: b, Found: "exit file, attach socket dir"},
		{ID: a, Found: "bundle, runtime state"},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Owned: got %+v, want %+v", got, want)
	}
}

// TestReleaseOrphan: the container's conmon (found by its pidfile and
// checked by its command line) is killed and every entry of the
// container is removed; another container's are not; a name that is not
// an ID is refused.
func TestReleaseOrphan(t *testing.T) {
	h := orphanHandler(t)
	ctx := context.Background()
	id, other := strings.Repeat("c", 64), strings.Repeat("d", 64)
	mkdirs(t, h.bundle(id), filepath.Join(h.rt.root, id), filepath.Join(h.socketDir(), id), h.staging(id), h.bundle(other))
	if err := os.WriteFile(h.exitFile(id), []byte("137"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A stand-in for conmon: its command line names the bundle and the
	// container as conmon's does, and it never exits by itself.
	monitor := exec.Command("sh", "-c", "while :; do sleep 0.1; done", "conmon", "-b", h.bundle(id), "-c", id)
	if err := monitor.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- monitor.Wait() }()
	t.Cleanup(func() { monitor.Process.Kill() })
	if err := os.WriteFile(filepath.Join(h.bundle(id), "conmon.pid"), []byte(strconv.Itoa(monitor.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	owned, err := h.Owned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(owned) != 2 || !strings.HasSuffix(owned[0].Found, "conmon "+strconv.Itoa(monitor.Process.Pid)+" running") {
		t.Fatalf("Owned: %+v, want %s's conmon found", owned, id)
	}

	if err := h.ReleaseOrphan(ctx, id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(time.Second): // reaped at once: it has exited already
		t.Error("conmon still runs after ReleaseOrphan")
	}
	for _, p := range []string{h.bundle(id), filepath.Join(h.rt.root, id), filepath.Join(h.socketDir(), id), h.staging(id), h.exitFile(id)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left (%v)", p, err)
		}
	}
	if _, err := os.Stat(h.bundle(other)); err != nil {
		t.Errorf("another container's bundle: %v", err)
	}
	if err := h.ReleaseOrphan(ctx, id); err != nil {
		t.Errorf("second ReleaseOrphan: %v", err)
	}
	if err := h.ReleaseOrphan(ctx, "../"+other); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ReleaseOrphan of a path: %v, want InvalidArgument", err)
	}
}
