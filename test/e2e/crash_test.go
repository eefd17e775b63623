package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/crashpoint"
	"github.com/crivm/crivm/test/framework"
)

// stepLine matches a successful step of a RunPodSandbox in the daemon log.
var stepLine = regexp.MustCompile(`msg=step rpc=RunPodSandbox sandbox=([0-9a-f]{64}) .*step="([^"]+)" took=\S+ ok=true`)

// runPodSteps lists, in order, the steps a RunPodSandbox of sandbox id
// logged in log (the handler's nested steps included).
func runPodSteps(log, id string) []string {
	var out []string
	for _, m := range stepLine.FindAllStringSubmatch(log, -1) {
		if (id == "" || m[1] == id) && !slices.Contains(out, m[2]) {
			out = append(out, m[2])
		}
	}
	return out
}

// TestCrashDuringRunPodSandbox kills the daemon (SIGKILL, from a test build
// with internal/crashpoint) right after each step of a RunPodSandbox, for
// both handlers, restarts it, and checks that the pod is either fully there
// or fully gone: no VM, infra container, conmon, netns, veth, IP, cgroup,
// mount, VM dir or pod dir is left, and the sweep says what it released.
func TestCrashDuringRunPodSandbox(t *testing.T) {
	for _, handler := range []string{"runc", "vm"} {
		t.Run(handler, func(t *testing.T) {
			if handler == "vm" {
				requiresVM(t)
			}
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
			names := runPodSteps(e.d.Log(), sbID)
			if len(names) < 8 || names[0] != "recording the intent" || names[len(names)-1] != "dropping the intent" {
				t.Fatalf("RunPodSandbox steps %q: want the intent first and last", names)
			}
			if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
				t.Fatal(err)
			}
			if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: crashing after each of %d steps: %q", handler, len(names), names)

			for i, step := range names {
				// 2. A daemon that dies right after the step.
				if err := e.d.Stop(15 * time.Second); err != nil {
					t.Fatal(err)
				}
				e.d.Binary, e.d.Env = framework.CrashpointBinary, []string{crashpoint.EnvVar + "=" + step}
				e.d.Start(ctx)
				e.rs = e.d.RuntimeService(ctx)
				name := fmt.Sprintf("crash-%d", i)
				if _, err := e.rs.RunPodSandbox(ctx, e.podConfig(name), handler); err == nil {
					t.Fatalf("step %q: RunPodSandbox succeeded; the daemon should have died", step)
				}
				if err := e.d.Wait(30 * time.Second); err == nil || !strings.Contains(e.d.Log(), crashpoint.Marker+` "`+step+`"`) {
					t.Fatalf("step %q: the daemon did not die at the crashpoint (%v)", step, err)
				}
				var id string
				if m := regexp.MustCompile(`rpc=RunPodSandbox sandbox=([0-9a-f]{64}) pod=e2e/`+name+` `).FindAllStringSubmatch(e.d.Log(), -1); len(m) > 0 {
					id = m[len(m)-1][1]
				}
				if id == "" {
					t.Fatalf("step %q: no sandbox id in the log", step)
				}

				// 3. Restarted, it sweeps: the pod is whole or gone.
				e.d.Binary, e.d.Env = "", nil
				e.d.Start(ctx)
				e.rs = e.d.RuntimeService(ctx)
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
}
