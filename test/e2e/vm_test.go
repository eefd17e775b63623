package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/testutil"
	"github.com/crivm/crivm/vmm"
	"github.com/crivm/crivm/vmm/assets"
	"github.com/crivm/crivm/vmm/hostprobe"
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

// sandboxStatus returns the verbose PodSandboxStatus and its decoded info.
func (e *runcEnv) sandboxStatus(t *testing.T, sbID string) (*runtimeapi.PodSandboxStatusResponse, sandboxInfo) {
	t.Helper()
	st, err := e.rs.PodSandboxStatus(context.Background(), sbID, true)
	if err != nil {
		t.Fatal(err)
	}
	var info sandboxInfo
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
		t.Fatalf("sandbox %s info: %v", sbID, err)
	}
	return st, info
}

type sandboxInfo struct {
	Handler string `json:"handler"`
	Process struct {
		Pid int `json:"pid"`
	} `json:"process"`
	Extra map[string]string `json:"extra"`
}

// TestVMSandbox: an untrusted pod boots its own VM, whose kernel is not the
// host's; its containers run in the guest with their logs, exec and exit
// codes, and its IP answers from the host; QEMU dying makes the pod NotReady
// and its containers VMExited, with events; removal leaves no process, tap,
// netns or directory.
func TestVMSandbox(t *testing.T) {
	requiresVM(t)
	// Containers that ask for no seccomp profile get the default one here
	// (step 3 checks the vm handler honours the key).
	e := newRuncEnv(t, "[crivm.runtime]", "seccomp_use_default_when_empty = true")
	ctx := context.Background()
	events := followEvents(t, e)

	// 1. An untrusted pod gets the vm handler and a VM.
	pod := e.podConfig("vmpod")
	pod.Annotations = map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	st, info := e.sandboxStatus(t, sbID)
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
	if k, _ := assets.FindKernel(""); filepath.Dir(k) == assets.GuestKernelDir && !strings.HasSuffix(info.Extra["guest_kernel"], "-crivm") {
		t.Errorf("guest kernel %q, want crivm's own (%s), which is installed", info.Extra["guest_kernel"], k)
	}
	if cmd, _ := os.ReadFile(filepathJoin("/proc", info.Process.Pid, "comm")); !strings.HasPrefix(string(cmd), "qemu-system") {
		t.Errorf("sandbox process %d is %q, want QEMU", info.Process.Pid, cmd)
	}
	t.Logf("VM booted under %s in %s ms, guest kernel %s", info.Extra["accel"], info.Extra["boot_ms"], info.Extra["guest_kernel"])

	// 3. A container in the VM: its log, the guest kernel inside, an exec,
	//    and the pod IP reachable from the host.
	ctr := e.containerConfig("app", "sh", "-c", "echo hello-from-vm; uname -r; exec nc -ll -p 8080 -e echo pong")
	ctrID := e.startContainer(t, sbID, ctr, pod)
	logPath := filepath.Join(pod.LogDirectory, "app.log")
	var logData string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		if logData = string(b); strings.Contains(logData, info.Extra["guest_kernel"]) {
			break
		}
	}
	if !strings.Contains(logData, " stdout F hello-from-vm") || !strings.Contains(logData, " stdout F "+info.Extra["guest_kernel"]) {
		t.Errorf("VM container log: %q", logData)
	}
	if got := e.exec(t, ctrID, "uname", "-r"); strings.TrimSpace(got) != info.Extra["guest_kernel"] {
		t.Errorf("uname -r in the VM container: %q, want %s", got, info.Extra["guest_kernel"])
	}
	// The agent's launcher applied the runtime-default seccomp filter
	// (the container asks for none, and seccomp_use_default_when_empty is
	// on), the pod shares one PID namespace (its holder shows as pause), and the
	// container has its own cgroup namespace.
	if got := e.exec(t, ctrID, "sh", "-c", "grep ^Seccomp: /proc/self/status; cat /proc/1/comm; cat /proc/self/cgroup"); got != "Seccomp:\t2\npause\n0::/\n" {
		t.Errorf("VM container: %q, want seccomp filter mode 2, the pod's pause as PID 1 and its own cgroup namespace", got)
	}
	if pong := dialRead(st.Status.Network.Ip+":8080", 10*time.Second); string(pong) != "pong\n" {
		t.Errorf("pod IP %s:8080 from the host: %q, want pong", st.Status.Network.Ip, pong)
	}

	// 4. The log holds each line once, and exec works with a terminal.
	if n := strings.Count(logData, "hello-from-vm"); n != 1 {
		t.Errorf("VM container log holds hello-from-vm %d times, want once", n)
	}
	resp, err := e.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: ctrID, Cmd: []string{"sh", "-c", "tty; uname -r"}, Stdout: true, Tty: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := framework.Stream(ctx, resp.Url, framework.StreamOptions{Stdout: &out, TTY: true}); err != nil || !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), info.Extra["guest_kernel"]) {
		t.Errorf("tty exec in the VM: %q (%v), want a /dev/pts tty and the guest kernel", out.String(), err)
	}

	// 5. Exit codes come back from the guest.
	quick := e.containerConfig("quick", "sh", "-c", "exit 3")
	quickID := e.startContainer(t, sbID, quick, pod)
	if st := e.waitExited(t, quickID, 20*time.Second); st.ExitCode != 3 || st.Reason != "Error" {
		t.Errorf("VM container exit: %d %q, want 3 Error", st.ExitCode, st.Reason)
	}

	// 6. QEMU dies: the pod becomes NotReady and its running container
	//    exited with VMExited, with events, unprompted.
	if err := syscall.Kill(info.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	events.waitFor(t, sbID, "STOPPED", 10*time.Second)
	st, err = e.rs.PodSandboxStatus(ctx, sbID, false)
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("after QEMU died: %v %v, want NOTREADY", st.GetStatus().GetState(), err)
	}
	if cs := e.waitExited(t, ctrID, 10*time.Second); cs.Reason != "VMExited" {
		t.Errorf("container of a dead VM: reason %q, want VMExited", cs.Reason)
	}

	// 7. Removal leaves nothing: no QEMU, no VM dir, no netns, no tap.
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
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	st, info := e.sandboxStatus(t, sbID)
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
	pod := e.podConfig("vmrestart")
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	ctrID := e.startContainer(t, sbID, e.containerConfig("count", "sh", "-c", "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.1; done"), pod)
	st, info := e.sandboxStatus(t, sbID)
	logPath := filepath.Join(pod.LogDirectory, "count.log")
	waitLine := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if b, _ := os.ReadFile(logPath); strings.Contains(string(b), fmt.Sprintf(" line-%d\n", n)) {
				return
			}
		}
		t.Fatalf("the log never reached line-%d", n)
	}
	waitLine(5)
	cg := info.Extra["cgroup"]
	if cg != vmm.CgroupDefaultParent+"/crivm-"+sbID || procCgroup(info.Process.Pid, "memory") != cg {
		t.Errorf("QEMU %d in memory cgroup %q, sandbox cgroup %q: want both %s/crivm-%s", info.Process.Pid, procCgroup(info.Process.Pid, "memory"), cg, vmm.CgroupDefaultParent, sbID)
	}

	// 1. Restart the daemon: the VM keeps running (in its cgroup) and the
	//    pod stays ready.
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
	if got := procCgroup(info.Process.Pid, "memory"); got != cg {
		t.Errorf("after the restart QEMU is in memory cgroup %q, want %q", got, cg)
	}

	// 2. The container's log goes on where the old daemon left it: every
	//    line once, in order, none lost across the restart.
	b, _ := os.ReadFile(logPath)
	last := strings.Count(string(b), " stdout F line-")
	waitLine(last + 10)
	b, _ = os.ReadFile(logPath)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if _, rest, ok := strings.Cut(l, " stdout F "); ok {
			lines = append(lines, rest)
		}
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line-%d", i) {
			t.Fatalf("log line %d is %q across the restart (want line-%d): %q", i, l, i, lines)
		}
	}

	// 3. Its death is noticed by the new daemon, unprompted.
	events := followEvents(t, e)
	syscall.Kill(info.Process.Pid, syscall.SIGKILL)
	events.waitFor(t, sbID, "STOPPED", 10*time.Second)
	if cs := e.waitExited(t, ctrID, 10*time.Second); cs.Reason != "VMExited" {
		t.Errorf("container of the dead VM after a restart: %q, want VMExited", cs.Reason)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	// 4. The new daemon removes the VM's cgroup, which it did not make.
	if dirs := cgroupDirs(cg); len(dirs) > 0 {
		t.Errorf("cgroup dirs left after RemovePodSandbox: %v", dirs)
	}
}

// TestVMPodBehaviour: containers of one VM pod share localhost; a runc pod
// on the same bridge reaches the VM pod's IP; an OOM in the guest is
// reported as OOMKilled with its events; stats come from the guest; an
// untrusted pod may not mount sensitive host paths.
func TestVMPodBehaviour(t *testing.T) {
	requiresVM(t)
	vols := t.TempDir()
	e := newRuncEnv(t, "[crivm.runtime]", fmt.Sprintf("untrusted_allowed_host_paths = [%q]", vols))
	ctx := context.Background()
	events := followEvents(t, e)

	// 1. Two containers in one untrusted VM pod.
	pod := e.podConfig("vmnet")
	pod.Annotations = map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}
	vmSB, server := e.runPod(t, pod, e.containerConfig("server", "nc", "-ll", "-p", "8080", "-e", "echo", "pong"))
	side := e.startContainer(t, vmSB, e.containerConfig("side", "sleep", "3600"), pod)
	if got := e.exec(t, side, "sh", "-c", "nc -w 3 127.0.0.1 8080 </dev/null"); got != "pong\n" {
		t.Errorf("localhost between containers of a VM pod: %q", got)
	}

	// 2. A runc pod on the same bridge reaches the VM pod's IP.
	st, err := e.rs.PodSandboxStatus(ctx, vmSB, false)
	if err != nil {
		t.Fatal(err)
	}
	_, client := e.runPod(t, e.podConfig("runcclient"), e.containerConfig("cli", "sleep", "3600"))
	if got := e.exec(t, client, "sh", "-c", "nc -w 3 "+st.Status.Network.Ip+" 8080 </dev/null"); got != "pong\n" {
		t.Errorf("runc pod to VM pod %s: %q", st.Status.Network.Ip, got)
	}

	// 3. Port-forward reaches the guest's loopback through the agent.
	pf, err := e.rs.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: vmSB, Port: []int32{8080}})
	if err != nil {
		t.Fatal(err)
	}
	local, stop, err := framework.PortForward(pf.Url, 8080)
	if err != nil {
		t.Fatal(err)
	}
	if got := dialRead(local, 10*time.Second); string(got) != "pong\n" {
		t.Errorf("port-forward to the VM pod: %q, want pong", got)
	}
	stop()

	// 3b. Stats come from the guest's cgroups.
	cs, err := e.rs.ContainerStats(ctx, side)
	if err != nil || cs.GetMemory().GetWorkingSetBytes().GetValue() == 0 {
		t.Errorf("VM container stats: %v %v", cs, err)
	}

	// 3c. Resource updates land in the guest's cgroup, within the VM's
	//     size; beyond it they are refused.
	if err := e.rs.UpdateContainerResources(ctx, side, &runtimeapi.ContainerResources{Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}}); err != nil {
		t.Errorf("updating a VM container within the VM: %v", err)
	} else if got := e.exec(t, side, "cat", "/sys/fs/cgroup/memory.max"); got != "67108864\n" {
		t.Errorf("memory.max in the guest after the update: %q", got)
	}
	err = e.rs.UpdateContainerResources(ctx, side, &runtimeapi.ContainerResources{Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 4 << 30}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "exceeds the VM") {
		t.Errorf("a 4 GiB limit in a 256 MiB VM: %v, want FailedPrecondition", err)
	}

	// 4. An OOM in the guest ends OOMKilled, with its events.
	hog := e.containerConfig("hog", "sh", "-c", "x=a; while true; do x=$x$x; done")
	hog.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}
	hogID := e.startContainer(t, vmSB, hog, pod)
	events.waitFor(t, hogID, "STOPPED", 60*time.Second)
	if got := e.waitExited(t, hogID, 5*time.Second); got.Reason != "OOMKilled" {
		t.Errorf("guest OOM: reason %q exit %d, want OOMKilled", got.Reason, got.ExitCode)
	}
	if got, want := strings.Join(events.types(hogID), ","), "CREATED,STARTED,STOPPED"; got != want {
		t.Errorf("VM container events: %s, want %s", got, want)
	}
	// The agent's OOM event stream reached the daemon too.
	if err := e.d.WaitLog(10*time.Second, "the guest kernel OOM-killed a process in a container", hogID); err != nil {
		t.Error(err)
	}

	// 4b. A program that does not exist fails CreateContainer with
	//     FailedPrecondition and leaves nothing: the name is free again and
	//     the guest has no cgroup or share for it.
	ghost := e.containerConfig("ghost", "/no/such/binary")
	if _, err := e.rs.CreateContainer(ctx, vmSB, ghost, pod); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Errorf("creating a container with a missing program: %v, want FailedPrecondition naming it", err)
	}
	_, vmInfo := e.sandboxStatus(t, vmSB)
	shared, _ := os.ReadDir(filepath.Join(vmInfo.Extra["vm_dir"], "shared"))
	for _, d := range shared {
		if !slices.Contains(e.ids, d.Name()) {
			t.Errorf("the share holds %s, no container's", d.Name())
		}
	}
	ghost.Command = []string{"true"}
	ghostID, err := e.rs.CreateContainer(ctx, vmSB, ghost, pod)
	if err != nil {
		t.Errorf("the name of a failed create is not free again: %v", err)
	} else {
		e.ids = append(e.ids, ghostID)
	}

	// 4c. A program that passes CreateContainer's check (it exists and is
	//     executable) but is no program: StartContainer succeeds, for it
	//     does not wait for the exec (as runc start does not), and the
	//     container exits with StartError, exit code 128 and the exec's
	//     error, as containerd reports a failed start.
	if err := os.WriteFile(filepath.Join(vols, "notelf"), []byte("\x00\x01 not a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	notelf := e.containerConfig("notelf", "/hostbin/notelf")
	notelf.Mounts = []*runtimeapi.Mount{{HostPath: vols, ContainerPath: "/hostbin", Readonly: true}}
	notelfID := e.startContainer(t, vmSB, notelf, pod)
	if got := e.waitExited(t, notelfID, 30*time.Second); got.Reason != "StartError" || got.ExitCode != 128 || !strings.Contains(got.Message, "exec /hostbin/notelf: exec format error") {
		t.Errorf("a program the guest cannot exec: reason %q, exit %d, message %q; want StartError, 128, the exec's error", got.Reason, got.ExitCode, got.Message)
	}

	// 5. Sensitive host paths stay out of untrusted pods.
	bad := e.containerConfig("bad", "sleep", "3600")
	bad.Mounts = []*runtimeapi.Mount{{HostPath: "/proc", ContainerPath: "/hostproc"}}
	if _, err := e.rs.CreateContainer(ctx, vmSB, bad, pod); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "/proc") {
		t.Errorf("mounting /proc into an untrusted pod: %v, want FailedPrecondition naming /proc", err)
	}

	// 6. Attach is live: it sees output from the moment of attaching (not
	//    the earlier "early"), its stdin reaches the guest, and with
	//    stdin_once the end of that stdin closes the container's.
	talk := e.containerConfig("talk", "sh", "-c", "echo early; while read l; do echo got-$l; done; echo stdin-closed")
	talk.Stdin, talk.StdinOnce = true, true
	talkID := e.startContainer(t, vmSB, talk, pod)
	talkLog := filepath.Join(pod.LogDirectory, "talk.log")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if b, _ := os.ReadFile(talkLog); strings.Contains(string(b), "early") {
			break
		}
	}
	ar, err := e.rs.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: talkID, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	var attached bytes.Buffer
	err = framework.Stream(actx, ar.Url, framework.StreamOptions{Stdin: strings.NewReader("hi\n"), Stdout: &attached, Stderr: io.Discard})
	cancel()
	if err != nil || attached.String() != "got-hi\nstdin-closed\n" {
		t.Errorf("attach to a VM container: %q (%v), want got-hi and stdin-closed without the earlier output", attached.String(), err)
	}
	if st := e.waitExited(t, talkID, 10*time.Second); st.ExitCode != 0 {
		t.Errorf("talk container after its stdin closed: exit %d %q", st.ExitCode, st.Reason)
	}

	// 7. Without stdin_once the container's stdin outlives an attach
	//    session: a second session still reaches the same process.
	keep := e.containerConfig("keep", "sh", "-c", "while read l; do echo got-$l; done; echo stdin-closed")
	keep.Stdin = true
	keepID := e.startContainer(t, vmSB, keep, pod)
	for _, line := range []string{"one", "two"} {
		ar, err := e.rs.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: keepID, Stdin: true, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		var got syncBuf
		framework.Stream(actx, ar.Url, framework.StreamOptions{Stdin: strings.NewReader(line + "\n"), Stdout: &got})
		cancel()
		if got.String() != "got-"+line+"\n" {
			t.Errorf("attach session %q: %q, want only got-%s", line, got.String(), line)
		}
	}
	_ = server
}

// TestVMVirtioFS: with shared_fs = "virtio-fs" a VM pod's files reach the
// guest through its own virtiofsd: the container's root is a virtiofs
// mount, a read-only hostPath stays read-only, a writable one is written
// through to the host, and stopping the pod ends virtiofsd and leaves no
// mount behind. machine_type = "microvm" runs microvm under KVM and q35
// under TCG.
func TestVMVirtioFS(t *testing.T) {
	requiresVM(t)
	if _, err := vmm.FindVirtiofsd(""); err != nil {
		t.Skipf("virtio-fs needs virtiofsd: %v", err)
	}
	vols := t.TempDir()
	e := newRuncEnv(t, "[crivm.runtime]", fmt.Sprintf("untrusted_allowed_host_paths = [%q]", vols),
		"[crivm.runtime.runtimes.vm]", `shared_fs = "virtio-fs"`, `machine_type = "microvm"`)
	ctx := context.Background()

	// 1. The pod boots with virtio-fs and its own virtiofsd.
	ro, rw := filepath.Join(vols, "ro"), filepath.Join(vols, "rw")
	for _, d := range []string{ro, rw} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ro, "hello"), []byte("from-the-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := e.podConfig("vfspod")
	pod.Annotations = map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}
	ctr := e.containerConfig("app", "sleep", "3600")
	ctr.Mounts = []*runtimeapi.Mount{
		{HostPath: ro, ContainerPath: "/ro", Readonly: true},
		{HostPath: rw, ContainerPath: "/rw"},
	}
	sbID, ctrID := e.runPod(t, pod, ctr)
	_, info := e.sandboxStatus(t, sbID)
	fsdPid, _ := strconv.Atoi(info.Extra["virtiofsd_pid"])
	if info.Extra["shared_fs"] != "virtio-fs" || fsdPid == 0 {
		t.Fatalf("sandbox extra %v: want shared_fs virtio-fs and a virtiofsd pid", info.Extra)
	}
	if comm, _ := os.ReadFile(filepathJoin("/proc", fsdPid, "comm")); strings.TrimSpace(string(comm)) != "virtiofsd" {
		t.Errorf("virtiofsd_pid %d is %q", fsdPid, comm)
	}
	// microvm is for KVM; under TCG the handler uses q35.
	wantMachine := "q35"
	if info.Extra["accel"] == "kvm" {
		wantMachine = "microvm"
	}
	if info.Extra["machine_type"] != wantMachine {
		t.Errorf("machine_type microvm under %s ran %q, want %s", info.Extra["accel"], info.Extra["machine_type"], wantMachine)
	}

	// 2. The canary: the container's root is a virtiofs mount in the guest.
	if got := e.exec(t, ctrID, "sh", "-c", "awk '$2 == \"/\" {print $3}' /proc/mounts"); strings.TrimSpace(got) != "virtiofs" {
		t.Errorf("container root fs type %q, want virtiofs", got)
	}

	// 3. hostPath mounts: read-only stays read-only, writable writes through.
	if got := e.exec(t, ctrID, "cat", "/ro/hello"); got != "from-the-host\n" {
		t.Errorf("/ro/hello in the guest: %q", got)
	}
	_, stderr, err := e.rs.ExecSync(ctx, ctrID, []string{"sh", "-c", "echo x > /ro/new"}, 10*time.Second)
	if err == nil || !strings.Contains(string(stderr), "Read-only file system") {
		t.Errorf("writing to the read-only hostPath: %v (stderr %q), want a read-only error", err, stderr)
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); err == nil {
		t.Errorf("a write to the read-only hostPath reached the host")
	}
	e.exec(t, ctrID, "sh", "-c", "echo from-the-guest > /rw/out")
	if b, _ := os.ReadFile(filepath.Join(rw, "out")); string(b) != "from-the-guest\n" {
		t.Errorf("host side of the writable hostPath: %q", b)
	}

	// 4. Stop and remove: virtiofsd ends, nothing stays mounted.
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if proc.Alive(fsdPid, 0, "") {
		t.Errorf("virtiofsd %d alive after StopPodSandbox", fsdPid)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), info.Extra["vm_dir"]) {
		t.Errorf("mounts under %s left behind", info.Extra["vm_dir"])
	}
	if _, err := os.Stat(info.Extra["vm_dir"]); !os.IsNotExist(err) {
		t.Errorf("VM dir %s left behind (%v)", info.Extra["vm_dir"], err)
	}
}

// TestVMVsock: with agent_transport = "vsock" the host reaches the agent
// over vhost-vsock: the pod boots, its container runs, exec and logs work.
func TestVMVsock(t *testing.T) {
	requiresVM(t)
	if ok, why := hostprobe.VhostVsockAvailable(); !ok {
		t.Skipf("the vsock transport cannot run here: %s", why)
	}
	e := newRuncEnv(t, "[crivm.runtime.runtimes.vm]", `agent_transport = "vsock"`)
	pod := e.podConfig("vsockpod")
	pod.Annotations = map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}
	sbID, ctrID := e.runPod(t, pod, e.containerConfig("app", "sh", "-c", "echo over-vsock; exec sleep 3600"))
	_, info := e.sandboxStatus(t, sbID)
	if info.Extra["transport"] != "vsock" {
		t.Fatalf("transport %q, want vsock", info.Extra["transport"])
	}
	if got := e.exec(t, ctrID, "uname", "-r"); strings.TrimSpace(got) != info.Extra["guest_kernel"] {
		t.Errorf("exec over vsock: %q", got)
	}
	logPath := filepath.Join(pod.LogDirectory, "app.log")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), " stdout F over-vsock") {
			return
		}
	}
	t.Errorf("the container's output never reached its log over vsock")
}

// TestVMDistroKernel: a handler that names the distro's kernel boots it,
// its modules carried in the initrd, instead of crivm's own guest kernel;
// its pods run containers with network and the share.
func TestVMDistroKernel(t *testing.T) {
	requiresVM(t)
	kernel, err := assets.FindHostKernel()
	if err != nil {
		t.Skipf("no distro kernel: nothing to boot but crivm's own (%v)", err)
	}
	e := newRuncEnv(t, "[crivm.runtime.runtimes.vm]", fmt.Sprintf("kernel = %q", kernel))

	// 1. A VM pod boots the named kernel.
	p := e.runFactoryPod(t, "distro", "echo hello-from-distro; exec nc -ll -p 8080 -e echo pong")
	if got, want := "vmlinuz-"+p.info.Extra["guest_kernel"], filepath.Base(kernel); got != want {
		t.Fatalf("guest kernel %s, want %s", got, want)
	}
	if got := strings.TrimSpace(e.exec(t, p.ctrID, "uname", "-r")); got != p.info.Extra["guest_kernel"] {
		t.Errorf("uname -r in the container: %q, want %s", got, p.info.Extra["guest_kernel"])
	}

	// 2. Its modules were loaded: the share (9p) serves the rootfs, the
	//    NIC (virtio_net) the pod IP.
	if pong := dialRead(p.ip+":8080", 10*time.Second); string(pong) != "pong\n" {
		t.Errorf("pod IP %s:8080 from the host: %q, want pong", p.ip, pong)
	}
	e.removeFactoryPods(t, []factoryPod{p})
}
