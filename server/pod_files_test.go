package server

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/test/testutil"
)

// TestPodFilesRemove: removing a pod's files (RunPodSandbox's rollback,
// RemovePodSandbox) leaves no pod dir whatever is mounted in it: the shm
// mount, a second mount stacked on it, a mount below it. Unmounting the
// top mount once and then removing the tree failed on the rest with
// "device or resource busy" and left <runroot>/pods/<id>/shm behind.
func TestPodFilesRemove(t *testing.T) {
	testutil.RequiresRoot(t)
	tests := []struct {
		name  string
		mount func(t *testing.T, f podFiles)
	}{
		{"nothing mounted", func(t *testing.T, f podFiles) {}},
		{"shm", func(t *testing.T, f podFiles) { mustMountShm(t, f) }},
		{"shm stacked twice", func(t *testing.T, f podFiles) { mustMountShm(t, f); mustMountShm(t, f) }},
		{"a mount below shm", func(t *testing.T, f podFiles) {
			mustMountShm(t, f)
			sub := filepath.Join(f.Shm, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("sub", sub, "tmpfs", 0, ""); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A private mount point of its own, so nothing propagates to
			// the host's mount table.
			root := t.TempDir()
			if err := unix.Mount("pods", root, "tmpfs", 0, ""); err != nil {
				t.Fatal(err)
			}
			defer unix.Unmount(root, unix.MNT_DETACH)
			if err := unix.Mount("", root, "", unix.MS_PRIVATE, ""); err != nil {
				t.Fatal(err)
			}
			f := podFilesIn(filepath.Join(root, "0123abcd"))
			if err := os.MkdirAll(f.Dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := f.writeHostname("pod"); err != nil {
				t.Fatal(err)
			}
			tt.mount(t, f)
			for i := range 2 { // idempotent
				if err := f.remove(); err != nil {
					t.Fatalf("remove %d: %v", i+1, err)
				}
			}
			if _, err := os.Lstat(f.Dir); !os.IsNotExist(err) {
				t.Errorf("pod dir after remove: %v, want it gone", err)
			}
		})
	}
}

func mustMountShm(t *testing.T, f podFiles) {
	t.Helper()
	if err := f.mountShm(); err != nil {
		t.Fatal(err)
	}
}
