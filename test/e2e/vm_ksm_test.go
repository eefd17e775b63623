package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/ksm"
)

// TestVMKSM: a handler with ksm = true gets its guest RAM marked mergeable
// and the host's KSM on while crivm runs; a handler without it is not
// merged; the host's setting comes back when crivm stops.
func TestVMKSM(t *testing.T) {
	requiresVM(t)
	run := ksm.SysDir + "/run"
	before, err := os.ReadFile(run)
	if err != nil {
		t.Skipf("no KSM on this host: %v", err)
	}
	if err := os.WriteFile(run, before, 0); err != nil {
		t.Skipf("KSM is not writable here (%v): crivm could not turn it on", err)
	}
	t.Cleanup(func() { os.WriteFile(run, before, 0) })
	e := newRuncEnv(t, "[crivm.runtime.runtimes.vm]", "ksm = true", "[crivm.runtime.runtimes.vm-plain]", `runtime_type = "vm"`)
	ctx := context.Background()

	// 1. KSM is on while crivm runs.
	if got := strings.TrimSpace(readFile(t, run)); got != "1" {
		t.Errorf("%s = %q while crivm runs with ksm = true, want 1", run, got)
	}

	// 2. The ksm handler's QEMU marks its RAM mergeable; the other
	//    handler's does not.
	for _, h := range []struct{ handler, want string }{{"vm", "mem-merge=on"}, {"vm-plain", "mem-merge=off"}} {
		pod := e.podConfig("ksm-" + h.handler)
		sbID, err := e.rs.RunPodSandbox(ctx, pod, h.handler)
		if err != nil {
			t.Fatal(err)
		}
		e.ids = append(e.ids, sbID)
		t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
		_, info := e.sandboxStatus(t, sbID)
		if cmd := readFile(t, fmt.Sprintf("/proc/%d/cmdline", info.Process.Pid)); !strings.Contains(cmd, h.want) {
			t.Errorf("QEMU of handler %s: %q, want %s", h.handler, strings.ReplaceAll(cmd, "\x00", " "), h.want)
		}
		if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
		if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
	}

	// 3. Stopped, crivm puts the host's value back.
	if err := e.d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(readFile(t, run)), strings.TrimSpace(string(before)); got != want {
		t.Errorf("%s = %q after crivm stopped, want the host's %q", run, got, want)
	}
	e.d.Start(ctx)
	e.rs = e.d.RuntimeService(ctx)
}
