package podns

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/crivm/crivm/internal/mountfs/mountfstest"
	"github.com/crivm/crivm/test/testutil"
)

// newPod makes a VM-dir-like directory on a private mount and a namespace
// for it; the cleanup releases the pin and checks nothing stays mounted.
func newPod(t *testing.T) (dir, pin string) {
	t.Helper()
	dir = mountfstest.PrivateDir(t)
	t.Cleanup(func() {
		if err := Release(pin); err != nil {
			t.Error(err)
		}
	})
	if err := os.Mkdir(filepath.Join(dir, "nsroot"), 0o700); err != nil {
		t.Fatal(err)
	}
	pin = filepath.Join(dir, "mnt.ns")
	root := Root{
		ReadOnly: SystemDirs,
		Devices:  []string{"/dev/null", "/dev/no-such-device"},
		Writable: []string{dir},
		Tmpfs:    []string{"/var/run"},
		Scratch:  filepath.Join(dir, "nsroot"),
	}
	if err := Create(pin, root); err != nil {
		t.Fatal(err)
	}
	if !Exists(pin) {
		t.Fatal("Create left no pinned namespace")
	}
	return dir, pin
}

// inPod runs a shell script in the namespace and returns its output.
func inPod(t *testing.T, pin, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := Run(Target{MountNS: pin}, cmd.Start)
	if err == nil {
		err = cmd.Wait()
	}
	return out.String(), err
}

func TestNamespaceHoldsOnlyRoot(t *testing.T) {
	dir, pin := newPod(t)

	// 1. A process started in it sees only the root's entries.
	out, err := inPod(t, pin, "cut -d' ' -f5 /proc/self/mountinfo")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := strings.Fields(out)
	for _, want := range []string{"/", "/usr", "/dev/null", dir, "/proc"} {
		if !slices.Contains(got, want) {
			t.Errorf("mount %s missing from the namespace: %q", want, got)
		}
	}
	for _, m := range got {
		if m != "/" && !Under(m, []string{"/usr", "/dev/null", dir, "/proc", "/etc/ld.so.cache", "/var/run"}) {
			t.Errorf("host mount %s visible in the namespace", m)
		}
	}

	// 2. Read-only where the table says so, writable in the VM dir.
	cases := []struct {
		script string
		ok     bool
	}{
		{"echo x > " + dir + "/w && cat " + dir + "/w", true},
		{"touch /usr/crivm-podns-test", false},
		{"mkdir /newdir", false},
		{"cat /etc/passwd", false},
		{"echo > /dev/null", true},
		{"mkdir /var/run/x", true},
	}
	for _, c := range cases {
		out, err := inPod(t, pin, c.script)
		if got := err == nil; got != c.ok {
			t.Errorf("%q: succeeded = %v, want %v (%s)", c.script, got, c.ok, out)
		}
	}

	// 3. What it wrote in the VM dir is on the host.
	if b, err := os.ReadFile(filepath.Join(dir, "w")); err != nil || string(b) != "x\n" {
		t.Errorf("VM dir write not on the host: %q, %v", b, err)
	}

	// 4. A mount made inside does not reach the host.
	if out, err := inPod(t, pin, "mkdir -p "+dir+"/m && mount -t tmpfs none "+dir+"/m"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if m, err := mountinfo.Mounted(filepath.Join(dir, "m")); err != nil || m {
		t.Errorf("mount made in the pod namespace is on the host (%v, %v)", m, err)
	}

	// 5. Run's mount work happens inside too.
	if err := Run(Target{MountNS: pin}, func() error {
		mounted, err := mountinfo.Mounted(filepath.Join(dir, "m"))
		if err == nil && !mounted {
			t.Error("Run's thread does not see the namespace's mount")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// 6. Release drops it.
	if err := Release(pin); err != nil {
		t.Fatal(err)
	}
	if Exists(pin) {
		t.Error("pin still a namespace after Release")
	}
}

func TestCreateRefusesBadRoot(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	pin := filepath.Join(dir, "mnt.ns")
	for _, root := range []Root{
		{Scratch: "relative"},
		{Scratch: dir, ReadOnly: []string{"/usr/../etc"}},
		{Scratch: dir, Writable: []string{"/"}},
	} {
		if err := Create(pin, root); err == nil {
			Release(pin)
			t.Errorf("Create(%+v) succeeded", root)
		}
		if _, err := os.Stat(pin); !os.IsNotExist(err) {
			t.Errorf("Create(%+v) left its pin: %v", root, err)
		}
	}
}

// Run never leaves a thread of the daemon in the namespace: not the main
// thread either, which /proc/self describes and Go parks instead of
// ending when its locked goroutine exits.
func TestRunLeavesNoThreadInside(t *testing.T) {
	_, pin := newPod(t)
	self := func() string {
		s, err := os.Readlink("/proc/self/ns/mnt")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	host := self()
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			Run(Target{MountNS: pin}, func() error { return nil })
		}()
	}
	wg.Wait()
	if got := self(); got != host {
		t.Errorf("the main thread is in %s after Run, want the host's %s", got, host)
	}
	// A discarded thread ends just after its goroutine: give the last
	// ones a moment, then none may be left inside.
	inside := func() (stayed []string) {
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			if ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/mnt"); err == nil && ns != host {
				stayed = append(stayed, task.Name()+" in "+ns)
			}
		}
		return stayed
	}
	for deadline := time.Now().Add(5 * time.Second); len(inside()) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if stayed := inside(); len(stayed) > 0 {
		t.Errorf("threads stayed in the pod namespace: %q", stayed)
	}
}
