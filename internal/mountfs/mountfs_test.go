package mountfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/test/testutil"
)

func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mounting tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func openDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	ms, err := MountsBelow(dir)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(ms, dir)
}

// A recursive read-only bind is read-only in its submounts too; a
// read-only one only at its top; the source stays writable.
func TestBindReadOnly(t *testing.T) {
	testutil.RequiresRoot(t)
	tests := []struct {
		name         string
		opts         BindOptions
		topRO, subRO bool
	}{
		{"recursive read-only", BindOptions{Recursive: true, RecursiveReadOnly: true}, true, true},
		{"read-only (top only)", BindOptions{Recursive: true, ReadOnly: true}, true, false},
		{"writable", BindOptions{Recursive: true}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			src, sub, dst := filepath.Join(root, "src"), filepath.Join(root, "src", "sub"), filepath.Join(root, "dst")
			mkdirs(t, src, dst)
			mountTmpfs(t, src)
			mkdirs(t, sub)
			mountTmpfs(t, sub)

			if err := Bind(openDir(t, src), openDir(t, dst), tt.opts); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { UnmountAll(dst) })
			for _, c := range []struct {
				path string
				ro   bool
			}{{filepath.Join(dst, "f"), tt.topRO}, {filepath.Join(dst, "sub", "f"), tt.subRO}} {
				err := os.WriteFile(c.path, []byte("x"), 0o644)
				if got := errors.Is(err, unix.EROFS); got != c.ro {
					t.Errorf("writing %s: %v, want read-only %v", c.path, err, c.ro)
				}
			}
			if err := os.WriteFile(filepath.Join(sub, "g"), []byte("x"), 0o644); err != nil {
				t.Errorf("the source became read-only: %v", err)
			}
		})
	}
}

// Unmounting the copy of a shared host mount does not unmount the host's
// own child mount (it would if the copy stayed a peer).
func TestBindUnmountDoesNotPropagateToHost(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	src, child, dst := filepath.Join(root, "src"), filepath.Join(root, "src", "child"), filepath.Join(root, "dst")
	mkdirs(t, src, dst)
	mountTmpfs(t, src)
	if err := unix.Mount("", src, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	mkdirs(t, child)
	mountTmpfs(t, child)

	for _, prop := range []uint64{unix.MS_PRIVATE, unix.MS_SLAVE} {
		if err := Bind(openDir(t, src), openDir(t, dst), BindOptions{Recursive: true, Propagation: prop}); err != nil {
			t.Fatal(err)
		}
		if !mounted(t, filepath.Join(dst, "child")) {
			t.Fatalf("propagation %#x: the child mount was not copied", prop)
		}
		if err := UnmountAll(dst); err != nil {
			t.Fatal(err)
		}
		if !mounted(t, child) {
			t.Fatalf("propagation %#x: unmounting the copy unmounted the host's %s", prop, child)
		}
	}
}

// Mount points whose names hold a space and a newline are listed decoded,
// unmounted and removed.
func TestEscapedMountPoints(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	odd := filepath.Join(root, "a b\nc")
	plain := filepath.Join(root, "a") // what an undecoded "a\040b" must not become
	mkdirs(t, odd, plain)
	mountTmpfs(t, odd)
	mountTmpfs(t, plain)

	got, err := MountsBelow(odd)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{odd}; !slices.Equal(got, want) {
		t.Fatalf("MountsBelow = %q, want %q", got, want)
	}
	if err := UnmountAll(odd); err != nil {
		t.Fatal(err)
	}
	if mounted(t, odd) || !mounted(t, plain) {
		t.Fatalf("after UnmountAll: %q mounted %v, %q mounted %v", odd, mounted(t, odd), plain, mounted(t, plain))
	}
	if err := RemoveTree(odd); err != nil {
		t.Fatal(err)
	}
}

// RemoveTree stops at a mount point instead of deleting what is mounted
// there, and does not follow symlinks.
func TestRemoveTree(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	outside := filepath.Join(root, "outside")
	tree := filepath.Join(root, "tree")
	mnt := filepath.Join(tree, "d", "mnt")
	mkdirs(t, outside, mnt)
	keep := filepath.Join(outside, "keep")
	os.WriteFile(keep, []byte("x"), 0o644)
	if err := os.Symlink(outside, filepath.Join(tree, "link")); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, mnt)
	inMount := filepath.Join(mnt, "volume-file")
	os.WriteFile(inMount, []byte("x"), 0o644)

	if err := RemoveTree(tree); err == nil {
		t.Fatal("RemoveTree crossed a mount point")
	}
	if _, err := os.Stat(inMount); err != nil {
		t.Fatalf("a file in the mount was deleted: %v", err)
	}
	unix.Unmount(mnt, unix.MNT_DETACH)
	if err := RemoveTree(tree); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tree); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tree still there: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the symlink's target lost a file: %v", err)
	}
	if err := RemoveTree(tree); err != nil {
		t.Errorf("removing a missing tree: %v", err)
	}
}

func TestOpenBeneath(t *testing.T) {
	root := t.TempDir()
	mkdirs(t, filepath.Join(root, "d", "e"))
	os.Symlink("/etc", filepath.Join(root, "d", "link"))
	fd := openDir(t, root)
	tests := []struct {
		rel  string
		want error
	}{
		{"d/e", nil},
		{"d/link", unix.ELOOP},
		{"d/link/passwd", unix.ELOOP},
		{"../", unix.EXDEV},
		{"/etc", unix.EXDEV},
	}
	for _, tt := range tests {
		got, err := OpenBeneath(fd, tt.rel, unix.O_PATH)
		if err == nil {
			unix.Close(got)
		}
		if !errors.Is(err, tt.want) && (err != nil || tt.want != nil) {
			t.Errorf("OpenBeneath(%q) = %v, want %v", tt.rel, err, tt.want)
		}
	}
}

// MakePrivateMount closes each descriptor it opens once, whatever other
// goroutines open meanwhile: readers racing it never see their own
// descriptor closed under them (EBADF).
func TestMakePrivateMountClosesOnlyItsOwn(t *testing.T) {
	testutil.RequiresRoot(t)
	base := t.TempDir()
	mountTmpfs(t, base)
	if err := unix.Mount("", base, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				if _, err := os.ReadFile("/proc/self/stat"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 300 {
		dir := filepath.Join(base, "d", fmt.Sprint(i))
		mkdirs(t, dir)
		if err := MakePrivateMount(dir); err != nil {
			t.Fatal(err)
		}
		unix.Unmount(dir, unix.MNT_DETACH)
	}
	close(stop)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("a reader beside MakePrivateMount: %v", err)
		}
	}
}
