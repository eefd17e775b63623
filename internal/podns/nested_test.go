package podns

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/test/testutil"
)

const nestedEnv = "CRIVM_PODNS_NESTED"

// A daemon that runs in a mount namespace of its own (a container, a unit
// with PrivateTmp, the e2e tests' private systemd) still pins every pod
// namespace, whichever CPU made its own namespace and whichever CPU a
// pod's is made on (see Create on Linux 6.18's per-CPU namespace numbers).
func TestCreateInNestedNamespace(t *testing.T) {
	testutil.RequiresRoot(t)
	unshare := testutil.RequiresBinary(t, "unshare")
	taskset := testutil.RequiresBinary(t, "taskset")
	if os.Getenv(nestedEnv) != "" {
		createInNested(t)
		return
	}
	all := cpusToTry()[1:]
	allList := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(all)), ","), "[]")
	for _, cpu := range all[:min(len(all), 4)] {
		t.Run(fmt.Sprintf("daemon namespace made on CPU %d", cpu), func(t *testing.T) {
			// 1. Make the daemon's namespace on cpu and run the test
			// binary in it, on every CPU again.
			cmd := exec.Command(taskset, "-c", fmt.Sprint(cpu), unshare, "--mount", "--propagation", "private",
				taskset, "-c", allList, os.Args[0], "-test.run=^TestCreateInNestedNamespace$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), nestedEnv+"=1")
			out, err := cmd.CombinedOutput()
			// 2. Every Create in there pinned its namespace.
			if err != nil || !strings.Contains(string(out), "--- PASS: TestCreateInNestedNamespace") {
				t.Fatalf("in a namespace made on CPU %d: %v\n%s", cpu, err, out)
			}
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, "kernel") {
					t.Log(strings.TrimSpace(l))
				}
			}
		})
	}
}

// createInNested runs in the nested namespace: it says which CPUs' new
// namespaces the kernel refuses to bind here, then creates and releases
// pod namespaces, each of which must be pinned.
func createInNested(t *testing.T) {
	var refused []int
	for _, cpu := range cpusToTry()[1:] {
		if !bareBindWorks(t, cpu) {
			refused = append(refused, cpu)
		}
	}
	t.Logf("the kernel refuses to bind a bare namespace made on CPUs %v here (Create retries those)", refused)
	for range 4 * len(cpusToTry()) {
		_, pin := newPod(t)
		if err := Release(pin); err != nil {
			t.Fatal(err)
		}
	}
}

// bareBindWorks makes an empty mount namespace on cpu and reports whether
// binding its file is allowed.
func bareBindWorks(t *testing.T, cpu int) bool {
	t.Helper()
	fd := -1
	onSpareThread(func() {
		var set unix.CPUSet
		set.Set(cpu)
		if unix.SchedSetaffinity(0, &set) == nil && unix.Unshare(unix.CLONE_FS|unix.CLONE_NEWNS) == nil {
			fd, _ = unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		}
	})
	if fd < 0 {
		t.Fatalf("making a bare namespace on CPU %d failed", cpu)
	}
	defer unix.Close(fd)
	pin := t.TempDir() + "/pin"
	if err := os.WriteFile(pin, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), pin, "", unix.MS_BIND, ""); err != nil {
		return false
	}
	if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	return true
}
