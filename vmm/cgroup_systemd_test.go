package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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
	"go.podman.io/storage/pkg/reexec"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/internal/errdefs"
)

func TestExpandSlice(t *testing.T) {
	for _, tt := range []struct {
		slice, want string
		fail        bool
	}{
		{slice: "-.slice", want: "/"},
		{slice: "system.slice", want: "/system.slice"},
		{slice: "kubepods.slice", want: "/kubepods.slice"},
		{slice: "kubepods-besteffort.slice", want: "/kubepods.slice/kubepods-besteffort.slice"},
		{slice: "kubepods-burstable-pod1234_5678.slice", want: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice"},
		{slice: "a-b-c-d.slice", want: "/a.slice/a-b.slice/a-b-c.slice/a-b-c-d.slice"},
		{slice: ".slice", fail: true},
		{slice: "slice", fail: true},
		{slice: "kubepods", fail: true},
		{slice: "kubepods.scope", fail: true},
		{slice: "a--b.slice", fail: true},
		{slice: "-a.slice", fail: true},
		{slice: "a-.slice", fail: true},
		{slice: "--.slice", fail: true},
		{slice: "/kubepods.slice", fail: true},
		{slice: "kubepods.slice/x.slice", fail: true},
	} {
		got, err := ExpandSlice(tt.slice)
		if tt.fail {
			if !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
				t.Errorf("ExpandSlice(%q) = %q, %v: want InvalidArgument", tt.slice, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ExpandSlice(%q) = %q, %v: want %q", tt.slice, got, err, tt.want)
		}
	}
}

func TestSandboxScope(t *testing.T) {
	for _, tt := range []struct {
		parent, id, slice, unit, path string
		fail                          bool
	}{
		{parent: "", id: "abc", slice: "system.slice", unit: "crivm-vm-abc.scope", path: "/system.slice/crivm-vm-abc.scope"},
		{parent: "kubepods-besteffort-pod1.slice", id: "abc", slice: "kubepods-besteffort-pod1.slice", unit: "crivm-vm-abc.scope",
			path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crivm-vm-abc.scope"},
		// A path is taken by its last element, as oci takes it.
		{parent: "/kubepods.slice/kubepods-pod2.slice", id: "abc", slice: "kubepods-pod2.slice", unit: "crivm-vm-abc.scope",
			path: "/kubepods.slice/kubepods-pod2.slice/crivm-vm-abc.scope"},
		{parent: "-.slice", id: "abc", slice: "-.slice", unit: "crivm-vm-abc.scope", path: "/crivm-vm-abc.scope"},
		{parent: "/kubepods/besteffort/pod1", id: "abc", fail: true},
		{parent: ".slice", id: "abc", fail: true},
		{parent: "kubepods--pod1.slice", id: "abc", fail: true},
		{parent: "system.slice", id: "", fail: true},
		{parent: "system.slice", id: "a/b", fail: true},
	} {
		slice, unit, p, err := SandboxScope(tt.parent, tt.id)
		if tt.fail {
			if !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
				t.Errorf("SandboxScope(%q, %q) = %q %q %q, %v: want InvalidArgument", tt.parent, tt.id, slice, unit, p, err)
			}
			continue
		}
		if err != nil || slice != tt.slice || unit != tt.unit || p != tt.path {
			t.Errorf("SandboxScope(%q, %q) = %q %q %q, %v: want %q %q %q", tt.parent, tt.id, slice, unit, p, err, tt.slice, tt.unit, tt.path)
		}
	}
}

func TestCgroupExecSyncArg(t *testing.T) {
	for _, tt := range []struct {
		args []string
		sync int
		rest []string
		fail bool
	}{
		{args: []string{"3", "0", "--", "/bin/true"}, sync: -1, rest: []string{"3", "0", "--", "/bin/true"}},
		{args: []string{"-sync", "7", "8", "0", "--", "/bin/true"}, sync: 7, rest: []string{"8", "0", "--", "/bin/true"}},
		{args: []string{"-sync"}, fail: true},
		{args: []string{"-sync", "2", "3", "0", "--", "/bin/true"}, fail: true},
		{args: []string{"-sync", "x", "3", "0", "--", "/bin/true"}, fail: true},
	} {
		sync, rest, err := cgroupExecSyncArg(tt.args)
		if tt.fail {
			if err == nil {
				t.Errorf("cgroupExecSyncArg(%q) = %d %q, want an error", tt.args, sync, rest)
			}
			continue
		}
		if err != nil || sync != tt.sync || !slices.Equal(rest, tt.rest) {
			t.Errorf("cgroupExecSyncArg(%q) = %d %q %v, want %d %q", tt.args, sync, rest, err, tt.sync, tt.rest)
		}
	}
}

func TestScopeProperties(t *testing.T) {
	s := &systemdScope{Unit: "crivm-vm-abc.scope", Slice: "kubepods-pod1.slice"}
	got := map[string]any{}
	for _, p := range scopeProperties(s, 4242) {
		got[p.Name] = p.Value.Value()
	}
	want := map[string]any{
		"Description":         "crivm VM of sandbox abc",
		"Slice":               "kubepods-pod1.slice",
		"Delegate":            true,
		"DefaultDependencies": false,
		"MemoryAccounting":    true,
		"CPUAccounting":       true,
		"TasksAccounting":     true,
		"PIDs":                []uint32{4242},
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || fmt.Sprint(g) != fmt.Sprint(w) || fmt.Sprintf("%T", g) != fmt.Sprintf("%T", w) {
			t.Errorf("property %s = %#v, want %#v", k, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("properties %v, want exactly %v", got, want)
	}
}

func TestDBusAddress(t *testing.T) {
	for _, tt := range []struct{ socket, want string }{
		{"/run/systemd/private", "unix:path=/run/systemd/private"},
		{"/proc/42/root/run/systemd/private", "unix:path=/proc/42/root/run/systemd/private"},
		{"/tmp/a b,c;d=e%", "unix:path=/tmp/a%20b%2cc%3bd%3de%25"},
	} {
		if got := dbusAddress(tt.socket); got != tt.want {
			t.Errorf("dbusAddress(%q) = %q, want %q", tt.socket, got, tt.want)
		}
	}
}

// fakeLayout is a v1 layout of plain directories under a temp dir.
func fakeLayout(t *testing.T) *cgroupLayout {
	root := t.TempDir()
	l := &cgroupLayout{}
	for _, c := range []string{"memory", "name=systemd"} {
		m := filepath.Join(root, strings.TrimPrefix(c, "name="))
		if err := os.MkdirAll(m, 0o755); err != nil {
			t.Fatal(err)
		}
		l.V1 = append(l.V1, cgroupHierarchy{Controllers: []string{c}, Mount: m})
	}
	return l
}

// TestSystemdUnreachable: with no systemd at the socket, Create is
// FailedPrecondition naming the socket, a process placed in the scope
// never runs its program (the shim prints why and exits 126), and Remove
// of a scope with no directory is fine.
func TestSystemdUnreachable(t *testing.T) {
	defer func(s string) { systemdSocket = s }(systemdSocket)
	systemdSocket = filepath.Join(t.TempDir(), "no-systemd-here")
	cg, err := newCgroup(fakeLayout(t), "/kubepods.slice/crivm-vm-abc.scope")
	if err != nil {
		t.Fatal(err)
	}
	cg.scope = &systemdScope{Unit: "crivm-vm-abc.scope", Slice: "kubepods.slice"}
	err = cg.Create()
	if !errdefs.IsClass(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), systemdSocket) {
		t.Errorf("Create: %v, want FailedPrecondition naming %s", err, systemdSocket)
	}

	marker := filepath.Join(t.TempDir(), "ran")
	cmd := exec.Command("/bin/touch", marker)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	release, err := cg.place(cmd)
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Start()
	release()
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 126 {
		t.Errorf("placed process: %v, want exit status 126", err)
	}
	if !strings.Contains(stderr.String(), "connecting to systemd at "+systemdSocket) {
		t.Errorf("shim's stderr %q does not say why", stderr.String())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the program ran outside its cgroup")
	}
	if err := cg.Remove(context.Background()); err != nil {
		t.Errorf("Remove of a scope never made: %v", err)
	}

	// Once a directory exists, an unreachable systemd is an error.
	os.MkdirAll(cg.Dirs()[0], 0o755)
	if err := cg.Remove(context.Background()); !errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Remove with a directory left and no systemd: %v, want FailedPrecondition", err)
	}
}

// A systemd for the test: PID 1 of its own PID, mount and cgroup
// namespaces, the cgroup namespace rooted at /crivm-sdtest-<pid> of every
// hierarchy, its /run a tmpfs. Two re-executions of the test binary make
// it: sdNSName moves itself into the test's cgroup and clones sdInitName
// into new namespaces, which mounts the hierarchies afresh (so paths are
// the namespace's) and execs systemd.
const (
	sdNSName   = "crivm-test-systemd-ns"
	sdInitName = "crivm-test-systemd-init"
	sdBinary   = "/lib/systemd/systemd"
	// sdInsideEnv marks the test binary nsenter runs inside.
	sdInsideEnv = "CRIVM_TEST_SYSTEMD_INSIDE"
)

func init() {
	reexec.Register(sdNSName, sdNSMain)
	reexec.Register(sdInitName, sdInitMain)
}

func sdFail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "crivm test systemd: "+format+"\n", args...)
	os.Exit(1)
}

// sdNSMain: args are the layout (JSON), the test cgroup's path and the
// unit directory. It prints the init's pid and waits for it.
func sdNSMain() {
	var l cgroupLayout
	if len(os.Args) != 4 || json.Unmarshal([]byte(os.Args[1]), &l) != nil {
		sdFail("usage: %s LAYOUT CGROUP UNITDIR", sdNSName)
	}
	cg := &Cgroup{Path: os.Args[2], l: &l}
	self := []byte(strconv.Itoa(os.Getpid()))
	for _, d := range cg.Dirs() {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), self, 0o644); err != nil {
			sdFail("joining %s: %v", d, err)
		}
	}
	cmd := reexec.Command(sdInitName, os.Args[1], os.Args[3])
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP, Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		sdFail("starting init: %v", err)
	}
	// Out of the namespace's root again: on v2, a cgroup with processes
	// of its own cannot give its children controllers.
	root := []byte(strconv.Itoa(os.Getpid()))
	for _, d := range cg.Dirs() {
		os.WriteFile(filepath.Join(filepath.Dir(d), "cgroup.procs"), root, 0o644)
	}
	fmt.Println(cmd.Process.Pid)
	cmd.Wait()
}

// sdInitMain is PID 1 of the namespaces: args are the layout and the
// unit directory.
func sdInitMain() {
	var l cgroupLayout
	if len(os.Args) != 3 || json.Unmarshal([]byte(os.Args[1]), &l) != nil {
		sdFail("usage: %s LAYOUT UNITDIR", sdInitName)
	}
	mount := func(src, target, fstype, data string) {
		if err := os.MkdirAll(target, 0o755); err != nil {
			sdFail("%v", err)
		}
		if err := unix.Mount(src, target, fstype, 0, data); err != nil {
			sdFail("mounting %s on %s: %v", fstype, target, err)
		}
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		sdFail("making / private: %v", err)
	}
	mount("proc", "/proc", "proc", "")
	if len(l.V1) > 0 {
		mount("tmpfs", filepath.Dir(l.V1[0].Mount), "tmpfs", "mode=755")
		for _, h := range l.V1 {
			opts := h.Controllers
			if strings.HasPrefix(opts[0], "name=") {
				opts = append([]string{"none"}, opts...)
			}
			mount("cgroup", h.Mount, "cgroup", strings.Join(opts, ","))
		}
	}
	if l.Unified != "" {
		mount("cgroup2", l.Unified, "cgroup2", "")
	}
	mount("tmpfs", "/run", "tmpfs", "mode=755")
	env := []string{"container=crivm-test", "SYSTEMD_UNIT_PATH=" + os.Args[2], "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	err := unix.Exec(sdBinary, []string{sdBinary, "--system", "--unit=crivm-test.target", "--log-target=console", "--log-level=notice"}, env)
	sdFail("exec %s: %v", sdBinary, err)
}

// testSystemd is a running test systemd.
type testSystemd struct {
	pid    int // the init's, in the test's PID namespace
	socket string
}

// startTestSystemd starts a systemd for the test, or skips saying why
// this machine cannot.
func startTestSystemd(t *testing.T) *testSystemd {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("a test systemd needs root")
	}
	for _, b := range []string{sdBinary, "/usr/bin/nsenter"} {
		if _, err := os.Stat(b); err != nil {
			t.Skipf("a test systemd needs %s: %v", b, err)
		}
	}
	l, err := hostCgroupLayout()
	if err != nil {
		t.Skipf("no cgroup hierarchy: %v", err)
	}
	units := t.TempDir()
	if err := os.WriteFile(filepath.Join(units, "crivm-test.target"), []byte("[Unit]\nDescription=crivm test systemd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// At each hierarchy's root, as TestCgroupPlacement's: on v2 the
	// root may hold processes and still give its children controllers.
	root, err := newCgroup(l, fmt.Sprintf("/crivm-sdtest-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(t, root) })
	if err := root.createDirs(); err != nil {
		t.Fatal(err)
	}
	layout, _ := json.Marshal(l)
	log := filepath.Join(t.TempDir(), "systemd.log")
	logf, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := reexec.Command(sdNSName, string(layout), root.Path, units)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var line [32]byte
	n, _ := out.Read(line[:])
	pid, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
	if err != nil {
		cmd.Wait()
		b, _ := os.ReadFile(log)
		t.Fatalf("starting a test systemd: no pid reported (%q): %s", line[:n], b)
	}
	sd := &testSystemd{pid: pid, socket: fmt.Sprintf("/proc/%d/root/run/systemd/private", pid)}
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("test systemd's log:\n%s", b)
		}
	})
	// Its socket is there once it listens. systemd refuses a peer
	// outside its PID namespace (it cannot see the peer's pid), so only
	// the test inside can talk to it (waitSettled).
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sd.socket); err == nil {
			return sd
		}
	}
	b, _ := os.ReadFile(log)
	t.Fatalf("test systemd made no %s in 30 s: %s", sd.socket, b)
	return nil
}

// waitSettled waits until systemd's manager, at systemdSocket, has
// finished starting up.
func waitSettled(t *testing.T) {
	t.Helper()
	var state string
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var conn *sddbus.Conn
		if conn, err = connectSystemd(ctx); err == nil {
			state, err = conn.GetManagerProperty("SystemState")
			conn.Close()
		}
		cancel()
		if state == `"running"` || state == `"degraded"` {
			return
		}
	}
	t.Fatalf("systemd did not settle in 30 s (state %s, %v)", state, err)
}

// removeTree removes the cgroup and everything below it in every
// hierarchy, deepest first, retrying while processes exit.
func removeTree(t *testing.T, c *Cgroup) {
	for _, d := range c.Dirs() {
		var dirs []string
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, p := range dirs {
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				err := unix.Rmdir(p)
				if err == nil || errors.Is(err, unix.ENOENT) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("removing test cgroup %s: %v", p, err)
					break
				}
			}
		}
	}
}

// StartTestSystemd starts a systemd for the test (or skips saying why
// this machine cannot) and returns its pid, for RunInTestSystemd.
func StartTestSystemd(t *testing.T) int { return startTestSystemd(t).pid }

// RunInTestSystemd runs test name of this binary inside the namespaces of
// the test systemd pid, with env added, and fails t unless it passed.
func RunInTestSystemd(t *testing.T, pid int, name string, env ...string) {
	t.Helper()
	// nsenter's /proc/self would be nsenter: the test binary by path.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/nsenter", "-t", strconv.Itoa(pid), "-m", "-p", "-C", "--",
		self, "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), sdInsideEnv+"=1"), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("inside the test systemd's namespaces:\n%s", out)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+name+" ") {
		t.Fatalf("%s did not pass", name)
	}
}

// InsideTestSystemd skips a test not run by RunInTestSystemd, and waits
// for the test systemd to settle in one that is.
func InsideTestSystemd(t *testing.T) {
	t.Helper()
	if os.Getenv(sdInsideEnv) == "" {
		t.Skip("run by RunInTestSystemd inside a test systemd's namespaces")
	}
	waitSettled(t)
}

// TestSystemdScope: against a real systemd (PID 1 of namespaces of its
// own), the code runs inside those namespaces (TestSystemdScopeInside)
// as crivm runs on a systemd host.
func TestSystemdScope(t *testing.T) {
	RunInTestSystemd(t, StartTestSystemd(t), "TestSystemdScopeInside")
}

// startPlaced starts argv in cg through place and waits until the shim
// (if any) has exec'd it.
func startPlaced(t *testing.T, cg *Cgroup, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	release, err := cg.place(cmd)
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Start()
	release()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	want := filepath.Base(argv[0])
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == want {
			return cmd
		}
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	t.Fatalf("pid %d is %q, not %s (stderr: %s)", pid, b, want, stderr.String())
	return nil
}

// TestSystemdScopeInside runs in the test systemd's namespaces: the
// first process starts the scope crivm-vm-<id>.scope in the pod's slice
// (systemd's ControlGroup for it is SandboxScope's path, with Delegate and
// the slice set), a second joins it, both are in it in every hierarchy
// crivm joins, Stats reads it, and KillAll then Remove stop the unit and
// take every directory away.
func TestSystemdScopeInside(t *testing.T) {
	InsideTestSystemd(t)
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	const slice = "kubepods-burstable-pod1234.slice"
	cg, err := NewSystemdCgroup(slice, id)
	if err != nil {
		t.Fatal(err)
	}
	wantPath := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/crivm-vm-" + id + ".scope"
	if cg.Path != wantPath || cg.Unit() != "crivm-vm-"+id+".scope" {
		t.Fatalf("cgroup %s unit %s, want %s", cg.Path, cg.Unit(), wantPath)
	}
	if err := cg.Create(); err != nil {
		t.Fatal(err)
	}
	if cg.anyDir() {
		t.Fatalf("Create made a directory of the scope: systemd must")
	}
	ctx := context.Background()
	conn, err := connectSystemd(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	first := startPlaced(t, cg, "/bin/sleep", "300")
	second := startPlaced(t, cg, "/bin/sleep", "301")
	if !slices.Contains(first.Args, "-sync") || slices.Contains(second.Args, "-sync") {
		t.Errorf("first started as %q, second as %q: want only the first to wait for the scope", first.Args, second.Args)
	}
	for _, cmd := range []*exec.Cmd{first, second} {
		pid := cmd.Process.Pid
		var hierarchies []string
		for _, h := range cg.l.V1 {
			hierarchies = append(hierarchies, h.Controllers[0])
		}
		if cg.l.Unified != "" {
			hierarchies = append(hierarchies, "")
		}
		for _, c := range hierarchies {
			if got := cgroupOf(t, pid, c); got != cg.Path {
				t.Errorf("pid %d (%s): %q cgroup %q, want %q", pid, cmd.Args, c, got, cg.Path)
			}
		}
	}
	props, err := conn.GetUnitTypePropertiesContext(ctx, cg.Unit(), "Scope")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"ControlGroup": cg.Path, "Slice": slice, "Delegate": true} {
		if got := props[k]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("scope's %s = %v, want %v", k, got, want)
		}
	}
	unit, err := conn.GetUnitPropertiesContext(ctx, cg.Unit())
	if err != nil {
		t.Fatal(err)
	}
	if unit["ActiveState"] != "active" || unit["Description"] != "crivm VM of sandbox "+id {
		t.Errorf("unit %s: ActiveState %v, Description %v", cg.Unit(), unit["ActiveState"], unit["Description"])
	}
	st, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Values[cgroupstat.MemoryUsage] == 0 {
		t.Errorf("stats of the scope: no memory usage (%v)", st.Values)
	}
	if n, ok := st.Values[cgroupstat.Processes]; ok && n != 2 {
		t.Errorf("stats of the scope: %d processes, want the 2 sleeps", n)
	}

	if err := cg.KillAll(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []*exec.Cmd{first, second} {
		cmd.Wait()
	}
	if err := cg.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range cg.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", d, err)
		}
	}
	unit, err = conn.GetUnitPropertiesContext(ctx, cg.Unit())
	if err != nil {
		t.Fatal(err)
	}
	if unit["ActiveState"] == "active" || unit["LoadState"] == "loaded" {
		t.Errorf("unit %s after Remove: %v, %v", cg.Unit(), unit["LoadState"], unit["ActiveState"])
	}
	if err := cg.Remove(ctx); err != nil {
		t.Errorf("a second Remove: %v", err)
	}
}
