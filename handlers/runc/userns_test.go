package runc

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestRuntimeHasUserns(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want bool
	}{
		{"runc 1.1", `{"linux": {"namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]}}`, true},
		{"no user namespace", `{"linux": {"namespaces": ["mount", "pid"]}}`, false},
		{"no linux section", `{"mountOptions": ["rro"]}`, false},
		{"not JSON (crun 1.8: no features command)", "unknown command features", false},
	}
	for _, tt := range tests {
		f, _ := parseFeatures([]byte(tt.doc))
		if got := f.hasUserns(); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestIsBind(t *testing.T) {
	tests := []struct {
		m    specs.Mount
		want bool
	}{
		{specs.Mount{Destination: "/vol", Type: "bind", Source: "/x", Options: []string{"rbind", "rw"}}, true},
		{specs.Mount{Destination: "/etc/hosts", Source: "/x", Options: []string{"bind", "ro"}}, true},
		{specs.Mount{Destination: "/proc", Type: "proc", Source: "proc"}, false},
		{specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid"}}, false},
	}
	for _, tt := range tests {
		if got := isBind(&tt.m); got != tt.want {
			t.Errorf("%+v: got %v, want %v", tt.m, got, tt.want)
		}
	}
}

// TestStageUserns: the rootfs is staged as is and every bind source as an
// idmapped clone in the given user namespace, below directories any uid
// may search; unstaging keeps the rootfs until asked, and leaves nothing.
func TestStageUserns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts")
	}
	const base = 300000
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: 65536}},
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot create a user namespace: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	src := t.TempDir()
	rootfs, vol, img := filepath.Join(src, "rootfs"), filepath.Join(src, "vol"), filepath.Join(src, "img")
	hosts := filepath.Join(src, "hosts")
	for _, d := range []string{rootfs, vol, img} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(vol, "f"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(img, "f"), []byte("x"), 0o600)
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644)

	h := &Handler{dir: filepath.Join(searchableTempDir(t), "handlers", "runc")}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	maps := []specs.LinuxIDMapping{{ContainerID: 0, HostID: base, Size: 65536}}
	spec := &specs.Spec{
		Root:  &specs.Root{Path: rootfs},
		Linux: &specs.Linux{UIDMappings: maps, GIDMappings: maps},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/vol", Type: "bind", Source: vol, Options: []string{"rbind", "rw"}},
			{Destination: "/etc/hosts", Type: "bind", Source: hosts, Options: []string{"bind", "ro"}},
			{Destination: "/img", Type: "bind", Source: img, Options: []string{"rbind", "ro"}},
		},
	}
	const id = "c1"
	if err := h.stageUserns(context.Background(), id, spec, "/proc/"+strconv.Itoa(cmd.Process.Pid)+"/ns/user", map[string]bool{img: true}); err != nil {
		t.Fatal(err)
	}
	dir := h.staging(id)
	t.Cleanup(func() { h.unstageUserns(id, false) })
	if spec.Root.Path != filepath.Join(dir, "rootfs") || spec.Mounts[0].Source != "proc" ||
		spec.Mounts[1].Source != filepath.Join(dir, "1") || spec.Mounts[2].Source != filepath.Join(dir, "2") {
		t.Fatalf("staged spec: root %s, sources %s %s %s", spec.Root.Path, spec.Mounts[0].Source, spec.Mounts[1].Source, spec.Mounts[2].Source)
	}
	// Every directory down to the staging dir is searchable by others; the
	// staging dir is the container root's own.
	for d := filepath.Dir(dir); d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 == 0 {
			t.Errorf("%s: %v, mode %v: not searchable", d, err, fi.Mode())
		}
	}
	var dst unix.Stat_t
	if err := unix.Stat(dir, &dst); err != nil || dst.Uid != base || dst.Gid != base || dst.Mode&0o777 != 0o700 {
		t.Errorf("staging dir: %v, owner %d:%d mode %o, want %d:%d 0700", err, dst.Uid, dst.Gid, dst.Mode&0o777, base, base)
	}
	// Through the idmapped clone, what host root owns belongs to the
	// mapped root; the rootfs and the source already mapped are plain
	// binds.
	for p, want := range map[string]uint32{
		filepath.Join(dir, "1", "f"): base, filepath.Join(dir, "2"): base, filepath.Join(dir, "rootfs"): 0, filepath.Join(dir, "3", "f"): 0,
	} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil || st.Uid != want {
			t.Errorf("%s: %v, owner %d, want %d", p, err, st.Uid, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "2")); err != nil || !strings.Contains(string(b), "localhost") {
		t.Errorf("staged hosts file: %q %v", b, err)
	}

	if err := h.unstageUserns(id, true); err != nil {
		t.Fatal(err)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 1 || left[0].Name() != "rootfs" || !mounted(t, filepath.Join(dir, "rootfs")) {
		t.Errorf("after unstaging the binds: %v", left)
	}
	if err := h.unstageUserns(id, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("staging dir after unstaging: %v", err)
	}
	if err := h.unstageUserns(id, false); err != nil {
		t.Errorf("unstaging twice: %v", err)
	}
	// The sources are untouched.
	if b, err := os.ReadFile(filepath.Join(vol, "f")); err != nil || string(b) != "x" {
		t.Errorf("volume after unstaging: %q %v", b, err)
	}

	// A failed staging leaves nothing: a missing bind source.
	spec = &specs.Spec{Root: &specs.Root{Path: rootfs}, Linux: &specs.Linux{UIDMappings: maps, GIDMappings: maps}, Mounts: []specs.Mount{{Destination: "/v", Type: "bind", Source: filepath.Join(src, "missing"), Options: []string{"rbind"}}}}
	if err := h.stageUserns(context.Background(), "c2", spec, "/proc/"+strconv.Itoa(cmd.Process.Pid)+"/ns/user", nil); err == nil {
		t.Fatal("staging a missing source succeeded")
	}
	if _, err := os.Stat(h.staging("c2")); !os.IsNotExist(err) {
		t.Errorf("after a failed staging: %v", err)
	}
}

// searchableTempDir is a temp dir that every uid may search, as the
// runroot is.
func searchableTempDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{d, filepath.Dir(d)} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func mounted(t *testing.T, p string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

// TestUsernsSupportedRunc: this host's runc (1.1.5) and kernel run pods in
// their own user namespace.
func TestUsernsSupportedRunc(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts")
	}
	path, err := exec.LookPath("runc")
	if err != nil {
		t.Skipf("requires runc: %v", err)
	}
	h := &Handler{dir: filepath.Join(searchableTempDir(t), "handlers", "runc"), rt: runtime{path: path}, features: onceFeatures(path)}
	os.MkdirAll(h.dir, 0o700)
	if !h.usernsSupported() {
		t.Errorf("user namespaces not supported: %s", h.usernsUnsupportedReason())
	}
	h2 := &Handler{dir: filepath.Join(searchableTempDir(t), "handlers", "x"), rt: runtime{path: "/bin/false"}, features: onceFeatures("/bin/false")}
	if h2.usernsSupported() || h2.usernsUnsupportedReason() == "" {
		t.Error("a runtime without features supports user namespaces")
	}
}
