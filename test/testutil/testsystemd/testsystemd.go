// Package testsystemd runs a systemd for a test where systemd is not PID 1
// (this project's build machines are containers): PID 1 of its own PID,
// mount and cgroup namespaces rooted at /crivm-test-sd-<pid> of every
// hierarchy, its /run a tmpfs. systemd refuses D-Bus peers outside its PID
// namespace and names cgroups from its namespace's root, so the test runs
// again inside those namespaces (Run), as on a systemd host.
//
// It imports nothing of crivm's but test/testutil, so vmm's internal
// tests can use it.
package testsystemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/crivm/crivm/test/testutil"
)

const (
	// Binary is the systemd a test runs.
	Binary = "/lib/systemd/systemd"
	// insideEnv marks the test binary Run runs.
	insideEnv = "CRIVM_TEST_IN_TEST_SYSTEMD"
)

// cgroupMount is one cgroup hierarchy mounted on this host.
type cgroupMount struct{ dir, fstype, opts string }

// hostCgroupMounts are the cgroup hierarchies in this process's
// mountinfo, each once, with the options that mount it again.
func hostCgroupMounts(t *testing.T) []cgroupMount {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []cgroupMount
	seen := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || f[3] != "/" || (g[0] != "cgroup" && g[0] != "cgroup2") {
			continue
		}
		var opts []string
		for _, o := range strings.Split(g[2], ",") {
			if g[0] == "cgroup" && o != "rw" && o != "ro" && !strings.HasPrefix(o, "release_agent") && o != "clone_children" && o != "xattr" && o != "noprefix" {
				opts = append(opts, o)
			}
		}
		if strings.HasPrefix(strings.Join(opts, ","), "name=") {
			opts = append([]string{"none"}, opts...)
		}
		key := g[0] + strings.Join(opts, ",")
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, cgroupMount{dir: f[4], fstype: g[0], opts: strings.Join(opts, ",")})
	}
	if len(out) == 0 {
		t.Skip("no cgroup hierarchy is mounted")
	}
	return out
}

// Start starts a systemd for the test (or skips saying why this machine
// cannot) and returns its pid, for Run. It is killed, and its cgroups
// removed, when the test ends.
func Start(t *testing.T) int {
	t.Helper()
	testutil.RequiresRoot(t)
	for _, b := range []string{Binary, "unshare", "nsenter"} {
		testutil.RequiresBinary(t, b)
	}
	// One test systemd on the machine at a time, across test binaries (go
	// test runs packages in parallel): the lock is held until the test
	// ends.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "crivm-test-systemd.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	mounts := hostCgroupMounts(t)
	name := fmt.Sprintf("crivm-test-sd-%d", os.Getpid())
	units := t.TempDir()
	if err := os.WriteFile(filepath.Join(units, "crivm-test.target"), []byte("[Unit]\nDescription=crivm test systemd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	inner := []string{"set -e", "mount -t proc proc /proc"}
	if mounts[0].dir != "/sys/fs/cgroup" {
		inner = append(inner, "mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup")
	}
	for _, m := range mounts {
		d := filepath.Join(m.dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(m.dir, f)); err == nil && m.fstype == "cgroup" {
				os.WriteFile(filepath.Join(d, f), v, 0o644)
			}
		}
		opts := ""
		if m.opts != "" {
			opts = "-o " + m.opts
		}
		inner = append(inner, fmt.Sprintf("mkdir -p %s; mount -t %s %s %s %s", m.dir, m.fstype, opts, m.fstype, m.dir))
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			RemoveCgroupTree(t, d)
		}
	})
	inner = append(inner, "mount -t tmpfs -o mode=755 tmpfs /run",
		fmt.Sprintf("exec env -i container=crivm-test SYSTEMD_UNIT_PATH=%s PATH=/usr/sbin:/usr/bin:/sbin:/bin %s --system --unit=crivm-test.target --log-target=console --log-level=notice", units, Binary))
	logPath := filepath.Join(t.TempDir(), "systemd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// unshare dies with the test (Pdeathsig, kept across exec) and takes
	// systemd with it (--kill-child).
	cmd := exec.Command("sh", "-c", `for d; do echo $$ > "$d/cgroup.procs"; done; exec unshare --pid --fork --kill-child --mount --cgroup --propagation private sh -c "$INNER"`, "sh")
	cmd.Args = append(cmd.Args, dirs...)
	cmd.Env = append(os.Environ(), "INNER="+strings.Join(inner, "\n"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := 0
	t.Cleanup(func() {
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("test systemd's output:\n%s", b)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if pid == 0 {
			kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
			pid, _ = strconv.Atoi(strings.TrimSpace(string(kids)))
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/run/systemd/private", pid)); err == nil {
			// unshare leaves the namespace's root: on v2 a cgroup with
			// processes of its own gives its children no controllers.
			for _, m := range mounts {
				os.WriteFile(filepath.Join(m.dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
			}
			return pid
		}
	}
	b, _ := os.ReadFile(logPath)
	t.Fatalf("test systemd (pid %d) made no private socket in 30 s: %s", pid, b)
	return 0
}

// RemoveCgroupTree removes dir and every cgroup below it, deepest first,
// retrying while processes exit.
func RemoveCgroupTree(t *testing.T, dir string) {
	var all []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			all = append(all, p)
		}
		return nil
	})
	slices.Reverse(all)
	for _, p := range all {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			err := syscall.Rmdir(p)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("removing test cgroup %s: %v", p, err)
				break
			}
		}
	}
}

// Run runs test name of this binary inside the namespaces of the test
// systemd pid, with env added, and fails t unless it passed.
func Run(t *testing.T, pid int, name string, env ...string) {
	t.Helper()
	// nsenter's /proc/self would be nsenter: the test binary by path.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-t", strconv.Itoa(pid), "-m", "-p", "-C", "--", self, "-test.run=^" + name + "$", "-test.v", "-test.count=1"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.Command("nsenter", args...)
	cmd.Env = append(append(os.Environ(), insideEnv+"=1"), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("inside the test systemd's namespaces:\n%s", out)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+name+" ") {
		t.Fatalf("%s did not pass", name)
	}
}

// Inside reports that this test binary is the one Run runs inside a test
// systemd's namespaces.
func Inside() bool { return os.Getenv(insideEnv) != "" }

// Conn skips a test not run by Run; in one that is, it connects to the
// test systemd once it has settled. The connection is closed when the
// test ends.
func Conn(t *testing.T) *sddbus.Conn {
	t.Helper()
	if !Inside() {
		t.Skip("run by testsystemd.Run inside a test systemd's namespaces")
	}
	var state string
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		// godbus closes a connection when its dial context ends.
		var conn *sddbus.Conn
		if conn, err = sddbus.NewSystemdConnectionContext(context.Background()); err != nil {
			continue
		}
		if state, err = conn.GetManagerProperty("SystemState"); state == `"running"` || state == `"degraded"` {
			t.Cleanup(conn.Close)
			return conn
		}
		conn.Close()
	}
	t.Fatalf("systemd did not settle in 30 s (state %s, %v)", state, err)
	return nil
}

// StartSlice starts the transient slice with a memory limit (bytes), as
// the kubelet makes a pod's.
func StartSlice(t *testing.T, conn *sddbus.Conn, slice string, limit uint64) {
	t.Helper()
	ch := make(chan string, 1)
	props := []sddbus.Property{sddbus.PropDescription("crivm test pod " + slice), {Name: "MemoryMax", Value: godbus.MakeVariant(limit)}}
	if _, err := conn.StartTransientUnitContext(context.Background(), slice, "replace", props, ch); err != nil {
		t.Fatal(err)
	}
	if r := <-ch; r != "done" {
		t.Fatalf("starting slice %s: %s", slice, r)
	}
}
