package vm

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/mountfs"
	"github.com/crivm/crivm/test/testutil"
)

// The share on the host, without a VM: the export is read-only at its
// structure, a container's entries appear in it with their own mounts, a
// read-only volume is read-only there, and teardown leaves nothing,
// also when a container was never unexposed, and when run twice.
func TestShareLifecycle(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	sh := share{dir: filepath.Join(root, "vm")}
	rootfs, vol, file := filepath.Join(root, "rootfs"), filepath.Join(root, "vol"), filepath.Join(root, "file")
	for _, d := range []string{rootfs, vol} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(rootfs, "etc-release"), []byte("image\n"), 0o644)
	os.WriteFile(filepath.Join(vol, "data"), []byte("volume\n"), 0o644)
	os.WriteFile(file, []byte("termination-log\n"), 0o644)

	// 1. The export exists and its structure is read-only.
	if err := sh.create(); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(sh.export(), "x"), 0o755); !errors.Is(err, unix.EROFS) {
		t.Fatalf("mkdir in the export: %v, want EROFS", err)
	}

	// 2. A container with a read-only volume and a file volume.
	open := func(p string) *os.File {
		f, err := os.OpenFile(p, unix.O_PATH, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	id := "0123456789abcdef"
	if err := sh.expose(id, rootfs, []shareBind{{n: 0, src: open(vol), readOnly: true}, {n: 1, src: open(file)}}); err != nil {
		t.Fatal(err)
	}
	exp := filepath.Join(sh.export(), id)
	if b, _ := os.ReadFile(filepath.Join(exp, "rootfs", "etc-release")); string(b) != "image\n" {
		t.Errorf("rootfs in the export: %q", b)
	}
	if err := os.WriteFile(filepath.Join(exp, "rootfs", "new"), []byte("x"), 0o644); err != nil {
		t.Errorf("the rootfs is not writable: %v", err)
	}
	if err := os.WriteFile(filepath.Join(exp, "mounts", "0", "data"), []byte("x"), 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing the read-only volume: %v, want EROFS", err)
	}
	if b, _ := os.ReadFile(filepath.Join(exp, "mounts", "1")); string(b) != "termination-log\n" {
		t.Errorf("file volume in the export: %q", b)
	}
	if err := os.Rename(filepath.Join(exp, "mounts"), filepath.Join(exp, "mounts x")); !errors.Is(err, unix.EROFS) {
		t.Errorf("renaming in the export: %v, want EROFS", err)
	}
	if err := sh.expose(id, rootfs, nil); err == nil {
		t.Error("exposing the same container twice succeeded")
	}

	// 3. unexpose removes the entries and their mounts; the sources stay.
	if err := sh.unexpose(id); err != nil {
		t.Fatal(err)
	}
	if ms, _ := mountfs.MountsBelow(exp); len(ms) > 0 {
		t.Errorf("mounts left after unexpose: %q", ms)
	}
	if _, err := os.Stat(filepath.Join(sh.staging(), id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("entries left after unexpose: %v", err)
	}
	if err := sh.unexpose(id); err != nil {
		t.Errorf("unexpose twice: %v", err)
	}
	if err := sh.unexpose("../x"); err == nil {
		t.Error("unexpose of a path-like id succeeded")
	}

	// 4. destroy with a container still exposed; then again.
	if err := sh.expose(id, rootfs, []shareBind{{n: 0, src: open(vol)}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := sh.destroy(); err != nil {
			t.Fatal(err)
		}
	}
	if ms, _ := mountfs.MountsBelow(sh.dir); len(ms) > 0 {
		t.Errorf("mounts left after destroy: %q", ms)
	}
	if _, err := os.Stat(sh.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("VM dir left: %v", err)
	}
	for _, p := range []string{filepath.Join(vol, "data"), filepath.Join(rootfs, "etc-release"), file} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("a source lost %s: %v", p, err)
		}
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"0123456789abcdef", true},
		{"", false},
		{"../x", false},
		{"ABC", false},
		{string(slices.Repeat([]byte{'a'}, 65)), false},
	}
	for _, tt := range tests {
		if got := validID(tt.id); got != tt.want {
			t.Errorf("validID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}
