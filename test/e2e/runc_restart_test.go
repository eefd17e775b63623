package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/test/framework"
)

// TestRuncDaemonRestart: pods keep running while crivm restarts, and state,
// logs, exec and stop work afterwards. An image in use cannot be removed.
func TestRuncDaemonRestart(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()

	// 1. A pod whose container logs a line a second.
	pod := e.podConfig("survivor")
	sbID, ctrID := e.runPod(t, pod, e.containerConfig("app", "sh", "-c", "while true; do echo beat; sleep 0.3; done"))
	st, err := e.rs.ContainerStatus(ctx, ctrID, true)
	if err != nil {
		t.Fatal(err)
	}
	logPath := st.Status.LogPath

	// 2. The image is in use: RemoveImage refuses and names the container.
	err = e.is.RemoveImage(ctx, spec(e.busybox))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), ctrID) {
		t.Errorf("removing an image in use: %v, want FailedPrecondition naming %s", err, ctrID)
	}

	// 3. Stop the daemon: the pod's processes do not notice.
	pids := processesOf(t, e, sbID, ctrID)
	if err := e.d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if !proc.Alive(p, 0, "") {
			t.Errorf("process %d died with the daemon", p)
		}
	}
	sizeBefore := fileSize(t, logPath)
	time.Sleep(time.Second)
	if fileSize(t, logPath) <= sizeBefore {
		t.Error("the container stopped logging while the daemon was down")
	}

	// 4. Restart: state, exec and logs work.
	e.d.Start(ctx)
	e.rs = e.d.RuntimeService(ctx)
	ps, err := e.rs.PodSandboxStatus(ctx, sbID, false)
	if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pod after restart: %v %v", ps, err)
	}
	cs, err := e.rs.ContainerStatus(ctx, ctrID, false)
	if err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container after restart: %v %v", cs, err)
	}
	if got := e.exec(t, ctrID, "echo", "still-here"); got != "still-here\n" {
		t.Errorf("exec after restart: %q", got)
	}

	// 5. Stop still finds the exit through conmon, which outlived the daemon.
	if err := e.rs.StopContainer(ctx, ctrID, 5); err != nil {
		t.Fatal(err)
	}
	cs, err = e.rs.ContainerStatus(ctx, ctrID, false)
	if err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED || cs.Status.ExitCode != 143 {
		t.Errorf("after stop: %v %v, want EXITED 143", cs.GetStatus(), err)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	e.checkNoLeaks(t, sbID, ctrID)
}

// processesOf returns the container and infra pids from verbose status.
func processesOf(t *testing.T, e *runcEnv, sbID, ctrID string) []int {
	t.Helper()
	_, info := e.sandboxStatus(t, sbID)
	if info.Process.Pid == 0 {
		t.Fatalf("verbose sandbox info of %s names no process", sbID)
	}
	return []int{e.containerPid(t, ctrID), info.Process.Pid}
}

func fileSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestMissingRuntimeBinary: a handler whose runtime is missing refuses pods
// with FailedPrecondition naming the binary, and creates nothing.
func TestMissingRuntimeBinary(t *testing.T) {
	ctx := context.Background()
	d := framework.NewDaemon(t, framework.DaemonOptions{Config: "[crivm.runtime.runtimes.runc]\nruntime_path = \"/nonexistent/runc\"\n"})
	d.Start(ctx)
	_, err := d.RuntimeService(ctx).RunPodSandbox(ctx, podConfig("p", "default", nil), "")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "/nonexistent/runc") {
		t.Errorf("RunPodSandbox with a missing runtime: %v, want FailedPrecondition naming /nonexistent/runc", err)
	}
	st, err := d.RuntimeService(ctx).Status(ctx, false)
	if err != nil || condition(st, runtimeapi.RuntimeReady).GetStatus() {
		t.Errorf("RuntimeReady with a missing runtime: %v %v", st, err)
	}
}
