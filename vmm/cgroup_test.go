package vmm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestSandboxCgroupPath(t *testing.T) {
	for _, tt := range []struct {
		parent, id, want string
		class            error
	}{
		{"", "abc", "/crivm/crivm-abc", nil},
		{"/kubepods/besteffort/pod1234", "abc", "/kubepods/besteffort/pod1234/crivm-abc", nil},
		{"/crivm-e2e-42", "abc", "/crivm-e2e-42/crivm-abc", nil},
		{"/kubepods/", "abc", "/kubepods/crivm-abc", nil},
		{"/", "abc", "/crivm-abc", nil},
		// path.Join cleans: a ".." cannot climb out of the hierarchy.
		{"/../../etc", "abc", "/etc/crivm-abc", nil},
		{"kubepods-besteffort-pod1.slice", "abc", "", errdefs.ErrInvalidArgument},
		{"/kubepods.slice/kubepods-pod1.slice", "abc", "", errdefs.ErrInvalidArgument},
		{"kubepods", "abc", "", errdefs.ErrInvalidArgument},
		{"/kubepods", "", "", errdefs.ErrInvalidArgument},
		{"/kubepods", "a/b", "", errdefs.ErrInvalidArgument},
	} {
		got, err := SandboxCgroupPath(tt.parent, tt.id)
		if tt.class != nil {
			if !errdefs.IsClass(err, tt.class) {
				t.Errorf("SandboxCgroupPath(%q, %q) = %q, %v: want %v", tt.parent, tt.id, got, err, tt.class)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("SandboxCgroupPath(%q, %q) = %q, %v: want %q", tt.parent, tt.id, got, err, tt.want)
		}
	}
}

// mountinfo lines as the kernel writes them.
const (
	// This project's build machines: v1 controllers one per mount, a
	// named systemd hierarchy, and a controller-less unified tree.
	mountinfoHybrid = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	// systemd's v1 layout: co-mounted controllers, extra options, a
	// second mount of one hierarchy, and one mounted at a subtree.
	mountinfoV1 = `24 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
25 24 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:5 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,cpu,cpuacct
29 24 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,net_cls,net_prio
30 24 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory
31 24 0:29 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,devices
32 24 0:30 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpuset,clone_children
33 24 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
34 24 0:32 / /sys/fs/cgroup/rdma rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,rdma
90 80 0:28 / /var/lib/x/memory rw,relatime - cgroup cgroup rw,memory
91 80 0:31 /kubepods /var/lib/y/pids rw,relatime - cgroup cgroup rw,pids
`
	mountinfoV2 = `26 21 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	// A v2 host that mounts a named v1 hierarchy for old containers.
	mountinfoV2Named = mountinfoV2 + `50 26 0:40 / /run/cgroup-systemd rw,relatime - cgroup cgroup rw,name=systemd
`
	// A space in a mount point is \040.
	mountinfoEscaped = `26 21 0:23 / /mnt/my\040cgroup rw - cgroup2 cgroup2 rw
`
)

func TestParseCgroupLayout(t *testing.T) {
	const p = "/kubepods/besteffort/pod1/crivm-abc"
	for _, tt := range []struct {
		name, mountinfo string
		version         string
		dirs            []string
		memoryDir       string
		fail            bool
	}{
		{name: "hybrid", mountinfo: mountinfoHybrid, version: "hybrid", dirs: []string{
			"/sys/fs/cgroup/cpu" + p, "/sys/fs/cgroup/cpuacct" + p, "/sys/fs/cgroup/cpuset" + p, "/sys/fs/cgroup/memory" + p,
			"/sys/fs/cgroup/freezer" + p, "/sys/fs/cgroup/blkio" + p, "/sys/fs/cgroup/pids" + p, "/sys/fs/cgroup/systemd" + p,
			"/sys/fs/cgroup/unified" + p,
		}, memoryDir: "/sys/fs/cgroup/memory" + p},
		{name: "v1 co-mounted, no devices or rdma, first mount wins", mountinfo: mountinfoV1, version: "v1", dirs: []string{
			"/sys/fs/cgroup/systemd" + p, "/sys/fs/cgroup/cpu,cpuacct" + p, "/sys/fs/cgroup/net_cls,net_prio" + p,
			"/sys/fs/cgroup/memory" + p, "/sys/fs/cgroup/cpuset" + p, "/sys/fs/cgroup/pids" + p,
		}, memoryDir: "/sys/fs/cgroup/memory" + p},
		{name: "v2", mountinfo: mountinfoV2, version: "v2", dirs: []string{"/sys/fs/cgroup" + p}, memoryDir: "/sys/fs/cgroup" + p},
		{name: "v2 with a named v1 hierarchy", mountinfo: mountinfoV2Named, version: "v2", dirs: []string{"/sys/fs/cgroup" + p}, memoryDir: "/sys/fs/cgroup" + p},
		{name: "escaped mount point", mountinfo: mountinfoEscaped, version: "v2", dirs: []string{"/mnt/my cgroup" + p}, memoryDir: "/mnt/my cgroup" + p},
		{name: "no cgroups", mountinfo: "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n", fail: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := parseCgroupLayout(strings.NewReader(tt.mountinfo))
			if tt.fail {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", l)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cg, err := newCgroup(l, p)
			if err != nil {
				t.Fatal(err)
			}
			if got := cg.Version(); got != tt.version {
				t.Errorf("version %s, want %s", got, tt.version)
			}
			if got := cg.Dirs(); !slices.Equal(got, tt.dirs) {
				t.Errorf("dirs:\n got %q\nwant %q", got, tt.dirs)
			}
			if got := cg.MemoryDir(); got != tt.memoryDir {
				t.Errorf("memory dir %q, want %q", got, tt.memoryDir)
			}
		})
	}
}

func TestNewCgroupRefuses(t *testing.T) {
	l := &cgroupLayout{Unified: "/sys/fs/cgroup"}
	for _, p := range []string{"", "/", "relative/x", "/a/../b", "/a//b", "/a/"} {
		if _, err := newCgroup(l, p); !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
			t.Errorf("newCgroup(%q): %v, want InvalidArgument", p, err)
		}
	}
}

func TestCgroupExecArgs(t *testing.T) {
	for _, tt := range []struct {
		args []string
		fds  []int
		argv []string
		fail bool
	}{
		{args: []string{"3", "2", "--", "/usr/bin/qemu", "-name", "x", "--", "y"},
			fds: []int{3, 4}, argv: []string{"/usr/bin/qemu", "-name", "x", "--", "y"}},
		{args: []string{"5", "0", "--", "/bin/true"}, argv: []string{"/bin/true"}},
		{args: []string{"3", "1", "/bin/true"}, fail: true},
		{args: []string{"3", "1", "--"}, fail: true},
		{args: []string{"2", "1", "--", "/bin/true"}, fail: true},
		{args: []string{"3", "x", "--", "/bin/true"}, fail: true},
		{args: []string{"3", "1", "--", "true"}, fail: true},
	} {
		fds, argv, err := cgroupExecArgs(tt.args)
		if tt.fail {
			if err == nil {
				t.Errorf("cgroupExecArgs(%q) = %v %q, want an error", tt.args, fds, argv)
			}
			continue
		}
		if err != nil || !slices.Equal(fds, tt.fds) || !slices.Equal(argv, tt.argv) {
			t.Errorf("cgroupExecArgs(%q) = %v %q %v, want %v %q", tt.args, fds, argv, err, tt.fds, tt.argv)
		}
	}
}

func write(t *testing.T, p, v string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCgroupCreateFake: Create on plain directories standing in for the
// hierarchies makes every level, copies cpuset.cpus and .mems down the
// cpuset levels it makes (leaving set ones alone), enables v2 controllers
// in the ancestors, and is idempotent.
func TestCgroupCreateFake(t *testing.T) {
	root := t.TempDir()
	cpuset, memory := filepath.Join(root, "cpuset"), filepath.Join(root, "memory")
	write(t, filepath.Join(cpuset, "cpuset.cpus"), "0-1\n")
	write(t, filepath.Join(cpuset, "cpuset.mems"), "0\n")
	// The kubelet's level exists with its own CPUs.
	write(t, filepath.Join(cpuset, "kubepods", "cpuset.cpus"), "1\n")
	write(t, filepath.Join(cpuset, "kubepods", "cpuset.mems"), "0\n")
	os.MkdirAll(memory, 0o755)
	l := &cgroupLayout{V1: []cgroupHierarchy{{Controllers: []string{"cpuset"}, Mount: cpuset}, {Controllers: []string{"memory"}, Mount: memory}}}
	cg, err := newCgroup(l, "/kubepods/pod1/crivm-abc")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := cg.Create(); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range cg.Dirs() {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
	for _, lv := range []string{"kubepods/pod1", "kubepods/pod1/crivm-abc"} {
		if got := read(t, filepath.Join(cpuset, lv, "cpuset.cpus")); got != "1\n" {
			t.Errorf("%s cpuset.cpus %q, want the kubelet's level's 1", lv, got)
		}
		if got := read(t, filepath.Join(cpuset, lv, "cpuset.mems")); got != "0\n" {
			t.Errorf("%s cpuset.mems %q", lv, got)
		}
	}
	if _, err := os.Stat(filepath.Join(memory, "kubepods", "pod1", "crivm-abc", "cpuset.cpus")); err == nil {
		t.Errorf("cpuset files written in the memory hierarchy")
	}

	// v2: controllers the kernel offers are enabled in the ancestors.
	unified := filepath.Join(root, "unified")
	write(t, filepath.Join(unified, "cgroup.controllers"), "cpuset cpu io memory pids rdma\n")
	write(t, filepath.Join(unified, "cgroup.subtree_control"), "cpu memory\n")
	write(t, filepath.Join(unified, "kubepods", "cgroup.controllers"), "cpu memory pids\n")
	write(t, filepath.Join(unified, "kubepods", "cgroup.subtree_control"), "cpu memory pids\n")
	cg2, _ := newCgroup(&cgroupLayout{Unified: unified}, "/kubepods/crivm-abc")
	if err := cg2.Create(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(unified, "cgroup.subtree_control")); got != "+cpuset +io +pids" {
		t.Errorf("root subtree_control written %q, want the missing ones", got)
	}
	if got := read(t, filepath.Join(unified, "kubepods", "cgroup.subtree_control")); got != "cpu memory pids\n" {
		t.Errorf("kubepods subtree_control rewritten: %q", got)
	}
	if _, err := os.Stat(filepath.Join(unified, "kubepods", "crivm-abc")); err != nil {
		t.Error(err)
	}
}

// TestCgroupMemoryLimit: the tightest limit among the ancestors, with v1's
// "unlimited" and v2's "max" skipped, and the hierarchy's root ignored.
func TestCgroupMemoryLimit(t *testing.T) {
	const unlimitedV1 = "9223372036854771712\n"
	for _, tt := range []struct {
		name  string
		v2    bool
		files map[string]string // level -> limit file content
		want  uint64
		at    string
	}{
		{name: "v1 pod limit", files: map[string]string{"": "1024\n", "kubepods": unlimitedV1, "kubepods/pod1": "536870912\n"}, want: 512 << 20, at: "/kubepods/pod1"},
		{name: "v1 tighter above", files: map[string]string{"kubepods": "268435456\n", "kubepods/pod1": "536870912\n"}, want: 256 << 20, at: "/kubepods"},
		{name: "v1 none", files: map[string]string{"kubepods": unlimitedV1, "kubepods/pod1": unlimitedV1}},
		{name: "v1 parent missing", files: map[string]string{}},
		{name: "v2 pod limit", v2: true, files: map[string]string{"kubepods": "max\n", "kubepods/pod1": "402653184\n"}, want: 384 << 20, at: "/kubepods/pod1"},
		{name: "v2 none", v2: true, files: map[string]string{"kubepods": "max\n", "kubepods/pod1": "max\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mount := t.TempDir()
			l := &cgroupLayout{V1: []cgroupHierarchy{{Controllers: []string{"memory"}, Mount: mount}}}
			file := "memory.limit_in_bytes"
			if tt.v2 {
				l, file = &cgroupLayout{Unified: mount}, "memory.max"
			}
			for lv, v := range tt.files {
				write(t, filepath.Join(mount, lv, file), v)
			}
			cg, _ := newCgroup(l, "/kubepods/pod1/crivm-abc")
			// The cgroup's own level is not consulted: it is made after.
			write(t, filepath.Join(mount, "kubepods/pod1/crivm-abc", file), "1\n")
			got, at, err := cg.MemoryLimit()
			if err != nil || got != tt.want || at != tt.at {
				t.Errorf("MemoryLimit() = %d %q %v, want %d %q", got, at, err, tt.want, tt.at)
			}
		})
	}
}

// cgroupOf returns pid's cgroup path in the v1 hierarchy holding
// controller, or in the unified tree for "".
func cgroupOf(t *testing.T, pid int, controller string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if (controller == "" && f[0] == "0" && f[1] == "") || (controller != "" && slices.Contains(strings.Split(f[1], ","), controller)) {
			return f[2]
		}
	}
	return ""
}

// TestCgroupPlacement: on this host's real hierarchies, a process started
// through place is in the cgroup from the start (the v1 shim, or
// CLONE_INTO_CGROUP on a cgroup2 tree), keeps its pid through the shim's
// exec, and Remove takes the cgroup away once it has exited.
func TestCgroupPlacement(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	host, err := hostCgroupLayout()
	if err != nil {
		t.Skip(err)
	}
	parent := fmt.Sprintf("/crivm-vmmtest-%d", time.Now().UnixNano()%1000000)
	layouts := map[string]*cgroupLayout{"host": host}
	if !host.v2() && host.Unified != "" {
		// A hybrid host's unified tree is a real cgroup2 hierarchy:
		// CLONE_INTO_CGROUP works there too.
		layouts["unified only"] = &cgroupLayout{Unified: host.Unified}
	}
	for name, l := range layouts {
		t.Run(name, func(t *testing.T) {
			cg, err := newCgroup(l, parent+"/crivm-"+strings.ReplaceAll(name, " ", "-"))
			if err != nil {
				t.Fatal(err)
			}
			parentCg, _ := newCgroup(l, parent)
			t.Cleanup(func() { cg.Remove(context.Background()); parentCg.Remove(context.Background()) })
			if err := cg.Create(); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/bin/sleep", "30")
			release, err := cg.place(cmd)
			if err != nil {
				t.Fatal(err)
			}
			err = cmd.Start()
			release()
			if err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			// The shim keeps the pid through its exec.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == "sleep" {
					break
				}
			}
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) != "sleep" {
				t.Fatalf("pid %d is %q, want sleep", pid, b)
			}
			controllers := []string{""}
			if !l.v2() {
				controllers = []string{"memory", "cpu", "cpuacct", "pids", "cpuset"}
			}
			for _, c := range controllers {
				if got := cgroupOf(t, pid, c); got != cg.Path {
					t.Errorf("controller %q: pid %d in %q, want %q", c, pid, got, cg.Path)
				}
			}
			defer func(d time.Duration) { cgroupRemoveWait = d }(cgroupRemoveWait)
			cgroupRemoveWait = 200 * time.Millisecond
			if err := cg.Remove(context.Background()); err == nil {
				t.Errorf("Remove with a process inside succeeded")
			} else {
				t.Logf("busy: %v", err)
			}
			cmd.Process.Kill()
			cmd.Wait()
			if err := cg.Remove(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, d := range cg.Dirs() {
				if _, err := os.Stat(d); !os.IsNotExist(err) {
					t.Errorf("%s left behind (%v)", d, err)
				}
			}
		})
	}
}

// testCgroupTree gives a test cgroups named leaves below a parent of its
// own (root and the host's hierarchies required); the cleanup kills what
// is left in them and removes them all.
func testCgroupTree(t *testing.T, name string, leaves ...string) (*cgroupLayout, []*Cgroup) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	host, err := hostCgroupLayout()
	if err != nil {
		t.Skip(err)
	}
	parent := fmt.Sprintf("/crivm-vmmtest-%s-%d", name, time.Now().UnixNano()%1000000)
	parentCg, err := newCgroup(host, parent)
	if err != nil {
		t.Fatal(err)
	}
	var cgs []*Cgroup
	for _, l := range leaves {
		cg, err := newCgroup(host, parent+"/"+l)
		if err != nil {
			t.Fatal(err)
		}
		cgs = append(cgs, cg)
	}
	t.Cleanup(func() {
		for _, cg := range cgs {
			cg.KillAll()
			cg.Remove(context.Background())
		}
		parentCg.Remove(context.Background())
	})
	return host, cgs
}

// TestCgroupMove moves a running process into a cgroup made for it.
func TestCgroupMove(t *testing.T) {
	host, cgs := testCgroupTree(t, "move", "crivm-moved")
	cg := cgs[0]
	cmd := exec.Command("/bin/sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if got := cgroupOf(t, pid, ""); got == cg.Path {
		t.Fatalf("pid %d starts in %s already", pid, got)
	}
	if err := cg.Move(context.Background(), pid); err != nil {
		t.Fatal(err)
	}
	controllers := []string{""}
	if !host.v2() {
		controllers = []string{"memory", "cpu", "pids"}
	}
	for _, c := range controllers {
		if got := cgroupOf(t, pid, c); got != cg.Path {
			t.Errorf("controller %q: pid %d in %q after Move, want %q", c, pid, got, cg.Path)
		}
	}
}

// TestCgroupMoveAll moves a process and its child from one cgroup to
// another: the first is empty afterwards.
func TestCgroupMoveAll(t *testing.T) {
	host, cgs := testCgroupTree(t, "moveall", "crivm-from", "crivm-to")
	from, to := cgs[0], cgs[1]
	if err := from.Create(); err != nil {
		t.Fatal(err)
	}
	// A shell with a child, started in from.
	cmd := exec.Command("/bin/sh", "-c", "sleep 30 & wait")
	placeAndStart(t, from, cmd)
	t.Cleanup(func() {
		to.KillAll()
		from.KillAll()
		cmd.Wait()
	})
	for deadline := time.Now().Add(5 * time.Second); len(from.procs()) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	moved := from.procs()
	if len(moved) < 2 {
		t.Fatalf("processes in the source cgroup: %v, want the shell and its child", moved)
	}
	if err := from.MoveAll(context.Background(), to); err != nil {
		t.Fatal(err)
	}
	if left := from.procs(); len(left) > 0 {
		t.Errorf("left in the source cgroup: %v", left)
	}
	for _, pid := range moved {
		if got := cgroupOf(t, pid, map[bool]string{true: "", false: "memory"}[host.v2()]); got != to.Path {
			t.Errorf("pid %d in %q after MoveAll, want %q", pid, got, to.Path)
		}
	}
}
