package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/crashpoint"
	"github.com/crivm/crivm/test/framework"
)

// rpcSteps lists, in order, the successful steps an RPC logged in log for
// the sandbox or container id (the handler's nested steps included). The
// RPC's intent must be its first step and the intent's removal its last.
func rpcSteps(t *testing.T, log, rpc, key, id string) []string {
	t.Helper()
	line := regexp.MustCompile(`msg=step rpc=` + rpc + ` .*` + key + `=` + id + ` .*step="([^"]+)" took=\S+ ok=true`)
	var out []string
	for _, m := range line.FindAllStringSubmatch(log, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	if len(out) < 4 || !strings.HasPrefix(out[0], "recording the ") || !strings.HasPrefix(out[len(out)-1], "dropping the ") {
		t.Fatalf("%s steps %q: want the intent first and its removal last", rpc, out)
	}
	return out
}

// lastMatch is the first group of pattern's last match in log: the ID of
// the object a crashed call made.
func lastMatch(t *testing.T, log, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		t.Fatalf("no %s in the daemon log", pattern)
	}
	return m[len(m)-1][1]
}

// crashAfter restarts e's daemon as the crashpoint build dying after
// step, runs call (which must fail: the daemon dies in it), checks the
// daemon died there, and restarts it normally.
func (e *runcEnv) crashAfter(t *testing.T, step string, call func() error) {
	t.Helper()
	ctx := context.Background()
	if err := e.d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	e.d.Binary, e.d.Env = framework.CrashpointBinary, []string{crashpoint.EnvVar + "=" + step}
	e.d.Start(ctx)
	e.rs = e.d.RuntimeService(ctx)
	if err := call(); err == nil {
		t.Fatalf("step %q: the call succeeded; the daemon should have died", step)
	}
	if err := e.d.Wait(30 * time.Second); err == nil || !strings.Contains(e.d.Log(), crashpoint.Marker+` "`+step+`"`) {
		t.Fatalf("step %q: the daemon did not die at the crashpoint (%v)", step, err)
	}
	e.d.Binary, e.d.Env = "", nil
	e.d.Start(ctx)
	e.rs = e.d.RuntimeService(ctx)
}

// TestCrashDuringRunPodSandbox kills the daemon (SIGKILL, from a test build
// with internal/crashpoint) right after each step of a RunPodSandbox, for
// both handlers, restarts it, and checks that the pod is either fully there
// or fully gone: no VM, infra container, conmon, netns, veth, IP, cgroup,
// mount, VM dir or pod dir is left, and the sweep says what it released.
func TestCrashDuringRunPodSandbox(t *testing.T) {
	eachHandler(t, func(t *testing.T, handler string) {
		if _, err := framework.Bin(framework.CrashpointBinary); err != nil {
			t.Fatal(err)
		}
		e := newRuncEnv(t)
		ctx := context.Background()

		// 1. One pod run to the end names the steps to crash after.
		sbID, err := e.rs.RunPodSandbox(ctx, e.podConfig("crash-probe"), handler)
		if err != nil {
			t.Fatal(err)
		}
		names := rpcSteps(t, e.d.Log(), "RunPodSandbox", "sandbox", sbID)
		if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
		if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: crashing after each of %d steps: %q", handler, len(names), names)

		for i, step := range names {
			// 2. A daemon that dies right after the step, restarted.
			name := fmt.Sprintf("crash-%d", i)
			e.crashAfter(t, step, func() error {
				_, err := e.rs.RunPodSandbox(ctx, e.podConfig(name), handler)
				return err
			})
			id := lastMatch(t, e.d.Log(), `rpc=RunPodSandbox sandbox=([0-9a-f]{64}) pod=e2e/`+name+` `)

			// 3. The sweep at the restart: the pod is whole or gone.
			pods, err := e.rs.ListPodSandbox(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			kept := false
			for _, p := range pods {
				if p.Id == id {
					kept = true
					if step != "recording sandbox" && step != "dropping the intent" {
						t.Errorf("step %q: the half-made pod is listed after the restart", step)
					}
					if err := e.rs.StopPodSandbox(ctx, id); err != nil {
						t.Fatal(err)
					}
					if err := e.rs.RemovePodSandbox(ctx, id); err != nil {
						t.Fatal(err)
					}
				}
			}
			if !kept && i > 0 {
				if err := e.d.WaitLog(5*time.Second, "released a sandbox a crash left half-made", id); err != nil {
					t.Errorf("step %q: %v", step, err)
				}
			}

			// 4. Nothing of it is left.
			e.checkNoLeaks(t, id)
			for _, dir := range []string{
				filepath.Join(e.d.Runroot, "pods", id),
				filepath.Join(e.d.Runroot, "handlers", "vm", id[:32]),
			} {
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("step %q: %s left behind (%v)", step, dir, err)
				}
			}
			if t.Failed() {
				t.Fatalf("step %q: leaks (see above)", step)
			}
		}
	})
}

// TestCrashDuringCreateContainer kills the daemon right after each step of
// a CreateContainer, for both handlers, restarts it, and checks that the
// container is either fully there or fully gone (no runc state, conmon,
// rootfs mount or guest share entry), while its pod runs on.
func TestCrashDuringCreateContainer(t *testing.T) {
	eachHandler(t, func(t *testing.T, handler string) {
		e := newRuncEnv(t)
		ctx := context.Background()
		pod := e.podConfig("crash-ctr")
		sbID, err := e.rs.RunPodSandbox(ctx, pod, handler)
		if err != nil {
			t.Fatal(err)
		}
		e.ids = append(e.ids, sbID)
		t.Cleanup(func() {
			e.rs.StopPodSandbox(context.Background(), sbID)
			e.rs.RemovePodSandbox(context.Background(), sbID)
		})

		// 1. One container created to the end names the steps.
		probe, err := e.rs.CreateContainer(ctx, sbID, e.containerConfig("probe", "sleep", "3600"), pod)
		if err != nil {
			t.Fatal(err)
		}
		names := rpcSteps(t, e.d.Log(), "CreateContainer", "container", probe)
		if err := e.rs.RemoveContainer(ctx, probe); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: crashing after each of %d steps: %q", handler, len(names), names)

		for i, step := range names {
			// 2. A daemon that dies right after the step, restarted.
			name := fmt.Sprintf("crash-%d", i)
			e.crashAfter(t, step, func() error {
				_, err := e.rs.CreateContainer(ctx, sbID, e.containerConfig(name, "sleep", "3600"), pod)
				return err
			})
			id := lastMatch(t, e.d.Log(), `rpc=CreateContainer .*container=([0-9a-f]{64}) name=k8s_`+name+`_`)

			// 3. The container is whole or gone; the pod runs on.
			ctrs, err := e.rs.ListContainers(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range ctrs {
				if c.Id != id {
					continue
				}
				if step != "recording container" && step != "dropping the container intent" {
					t.Errorf("step %q: the half-made container is listed after the restart", step)
				}
				if err := e.rs.RemoveContainer(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			if ps, err := e.rs.PodSandboxStatus(ctx, sbID, false); err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Fatalf("step %q: the pod after the restart: %v %v", step, ps, err)
			}

			// 4. Nothing of the container is left.
			out, _ := exec.Command("sh", "-c", "ps -eo args | grep -E 'conmon|runc' | grep -v grep || true").Output()
			if strings.Contains(string(out), id) {
				t.Errorf("step %q: a process of %s is left:\n%s", step, id, out)
			}
			for _, m := range mountsUnder(t, e.d.Root, e.d.Runroot) {
				if strings.Contains(m, id) {
					t.Errorf("step %q: mount left: %s", step, m)
				}
			}
			for _, p := range []string{
				filepath.Join(e.d.Runroot, "handlers", "runc", "bundles", id),
				filepath.Join(e.d.Runroot, "handlers", "vm", sbID[:32], "staging", id),
			} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("step %q: %s left (%v)", step, p, err)
				}
			}
			if t.Failed() {
				t.Fatalf("step %q: leaks (see above)", step)
			}
		}
	})
}

// TestVMAgentReconnect breaks a VM pod's agent connection twice (the test
// build's crashpoint.DropSignal hook) while a container writes a line
// every 100 ms, without restarting the daemon: the owner of the
// connection reconnects by itself, its log gets every line exactly once
// and in order, and its exit code arrives.
func TestVMAgentReconnect(t *testing.T) {
	requiresVM(t)
	e := newRuncEnv(t)
	ctx := context.Background()
	if err := e.d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	e.d.Binary = framework.CrashpointBinary
	e.d.Start(ctx)
	e.rs = e.d.RuntimeService(ctx)

	// 1. A VM pod whose container counts to 59, then exits 7.
	pod := e.podConfig("reconnect")
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() {
		e.rs.StopPodSandbox(context.Background(), sbID)
		e.rs.RemovePodSandbox(context.Background(), sbID)
	})
	const n = 60
	ctr := e.startContainer(t, sbID, e.containerConfig("counter", "sh", "-c",
		fmt.Sprintf("i=0; while [ $i -lt %d ]; do echo line $i; i=$((i+1)); sleep 0.1; done; exit 7", n)), pod)

	// 2. Its agent connection breaks twice while it runs.
	for i := range 2 {
		time.Sleep(time.Second)
		if err := e.d.Signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		if err := waitCount(e.d, "dropped every agent connection", i+1, 5*time.Second); err != nil {
			t.Fatalf("drop %d: %v", i, err)
		}
	}

	// 3. Its exit arrives, and every line is in its log once, in order.
	st := e.waitExited(t, ctr, 60*time.Second)
	if st.ExitCode != 7 {
		t.Errorf("exit code %d, want 7 (reason %q)", st.ExitCode, st.Reason)
	}
	var lines []string
	b, err := os.ReadFile(st.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// CRI log lines: timestamp stream tag message.
		if f := strings.SplitN(l, " ", 4); len(f) == 4 {
			lines = append(lines, f[3])
		}
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("line %d", i))
	}
	if !slices.Equal(lines, want) {
		t.Errorf("container log after two reconnects:\n%q\nwant line 0..%d once each", lines, n-1)
	}
	if c := strings.Count(e.d.Log(), "connected to the agent"); c < 2 {
		t.Errorf("%d agent connections in the log, want the reconnects too", c)
	}
}

// waitCount waits until s appears at least n times in d's log.
func waitCount(d *framework.Daemon, s string, n int, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Count(d.Log(), s) >= n {
			return nil
		}
	}
	return fmt.Errorf("%q not %d times in the daemon log within %v", s, n, timeout)
}

// TestCrashDuringPodTeardown kills the daemon at each point of a
// RemovePodSandbox (which stops the pod first) of a pod with a running
// container, for both handlers; after the restart a second
// RemovePodSandbox, as the kubelet retries it, succeeds and leaves
// nothing behind.
func TestCrashDuringPodTeardown(t *testing.T) {
	points := []string{
		"teardown: containers stopped", "teardown: boundary stopped", "teardown: network torn down",
		"teardown: containers removed", "teardown: handler state removed", "teardown: infra rootfs removed",
	}
	eachHandler(t, func(t *testing.T, handler string) {
		e := newRuncEnv(t)
		ctx := context.Background()
		for i, point := range points {
			// 1. A pod with a running container.
			pod := e.podConfig(fmt.Sprintf("teardown-%d", i))
			sbID, err := e.rs.RunPodSandbox(ctx, pod, handler)
			if err != nil {
				t.Fatal(err)
			}
			e.startContainer(t, sbID, e.containerConfig("app", "sleep", "3600"), pod)

			// 2. Its removal dies at the point; the daemon restarts.
			e.crashAfter(t, point, func() error { return e.rs.RemovePodSandbox(ctx, sbID) })

			// 3. The retried removal finishes, and nothing is left.
			if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
				t.Fatalf("point %q: RemovePodSandbox after the restart: %v", point, err)
			}
			if _, err := e.rs.PodSandboxStatus(ctx, sbID, false); err == nil {
				t.Errorf("point %q: the pod is still there", point)
			}
			e.checkNoLeaks(t, sbID)
			for _, dir := range []string{filepath.Join(e.d.Runroot, "pods", sbID), filepath.Join(e.d.Runroot, "handlers", "vm", sbID[:32])} {
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("point %q: %s left behind (%v)", point, dir, err)
				}
			}
			if t.Failed() {
				t.Fatalf("point %q: leaks (see above)", point)
			}
		}
	})
}
