package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/test/framework"
)

// noInfraPod is a pod as the kubelet sends it without
// shareProcessNamespace: its containers share no PID namespace.
func (e *runcEnv) noInfraPod(name string) *runtimeapi.PodSandboxConfig {
	pod := e.podConfig(name)
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_CONTAINER
	return pod
}

// noInfraContainer is a container of a noInfraPod (the kubelet names the
// PID mode in each container too).
func (e *runcEnv) noInfraContainer(name string, cmd ...string) *runtimeapi.ContainerConfig {
	c := e.containerConfig(name, cmd...)
	c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
	return c
}

// pinnedInfo is the verbose PodSandboxStatus info of a runc pod.
type pinnedInfo struct {
	Process *struct{ Pid int } `json:"process"`
	Extra   map[string]string  `json:"extra"`
}

func (e *runcEnv) pinnedInfo(t *testing.T, sbID string) (*runtimeapi.PodSandboxStatus, pinnedInfo) {
	t.Helper()
	st, err := e.rs.PodSandboxStatus(context.Background(), sbID, true)
	if err != nil {
		t.Fatal(err)
	}
	var info pinnedInfo
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
		t.Fatalf("verbose sandbox info %q: %v", st.Info["info"], err)
	}
	return st.Status, info
}

// podProcesses are the host processes of a pod's own (not its
// containers'): each whose command line names the sandbox ID (its conmon,
// runc) or whose cgroup is the sandbox's (its pause process), as "PID
// COMMAND".
func podProcesses(t *testing.T, sbID string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cgroup, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if strings.Contains(string(cmdline), sbID) || strings.Contains(string(cgroup), "crivm-"+sbID) {
			out = append(out, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	return out
}

// nsOf is the namespace a pin holds, as readlink shows it ("ipc:[N]").
func nsOf(t *testing.T, kind, pin string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(pin, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:[%d]", kind, st.Ino)
}

// containerPid is the container's init pid from its verbose status.
func (e *runcEnv) containerPid(t *testing.T, ctrID string) int {
	t.Helper()
	st, err := e.rs.ContainerStatus(context.Background(), ctrID, true)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Process struct{ Pid int } `json:"process"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.Process.Pid == 0 {
		t.Fatalf("verbose container info: %q %v", st.Info["info"], err)
	}
	return info.Process.Pid
}

// restart stops e's daemon and starts it again with the same config.
func (e *runcEnv) restart(t *testing.T) {
	t.Helper()
	if err := e.d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	e.d.Start(context.Background())
	e.rs = e.d.RuntimeService(context.Background())
}

// TestRuncNoInfra: with drop_infra_ctr (the default) a pod whose
// containers share no PID namespace runs without an infra container: its
// IPC and UTS namespaces are pinned in its dir and its containers share
// them (and its netns); everything the kubelet sees is as with one; a
// daemon restart keeps it Ready; a lost pin makes it NotReady; stop,
// remove and a crash sweep leave nothing. A pod sharing its PID namespace
// keeps its pause container, and so does every pod with drop_infra_ctr
// off.
func TestRuncNoInfra(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()

	// 1. The pod: Ready with an IP, no process, its mode and pins in the
	// verbose info.
	pod := e.noInfraPod("noinfra")
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	st, info := e.pinnedInfo(t, sbID)
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || !strings.HasPrefix(st.Network.Ip, e.br.Prefix) {
		t.Errorf("sandbox: state %v ip %q, want READY on %s", st.State, st.Network.Ip, e.br.Subnet)
	}
	podDir := filepath.Join(e.d.Runroot, "pods", sbID)
	ipcPin, utsPin := filepath.Join(podDir, "ipc.ns"), filepath.Join(podDir, "uts.ns")
	if info.Process != nil || info.Extra["infra"] != "none" || info.Extra["ipc_ns_pin"] != ipcPin || info.Extra["uts_ns_pin"] != utsPin {
		t.Errorf("verbose info: process %v extra %v, want no process, infra none and the pins in %s", info.Process, info.Extra, podDir)
	}

	// 2. The leak check sees the pins: one left behind would fail it.
	leaks, err := e.before.Leaks(0)
	if err != nil {
		t.Fatal(err)
	}
	var pinMounts []string
	for _, l := range framework.Matching(leaks, sbID) {
		if strings.Contains(l, " nsfs ") {
			pinMounts = append(pinMounts, l)
		}
	}
	if want := []string{"mount " + ipcPin + " nsfs ", "mount " + utsPin + " nsfs "}; len(pinMounts) != 2 ||
		!strings.HasPrefix(pinMounts[0], want[0]) || !strings.HasPrefix(pinMounts[1], want[1]) {
		t.Errorf("leak check while the pod runs: nsfs mounts %q, want its two pins (%q)", pinMounts, want)
	}
	if m := mountsUnder(t, podDir); !slices.Contains(m, ipcPin) || !slices.Contains(m, utsPin) {
		t.Errorf("mounts in the pod dir %v: want both pins (checkNoLeaks lists them)", m)
	}

	// 3. Two containers share the pod's IPC and UTS namespaces (the pinned
	// ones, with the pod's hostname) and not a PID namespace: a POSIX
	// message queue one makes, the other sees.
	writer := e.startContainer(t, sbID, e.noInfraContainer("writer", "sh", "-c", "touch /dev/mqueue/crivm-q && exec sleep 3600"), pod)
	reader := e.startContainer(t, sbID, e.noInfraContainer("reader", "nc", "-ll", "-p", "8080", "-e", "echo", "pong"), pod)
	nsScript := "for n in ipc uts pid; do readlink /proc/self/ns/$n; done; hostname"
	wantIPC, wantUTS := nsOf(t, "ipc", ipcPin), nsOf(t, "uts", utsPin)
	var pidNS []string
	for _, c := range []string{writer, reader} {
		got := strings.Fields(e.exec(t, c, "sh", "-c", nsScript))
		if len(got) != 4 || got[0] != wantIPC || got[1] != wantUTS || got[3] != "noinfra" {
			t.Errorf("container %s: ipc, uts, pid, hostname %q, want %s %s <own> noinfra", c[:12], got, wantIPC, wantUTS)
			continue
		}
		pidNS = append(pidNS, got[2])
	}
	if len(pidNS) == 2 && pidNS[0] == pidNS[1] {
		t.Errorf("both containers are in PID namespace %s", pidNS[0])
	}
	if self, _ := os.Readlink("/proc/self/ns/ipc"); self == wantIPC {
		t.Errorf("the pod's IPC namespace is the host's (%s)", self)
	}
	if got := e.exec(t, reader, "ls", "/dev/mqueue"); got != "crivm-q\n" {
		t.Errorf("the reader's /dev/mqueue: %q, want the writer's queue crivm-q", got)
	}

	// 4. No pause process: nothing runs in the sandbox's cgroup or names it.
	if p := podProcesses(t, sbID); len(p) > 0 {
		t.Errorf("processes of the sandbox itself: %q, want none", p)
	}
	if _, err := os.Stat(filepath.Join(e.d.Runroot, "handlers", "runc", "bundles", sbID)); !os.IsNotExist(err) {
		t.Errorf("an infra bundle exists (%v)", err)
	}

	// 5. Port-forward enters the pinned netns; the pod's stats sum its two
	// containers and read its interfaces.
	pf, err := e.rs.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: sbID, Port: []int32{8080}})
	if err != nil {
		t.Fatal(err)
	}
	local, stop, err := framework.PortForward(pf.Url, 8080)
	if err != nil {
		t.Fatal(err)
	}
	if b := dialRead(local, 10*time.Second); string(b) != "pong\n" {
		t.Errorf("port-forward read %q, want pong", b)
	}
	stop()
	ps, err := e.rs.PodSandboxStats(ctx, sbID)
	if err != nil {
		t.Fatal(err)
	}
	var ctrMem uint64
	for _, c := range ps.GetLinux().GetContainers() {
		ctrMem += c.GetMemory().GetWorkingSetBytes().GetValue()
	}
	if l := ps.GetLinux(); len(l.GetContainers()) != 2 || l.GetMemory().GetWorkingSetBytes().GetValue() != ctrMem || ctrMem == 0 ||
		l.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 || l.GetNetwork().GetDefaultInterface().GetName() != "eth0" {
		t.Errorf("pod stats: %v, want two containers, their memory summed (%d), CPU and eth0", l, ctrMem)
	}
	if list, err := e.rs.ListPodSandboxStats(ctx, &runtimeapi.PodSandboxStatsFilter{Id: sbID}); err != nil || len(list) != 1 || len(list[0].GetLinux().GetContainers()) != 2 {
		t.Errorf("ListPodSandboxStats: %v %v, want the pod with two containers", list, err)
	}
	if l, err := e.rs.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{Id: sbID}); err != nil || len(l) != 1 || l[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("ListPodSandbox: %v %v, want the pod Ready", l, err)
	}

	// 6. A pod sharing its PID namespace keeps its pause container: the
	// canary of step 4 finds it.
	shared := e.podConfig("shared-pid")
	sharedID, err := e.rs.RunPodSandbox(ctx, shared, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sharedID)
	if _, info := e.pinnedInfo(t, sharedID); info.Process == nil || info.Extra["infra"] != "pause" || info.Extra["ipc_ns_pin"] != "" {
		t.Errorf("PID-sharing pod: process %v extra %v, want its pause process", info.Process, info.Extra)
	}
	if p := podProcesses(t, sharedID); len(p) == 0 {
		t.Error("PID-sharing pod: no process of the sandbox found: the canary sees nothing")
	}

	// 7. A daemon restart keeps the pod Ready and its containers running;
	// a container created afterwards joins the same namespaces.
	pids := []int{e.containerPid(t, writer), e.containerPid(t, reader)}
	e.restart(t)
	for _, p := range pids {
		if !proc.Alive(p, 0, "") {
			t.Errorf("container process %d died with the daemon", p)
		}
	}
	if st, _ := e.pinnedInfo(t, sbID); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pod after the restart: %v, want READY", st.State)
	}
	for _, c := range []string{writer, reader} {
		if cs, err := e.rs.ContainerStatus(ctx, c, false); err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("container %s after the restart: %v %v", c[:12], cs.GetStatus().GetState(), err)
		}
	}
	late := e.startContainer(t, sbID, e.noInfraContainer("late", "sleep", "3600"), pod)
	if got := strings.Fields(e.exec(t, late, "sh", "-c", nsScript)); len(got) != 4 || got[0] != wantIPC || got[1] != wantUTS || got[3] != "noinfra" {
		t.Errorf("container created after the restart: %q, want %s %s <own> noinfra", got, wantIPC, wantUTS)
	}

	// 8. drop_infra_ctr = false: a new pod of the same kind gets a pause
	// container; the pod without one stays Ready and usable.
	if err := os.WriteFile(filepath.Join(e.d.DropIn, "30-infra.conf"), []byte("[crivm.runtime]\ndrop_infra_ctr = false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.restart(t)
	keptID, err := e.rs.RunPodSandbox(ctx, e.noInfraPod("kept-infra"), "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, keptID)
	if _, info := e.pinnedInfo(t, keptID); info.Process == nil || info.Extra["infra"] != "pause" {
		t.Errorf("drop_infra_ctr off: process %v extra %v, want a pause process", info.Process, info.Extra)
	}
	if p := podProcesses(t, keptID); len(p) == 0 {
		t.Error("drop_infra_ctr off: no process of the sandbox found")
	}
	if st, _ := e.pinnedInfo(t, sbID); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("the pod without infra after drop_infra_ctr was turned off: %v, want READY", st.State)
	}
	if got := e.exec(t, writer, "hostname"); got != "noinfra\n" {
		t.Errorf("exec after the second restart: %q", got)
	}
	for _, id := range []string{keptID, sharedID} {
		if err := e.rs.RemovePodSandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(e.d.DropIn, "30-infra.conf")); err != nil {
		t.Fatal(err)
	}
	e.restart(t)

	// 9. A pod whose pin is lost is NotReady.
	if err := unix.Unmount(utsPin, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.pinnedInfo(t, sbID); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("pod without its UTS pin: %v, want NOTREADY", st.State)
	}

	// 10. Stop releases the pins (the pod dir stays until the removal);
	// stop and remove, twice each, leave nothing: no pin, no mount, no
	// pod dir.
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	for _, pin := range []string{ipcPin, utsPin} {
		if _, err := os.Lstat(pin); !os.IsNotExist(err) {
			t.Errorf("%s after StopPodSandbox: %v, want it gone", pin, err)
		}
	}
	for range 2 {
		if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
		if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
	}
	e.checkNoLeaks(t, sbID, writer, reader, late, keptID, sharedID)
	if _, err := os.Stat(podDir); !os.IsNotExist(err) {
		t.Errorf("pod dir left behind (%v)", err)
	}

	// 11. A crash after the pod's namespaces were pinned, before it was
	// recorded: the sweep at the restart releases the pins.
	if _, err := framework.Bin(framework.CrashpointBinary); err != nil {
		t.Fatal(err)
	}
	e.crashAfter(t, "starting sandbox", func() error {
		_, err := e.rs.RunPodSandbox(ctx, e.noInfraPod("crash-pinned"), "")
		return err
	})
	crashed := lastMatch(t, e.d.Log(), `rpc=RunPodSandbox sandbox=([0-9a-f]{64}) pod=e2e/crash-pinned `)
	if err := e.d.WaitLog(5*time.Second, "released a sandbox a crash left half-made", crashed); err != nil {
		t.Error(err)
	}
	e.checkNoLeaks(t, crashed)
	if _, err := os.Stat(filepath.Join(e.d.Runroot, "pods", crashed)); !os.IsNotExist(err) {
		t.Errorf("the crashed pod's dir left behind (%v)", err)
	}

	// 12. A crash in a removal after the containers stopped, before the
	// pins were released: the retried removal releases them.
	pod2 := e.noInfraPod("crash-teardown")
	sb2, err := e.rs.RunPodSandbox(ctx, pod2, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sb2)
	ctr2 := e.startContainer(t, sb2, e.noInfraContainer("app", "sleep", "3600"), pod2)
	e.crashAfter(t, "teardown: containers stopped", func() error { return e.rs.RemovePodSandbox(ctx, sb2) })
	if err := e.rs.RemovePodSandbox(ctx, sb2); err != nil {
		t.Fatal(err)
	}
	e.checkNoLeaks(t, sb2, ctr2)
	if _, err := os.Stat(filepath.Join(e.d.Runroot, "pods", sb2)); !os.IsNotExist(err) {
		t.Errorf("pod dir left behind after the retried removal (%v)", err)
	}
}
