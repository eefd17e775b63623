package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/test/testutil/testsystemd"
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
	placeAndStart(t, cg, cmd)
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

// TestSystemdScope: against a real systemd (PID 1 of namespaces of its
// own), the code runs inside those namespaces (TestSystemdScopeInside)
// as crivm runs on a systemd host.
func TestSystemdScope(t *testing.T) {
	testsystemd.Run(t, testsystemd.Start(t), "TestSystemdScopeInside")
}

// placeAndStart starts cmd in cg through place.
func placeAndStart(t *testing.T, cg *Cgroup, cmd *exec.Cmd) {
	t.Helper()
	release, err := cg.place(cmd)
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Start()
	release()
	if err != nil {
		t.Fatal(err)
	}
}

// startPlaced starts argv in cg through place and waits until the shim
// (if any) has exec'd it.
func startPlaced(t *testing.T, cg *Cgroup, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	placeAndStart(t, cg, cmd)
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
	conn := testsystemd.Conn(t)
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
