package e2e

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestTargetPIDNamespace: a container whose PID namespace mode is TARGET
// (an ephemeral container of `kubectl debug --target=app`) runs in the
// PID namespace of the container it names, in a pod whose containers
// have their own, in a runc pod and in a VM pod; a target that is
// missing, in another pod or not running is refused with a precise code.
func TestTargetPIDNamespace(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()
	ownPID := func(pod *runtimeapi.PodSandboxConfig) *runtimeapi.PodSandboxConfig {
		pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_CONTAINER
		return pod
	}
	debug := func(target string) *runtimeapi.ContainerConfig {
		c := e.containerConfig("debugger", "sh", "-c", "exec sleep 3602")
		c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: target}
		return c
	}

	// 1. A pod whose app has a PID namespace of its own.
	pod := ownPID(e.podConfig("target"))
	sbID, appID := e.runPod(t, pod, e.containerConfig("app", "sh", "-c", "exec sleep 3601"))
	if got := strings.TrimRight(e.exec(t, appID, "cat", "/proc/1/cmdline"), "\x00"); got != "sleep\x003601" {
		t.Fatalf("app's PID 1: %q, want its own sleep", got)
	}

	// 2. The debugger targets it: it sees the app's processes, the app
	//    as PID 1, and itself.
	dbgID := e.startContainer(t, sbID, debug(appID), pod)
	ps := e.exec(t, dbgID, "ps", "-o", "pid,args")
	if !strings.Contains(ps, "sleep 3601") || !strings.Contains(ps, "sleep 3602") {
		t.Errorf("ps in the debugger:\n%s\nwant the app's sleep 3601 and its own sleep 3602", ps)
	}
	if got := strings.TrimRight(e.exec(t, dbgID, "cat", "/proc/1/cmdline"), "\x00"); got != "sleep\x003601" {
		t.Errorf("the debugger's PID 1: %q, want the app's", got)
	}
	// The app does not see the debugger's namespace as its own: they are
	// one namespace, so it sees the debugger too.
	if ps := e.exec(t, appID, "ps", "-o", "args"); !strings.Contains(ps, "sleep 3602") {
		t.Errorf("ps in the app:\n%s\nwant the debugger's sleep 3602", ps)
	}

	// 3. Targets that cannot be joined.
	other := ownPID(e.podConfig("target-other"))
	otherSb, otherApp := e.runPod(t, other, e.containerConfig("app", "sh", "-c", "exec sleep 3603"))
	stopped, err := e.rs.CreateContainer(ctx, sbID, e.containerConfig("stopped", "true"), pod)
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, stopped, otherSb, otherApp)
	for _, tt := range []struct {
		name   string
		target string
		want   codes.Code
	}{
		{"no target_id", "", codes.InvalidArgument},
		{"unknown container", strings.Repeat("f", 64), codes.NotFound},
		{"a container of another pod", otherApp, codes.InvalidArgument},
		{"a container not running", stopped, codes.FailedPrecondition},
	} {
		c := debug(tt.target)
		c.Metadata.Name = "debugger-" + strings.ReplaceAll(tt.name, " ", "-")
		_, err := e.rs.CreateContainer(ctx, sbID, c, pod)
		if got := status.Code(err); got != tt.want {
			t.Errorf("%s: CreateContainer: %v, want %v", tt.name, err, tt.want)
		}
	}

	for _, id := range []string{sbID, otherSb} {
		e.rs.StopPodSandbox(ctx, id)
		e.rs.RemovePodSandbox(ctx, id)
	}

	// 4. The same in a VM pod: the agent joins the target's PID
	//    namespace in the guest.
	t.Run("vm pod", func(t *testing.T) {
		requiresVM(t)
		vmPod := ownPID(e.podConfig("target-vm"))
		vmSb, err := e.rs.RunPodSandbox(ctx, vmPod, "vm")
		if err != nil {
			t.Fatal(err)
		}
		e.ids = append(e.ids, vmSb)
		defer func() {
			e.rs.StopPodSandbox(ctx, vmSb)
			e.rs.RemovePodSandbox(ctx, vmSb)
		}()
		vmApp := e.startContainer(t, vmSb, e.containerConfig("app", "sh", "-c", "exec sleep 3604"), vmPod)
		vmDbg := e.startContainer(t, vmSb, debug(vmApp), vmPod)
		if got := strings.TrimRight(e.exec(t, vmDbg, "cat", "/proc/1/cmdline"), "\x00"); got != "sleep\x003604" {
			t.Errorf("the VM debugger's PID 1: %q, want the app's", got)
		}
		if ps := e.exec(t, vmApp, "ps", "-o", "args"); !strings.Contains(ps, "sleep 3602") {
			t.Errorf("ps in the VM app:\n%s\nwant the debugger's sleep 3602", ps)
		}
		_, err = e.rs.CreateContainer(ctx, vmSb, debug(strings.Repeat("e", 64)), vmPod)
		if status.Code(err) != codes.NotFound {
			t.Errorf("TARGET of an unknown container in a VM pod: %v, want NotFound", err)
		}
	})
}
