package vm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy"

	"github.com/crivm/crivm/internal/mountfs"
	"github.com/crivm/crivm/internal/podns"
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

	// 1. The export exists in the pod namespace, its structure is
	// read-only there, and the host's namespace has no mount in it.
	if err := sh.create(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.destroy() })
	inNS(t, sh, func() {
		if err := os.Mkdir(filepath.Join(sh.export(), "x"), 0o755); !errors.Is(err, unix.EROFS) {
			t.Errorf("mkdir in the export: %v, want EROFS", err)
		}
	})
	hostMounts := func() []string {
		ms, err := mountfs.MountsBelow(sh.dir)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	if got, want := hostMounts(), []string{sh.pin(), sh.dir}; !slices.Equal(got, want) {
		t.Errorf("host mounts below the VM dir: %q, want %q", got, want)
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
	if got, want := hostMounts(), []string{sh.pin(), sh.dir}; !slices.Equal(got, want) {
		t.Errorf("exposing mounted in the host's namespace: %q, want %q", got, want)
	}
	inNS(t, sh, func() {
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
	})
	if b, _ := os.ReadFile(filepath.Join(rootfs, "new")); string(b) != "x" {
		t.Errorf("a write to the rootfs copy is not in the rootfs: %q", b)
	}
	// The host can remove a volume source while it is exposed: the copy
	// does not make it a mount point in the host's namespace.
	busy := filepath.Join(root, "busy")
	os.Mkdir(busy, 0o755)
	if err := sh.expose("fedcba9876543210", rootfs, []shareBind{{n: 0, src: open(busy)}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(busy); err != nil {
		t.Errorf("removing an exposed volume source: %v", err)
	}
	if err := sh.unexpose("fedcba9876543210"); err != nil {
		t.Fatal(err)
	}
	if err := sh.expose(id, rootfs, nil); err == nil {
		t.Error("exposing the same container twice succeeded")
	}

	// 3. unexpose removes the entries and their mounts; the sources stay.
	if err := sh.unexpose(id); err != nil {
		t.Fatal(err)
	}
	inNS(t, sh, func() {
		if ms, _ := mountfs.MountsBelow(exp); len(ms) > 0 {
			t.Errorf("mounts left after unexpose: %q", ms)
		}
	})
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
	if podns.Exists(sh.pin()) {
		t.Error("the pod namespace is still pinned after destroy")
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

// inNS runs fn on a thread in sh's pod namespace (not the test's
// goroutine: fn reports with t.Error, never t.Fatal).
func inNS(t *testing.T, sh share, fn func()) {
	t.Helper()
	if err := sh.inNS(func() error { fn(); return nil }); err != nil {
		t.Fatal(err)
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

// A readonly volume without recursive_read_only keeps its submounts as
// the host has them; a recursive one, and a writable one, get nothing.
func TestKeepSubmountsWritable(t *testing.T) {
	testutil.RequiresRoot(t)
	vol := t.TempDir()
	for _, m := range []struct{ at, opts string }{{"tmpfs", ""}, {"tmpfs/ro", "ro"}, {"other", ""}} {
		p := filepath.Join(vol, m.at)
		os.Mkdir(p, 0o755)
		flags := uintptr(0)
		if m.opts == "ro" {
			flags = unix.MS_RDONLY
		}
		if err := unix.Mount("tmpfs", p, "tmpfs", flags, "size=64k"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(p, unix.MNT_DETACH) })
	}
	src, err := os.OpenFile(vol, unix.O_PATH, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const id = "c1"
	guest := agentproxy.GuestMountSource(id, 0)
	mk := func() *specs.Spec {
		return &specs.Spec{Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/mnt", Type: "bind", Source: guest, Options: []string{"rbind", "ro", "nosuid"}},
			{Destination: "/z", Type: "bind", Source: "/x"},
		}}
	}
	tests := []struct {
		name string
		bind shareBind
		want []string // destinations and options after /proc
	}{
		{"readonly", shareBind{src: src, readOnly: true}, []string{
			"/mnt [rbind ro nosuid]", "/mnt/other [rbind nosuid]", "/mnt/tmpfs [rbind nosuid]", "/mnt/tmpfs/ro [rbind nosuid ro]", "/z []"}},
		{"recursive", shareBind{src: src, readOnly: true, recursiveReadOnly: true}, []string{"/mnt [rbind ro nosuid]", "/z []"}},
		{"writable", shareBind{src: src}, []string{"/mnt [rbind ro nosuid]", "/z []"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mk()
			if err := keepSubmountsWritable(s, id, []shareBind{tt.bind}); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range s.Mounts[1:] {
				got = append(got, fmt.Sprintf("%s %v", m.Destination, m.Options))
				if m.Destination != "/z" && m.Source != guest+strings.TrimPrefix(m.Destination, "/mnt") {
					t.Errorf("mount %s has source %s", m.Destination, m.Source)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("mounts = %q, want %q", got, tt.want)
			}
		})
	}
}
