package launch

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/test/testutil"
)

// A bind with "ro" is read-only at its top only, one with "rro" in every
// submount as well (critest's readonly-mount specs, both flavours).
func TestMountInRootfsReadOnly(t *testing.T) {
	testutil.RequiresRoot(t)
	tests := []struct {
		opt   string
		subRO bool
	}{{"ro", false}, {"rro", true}}
	for _, tt := range tests {
		t.Run(tt.opt, func(t *testing.T) {
			root := t.TempDir()
			src, sub, rootfs := filepath.Join(root, "src"), filepath.Join(root, "src", "sub"), filepath.Join(root, "rootfs")
			for _, d := range []string{sub, rootfs} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })
			err := mountInRootfs(openRootfs(t, rootfs), specs.Mount{Destination: "/vol", Type: "bind", Source: src, Options: []string{"rbind", "rprivate", tt.opt}})
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(rootfs, "vol")
			t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
			if err := os.WriteFile(filepath.Join(dst, "f"), nil, 0o644); !errors.Is(err, unix.EROFS) {
				t.Errorf("writing the top: %v, want EROFS", err)
			}
			err = os.WriteFile(filepath.Join(dst, "sub", "f"), nil, 0o644)
			if got := errors.Is(err, unix.EROFS); got != tt.subRO {
				t.Errorf("writing the submount: %v, want read-only %v", err, tt.subRO)
			}
		})
	}
}

// openRootfs opens path as a rootfsDir, closed when t ends.
func openRootfs(t *testing.T, path string) rootfsDir {
	t.Helper()
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return rootfsDir{path: path, fd: fd}
}

// inMountNamespace runs fn on a thread of its own in a new mount
// namespace, a slave of the host's: what fn mounts goes with the thread,
// which is discarded after fn.
func inMountNamespace(t *testing.T, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
			errc <- err
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func devOf(path string) (uint64, error) {
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	return st.Dev, err
}

// A mount point whose path leads through a symlink that points out of the
// rootfs, as one swapped in after the path was checked would, is made and
// opened inside the rootfs: the symlink resolves as if the rootfs were /.
// Where it leads nowhere inside, nothing is made.
func TestOpenMountpointStaysInRoot(t *testing.T) {
	testutil.RequiresRoot(t)
	outside, dangling := t.TempDir(), t.TempDir()
	rootfs := t.TempDir()
	for link, target := range map[string]string{"abs": outside, "up": "../../../../../../..", "dangling": dangling} {
		if err := os.Symlink(target, filepath.Join(rootfs, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(rootfs, outside), 0o755); err != nil {
		t.Fatal(err)
	}
	root := openRootfs(t, rootfs)
	tests := []struct {
		rel  string
		file bool
		// want is where it lands, below the rootfs; "" for nowhere.
		want string
	}{
		{"abs/dir", false, filepath.Join(outside, "dir")},
		{"abs/sub/file", true, filepath.Join(outside, "sub", "file")},
		{"up/dir2", false, "dir2"},
		{"dangling/dir", false, ""},
	}
	for _, tt := range tests {
		fd, err := root.openMountpoint(tt.rel, tt.file)
		if tt.want == "" {
			if err == nil {
				unix.Close(fd)
				t.Errorf("%s: opened, want an error", tt.rel)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.rel, err)
			continue
		}
		got, err := os.Readlink(procFd(fd))
		unix.Close(fd)
		if want := filepath.Join(rootfs, tt.want); err != nil || got != want {
			t.Errorf("%s: opened %s (%v), want %s", tt.rel, got, err, want)
		}
	}
	for _, dir := range []string{outside, dangling} {
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("created outside the rootfs, in %s: %v", dir, entries)
		}
	}
}

// A mount whose destination is a symlink out of the rootfs lands inside
// the rootfs, where the symlink leads when the rootfs is /.
func TestMountInRootfsSymlinkDestination(t *testing.T) {
	testutil.RequiresRoot(t)
	outside := t.TempDir()
	rootfs := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(rootfs, "escape")); err != nil {
		t.Fatal(err)
	}
	inRoot := filepath.Join(rootfs, outside)
	inMountNamespace(t, func() error {
		root := openRootfs(t, rootfs)
		if err := mountInRootfs(root, specs.Mount{Destination: "/escape", Type: "tmpfs", Source: "tmpfs"}); err != nil {
			return err
		}
		var st unix.Statfs_t
		if err := unix.Statfs(inRoot, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
			t.Errorf("%s is not the tmpfs (type %#x, %v)", inRoot, st.Type, err)
		}
		d, err := devOf(outside)
		parent, perr := devOf(filepath.Dir(outside))
		if err != nil || perr != nil || d != parent {
			t.Errorf("%s outside the rootfs was mounted on (dev %d, its parent's %d; %v %v)", outside, d, parent, err, perr)
		}
		return nil
	})
}

// When sysfs cannot be mounted, the guest's /sys is bound read-only in
// every submount: /sys/fs/cgroup too.
func TestBindSysfsReadOnly(t *testing.T) {
	testutil.RequiresRoot(t)
	var sub unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &sub); err != nil || sub.Flags&unix.ST_RDONLY != 0 {
		t.Skipf("/sys/fs/cgroup is not a writable mount here (%v)", err)
	}
	rootfs := t.TempDir()
	inMountNamespace(t, func() error {
		root := openRootfs(t, rootfs)
		dst, err := root.openMountpoint("sys", false)
		if err != nil {
			return err
		}
		defer unix.Close(dst)
		if err := bindSysfs(dst, unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_NODEV, nil); err != nil {
			return err
		}
		for _, p := range []string{"sys", "sys/fs/cgroup"} {
			var st unix.Statfs_t
			if err := unix.Statfs(filepath.Join(rootfs, p), &st); err != nil {
				return err
			}
			if want := int64(unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NOEXEC | unix.ST_NODEV); st.Flags&want != want {
				t.Errorf("/%s flags %#x, want %#x set", p, st.Flags, want)
			}
		}
		return nil
	})
}
