package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/test/testutil"
)

// requiresVM skips unless QEMU and a guest kernel are installed. KVM is not
// required: the handler falls back to TCG, as on the project's machines.
func requiresVM(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("VM boots take seconds under TCG: skipped with -short")
	}
	testutil.RequiresBinary(t, "qemu-system-x86_64")
	if k, _ := filepath.Glob("/boot/vmlinuz-*"); len(k) == 0 {
		t.Skip("no guest kernel: /boot/vmlinuz-* missing (install linux-image-amd64)")
	}
}

type sandboxInfo struct {
	Handler string `json:"handler"`
	Process struct {
		Pid int `json:"pid"`
	} `json:"process"`
	Extra map[string]string `json:"extra"`
}

// TestVMSandbox: an untrusted pod boots its own VM, whose kernel is not the
// host's; QEMU dying makes the pod NotReady with an event; removal leaves no
// process, tap, netns or directory; containers in VM pods are refused with a
// clear Unimplemented until the guest container lifecycle lands.
func TestVMSandbox(t *testing.T) {
	requiresVM(t)
	e := newRuncEnv(t)
	ctx := context.Background()
	var events eventLog
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	events.follow(ectx, e)
	time.Sleep(200 * time.Millisecond)

	// 1. An untrusted pod gets the vm handler and a VM.
	pod := e.podConfig("vmpod")
	pod.Annotations = map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	st, err := e.rs.PodSandboxStatus(ctx, sbID, true)
	if err != nil {
		t.Fatal(err)
	}
	var info sandboxInfo
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
		t.Fatal(err)
	}
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || info.Handler != "vm" || st.Status.Annotations["io.crivm.trust"] != "untrusted" {
		t.Fatalf("VM pod: state %v handler %q annotations %v", st.Status.State, info.Handler, st.Status.Annotations)
	}
	if !strings.HasPrefix(st.Status.Network.Ip, e.br.Prefix) {
		t.Errorf("VM pod IP %q not on %s", st.Status.Network.Ip, e.br.Subnet)
	}

	// 2. The canary: the guest runs its own kernel, and the sandbox's
	//    process is QEMU.
	hostKernel, _ := exec.Command("uname", "-r").Output()
	if g := info.Extra["guest_kernel"]; g == "" || g == strings.TrimSpace(string(hostKernel)) {
		t.Errorf("guest kernel %q, host kernel %q: want a different, non-empty guest kernel", g, strings.TrimSpace(string(hostKernel)))
	}
	if cmd, _ := os.ReadFile(filepathJoin("/proc", info.Process.Pid, "comm")); !strings.HasPrefix(string(cmd), "qemu-system") {
		t.Errorf("sandbox process %d is %q, want QEMU", info.Process.Pid, cmd)
	}
	t.Logf("VM booted under %s in %s ms, guest kernel %s", info.Extra["accel"], info.Extra["boot_ms"], info.Extra["guest_kernel"])

	// 3. Containers in VM pods are not there yet, and say so.
	_, err = e.rs.CreateContainer(ctx, sbID, e.containerConfig("app", "sleep", "3600"), pod)
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "VM pods") {
		t.Errorf("CreateContainer in a VM pod: %v, want Unimplemented naming VM pods", err)
	}

	// 4. QEMU dies: the pod becomes NotReady, with an event, unprompted.
	if err := syscall.Kill(info.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	events.waitFor(t, sbID, "STOPPED", 10*time.Second)
	st, err = e.rs.PodSandboxStatus(ctx, sbID, false)
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("after QEMU died: %v %v, want NOTREADY", st.GetStatus().GetState(), err)
	}

	// 5. Removal leaves nothing: no QEMU, no VM dir, no netns, no tap.
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if proc.Alive(info.Process.Pid, 0, "") {
		t.Errorf("QEMU %d still alive", info.Process.Pid)
	}
	if _, err := os.Stat(info.Extra["vm_dir"]); !os.IsNotExist(err) {
		t.Errorf("VM dir %s left behind (%v)", info.Extra["vm_dir"], err)
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu-system.*crivm-"+sbID[:12]).Output(); len(out) > 0 {
		t.Errorf("QEMU processes left: %s", out)
	}
}

// TestVMSandboxStop: a VM pod stopped normally powers its guest off through
// QMP, and a second stop and remove are no-ops.
func TestVMSandboxStop(t *testing.T) {
	requiresVM(t)
	e := newRuncEnv(t)
	ctx := context.Background()
	pod := e.podConfig("vmstop")
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	st, err := e.rs.PodSandboxStatus(ctx, sbID, true)
	if err != nil {
		t.Fatal(err)
	}
	var info sandboxInfo
	json.Unmarshal([]byte(st.Info["info"]), &info)
	if info.Handler != "vm" || st.Status.Annotations["io.crivm.trust"] != "trusted" {
		t.Errorf("RuntimeClass vm for a trusted pod: handler %q trust %q", info.Handler, st.Status.Annotations["io.crivm.trust"])
	}
	start := time.Now()
	for i := 0; i < 2; i++ {
		if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
	}
	if proc.Alive(info.Process.Pid, 0, "") {
		t.Errorf("QEMU %d alive after StopPodSandbox", info.Process.Pid)
	}
	t.Logf("VM stop took %v", time.Since(start))
	for i := 0; i < 2; i++ {
		if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
	}
}

func filepathJoin(dir string, pid int, name string) string {
	return filepath.Join(dir, strconv.Itoa(pid), name)
}

// TestVMDaemonRestart: a restarted daemon reattaches to a running VM through
// the QMP and agent sockets under its run dir, and notices its death again.
func TestVMDaemonRestart(t *testing.T) {
	requiresVM(t)
	e := newRuncEnv(t)
	ctx := context.Background()
	sbID, err := e.rs.RunPodSandbox(ctx, e.podConfig("vmrestart"), "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	st, err := e.rs.PodSandboxStatus(ctx, sbID, true)
	if err != nil {
		t.Fatal(err)
	}
	var info sandboxInfo
	json.Unmarshal([]byte(st.Info["info"]), &info)

	// 1. Restart the daemon: the VM keeps running and the pod stays ready.
	if err := e.d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !proc.Alive(info.Process.Pid, 0, "") {
		t.Fatal("the VM died with the daemon")
	}
	e.d.Start(ctx)
	e.rs = e.d.RuntimeService(ctx)
	if err := e.d.WaitLog(20*time.Second, "reattached to a running VM"); err != nil {
		t.Fatal(err)
	}
	st, err = e.rs.PodSandboxStatus(ctx, sbID, false)
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("after restart: %v %v", st.GetStatus().GetState(), err)
	}

	// 2. Its death is noticed by the new daemon, unprompted.
	var events eventLog
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	events.follow(ectx, e)
	time.Sleep(200 * time.Millisecond)
	syscall.Kill(info.Process.Pid, syscall.SIGKILL)
	events.waitFor(t, sbID, "STOPPED", 10*time.Second)
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
}
