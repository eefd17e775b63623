package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRuncPodConfig: DNS config, hostname, cgroup parent, host network, log
// reopening and resource updates take effect.
func TestRuncPodConfig(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()

	// 1. DNS and the cgroup parent.
	pod := e.podConfig("dns")
	pod.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"e2e.svc.cluster.local"}, Options: []string{"ndots:5"}}
	parent := fmt.Sprintf("/crivm-e2e-%d", time.Now().UnixNano()%100000)
	pod.Linux.CgroupParent = parent
	removeCgroupAtEnd(t, parent) // runc makes the parent; nothing removes it
	_, ctrID := e.runPod(t, pod, e.containerConfig("app", "sleep", "3600"))
	if got := e.exec(t, ctrID, "cat", "/etc/resolv.conf"); got != "search e2e.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n" {
		t.Errorf("resolv.conf: %q", got)
	}
	if got := e.exec(t, ctrID, "grep", "dns", "/etc/hosts"); !strings.Contains(got, "dns") {
		t.Errorf("/etc/hosts lacks the pod's own name: %q", got)
	}
	if got := e.exec(t, ctrID, "cat", "/proc/self/cgroup"); !strings.Contains(got, parent+"/crivm-"+ctrID) {
		t.Errorf("cgroup: %q, want under %s", got, parent)
	}

	// 2. UpdateContainerResources: a new memory limit lands in the cgroup.
	if err := e.rs.UpdateContainerResources(ctx, ctrID, &runtimeapi.ContainerResources{Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}}); err != nil {
		t.Fatal(err)
	}
	limit := memoryLimit(t, parent+"/crivm-"+ctrID)
	if limit != 64<<20 {
		t.Errorf("memory limit after update: %d, want %d", limit, 64<<20)
	}

	// 3. ReopenContainerLog: after the kubelet moves the log, new lines go
	//    to a new file at the old path, which exists when the call returns
	//    (the kubelet and critest look for it at once).
	logDir := filepath.Join(pod.LogDirectory)
	logger := e.containerConfig("logger", "sh", "-c", "while true; do echo line; sleep 0.1; done")
	loggerID, err := e.rs.CreateContainer(ctx, e.sandboxOf(t, ctrID), logger, pod)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rs.StartContainer(ctx, loggerID); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(logDir, "logger.log")
	time.Sleep(300 * time.Millisecond)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.ReopenContainerLog(ctx, loggerID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(logPath); err != nil {
		t.Errorf("no log file right after ReopenContainerLog: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), " stdout F line") {
		t.Errorf("reopened log: %q (%v)", b, err)
	}
	// Again without moving the log first: the call still returns (conmon
	// replaces the file in place).
	if err := e.rs.ReopenContainerLog(ctx, loggerID); err != nil {
		t.Errorf("reopening a log that was not moved: %v", err)
	}

	// 4. A host-network pod sees the host's interfaces and gets no netns.
	hp := e.podConfig("hostnet")
	hp.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	hpID, hctr := e.runPod(t, hp, e.containerConfig("app", "sleep", "3600"))
	if got := e.exec(t, hctr, "cat", "/proc/net/dev"); !strings.Contains(got, e.br.Name) {
		t.Errorf("host network pod does not see the host bridge %s:\n%s", e.br.Name, got)
	}
	if st, err := e.rs.PodSandboxStatus(ctx, hpID, true); err != nil || strings.Contains(st.Info["info"], "/netns/") {
		t.Errorf("host network pod has a netns: %v %v", st.GetInfo(), err)
	}
}

func (e *runcEnv) sandboxOf(t *testing.T, ctrID string) string {
	t.Helper()
	st, err := e.rs.ContainerStatus(context.Background(), ctrID, true)
	if err != nil {
		t.Fatal(err)
	}
	ctrs, err := e.rs.ListContainers(context.Background(), &runtimeapi.ContainerFilter{Id: st.Status.Id})
	if err != nil || len(ctrs) != 1 {
		t.Fatal(err)
	}
	return ctrs[0].PodSandboxId
}

// memoryLimit reads a cgroup's memory limit on v1 or v2.
func memoryLimit(t *testing.T, cgroup string) int64 {
	t.Helper()
	for _, p := range []string{"/sys/fs/cgroup/memory" + cgroup + "/memory.limit_in_bytes", "/sys/fs/cgroup" + cgroup + "/memory.max"} {
		if b, err := os.ReadFile(p); err == nil {
			var n int64
			fmt.Sscan(strings.TrimSpace(string(b)), &n)
			return n
		}
	}
	t.Fatalf("no memory limit file for %s", cgroup)
	return 0
}

// TestRuncCreateFailures: a container that cannot be created leaves nothing
// and frees its name; a duplicate name is AlreadyExists naming the holder;
// an image from a registry the policy distrusts is refused on runc.
func TestRuncCreateFailures(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()
	pod := e.podConfig("fail")
	sbID, ctrID := e.runPod(t, pod, e.containerConfig("app", "sleep", "3600"))

	// 1. The same container name again.
	_, err := e.rs.CreateContainer(ctx, sbID, e.containerConfig("app", "sleep", "1"), pod)
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), ctrID) {
		t.Errorf("duplicate name: %v, want AlreadyExists naming %s", err, ctrID)
	}

	// 2. A command that does not exist fails at create and leaves nothing.
	mountsBefore := len(mountsUnder(t, e.d.Root))
	_, err = e.rs.CreateContainer(ctx, sbID, e.containerConfig("broken", "/no/such/binary"), pod)
	if err == nil {
		t.Fatal("creating a container with a missing binary succeeded")
	}
	ctrs, _ := e.rs.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: sbID})
	if len(ctrs) != 1 {
		t.Errorf("containers after a failed create: %d, want 1", len(ctrs))
	}
	if got := len(mountsUnder(t, e.d.Root)); got != mountsBefore {
		t.Errorf("mounts under root: %d before, %d after a failed create", mountsBefore, got)
	}
	out, _ := exec.Command("runc", "--root", filepath.Join(e.d.Runroot, "handlers", "runc", "state"), "list", "-q").Output()
	if n := len(strings.Fields(string(out))); n != 2 {
		t.Errorf("runc containers after a failed create: %d, want 2 (infra + app):\n%s", n, out)
	}
	// The name is free again.
	id, err := e.rs.CreateContainer(ctx, sbID, e.containerConfig("broken", "sleep", "1"), pod)
	if err != nil {
		t.Errorf("reusing the failed container's name: %v", err)
	} else {
		e.rs.RemoveContainer(ctx, id)
	}
}

// TestImageRuleAtCreate: an image from a registry the policy distrusts
// cannot slip into a pod judged trusted: CreateContainer refuses it on runc.
func TestImageRuleAtCreate(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "images.toml")
	rule := "[[rule]]\nname = \"loopback-registries\"\ntrust = \"untrusted\"\n[rule.match]\nimage_registries = [\"127.0.0.1:*\"]\n"
	if err := os.WriteFile(policy, []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newRuncEnv(t, "[crivm.runtime]\ntrust_policy = \""+policy+"\"\n")
	ctx := context.Background()

	// 1. The pod itself has no images yet: it is trusted and runs on runc.
	pod := e.podConfig("imgrule")
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	defer e.rs.RemovePodSandbox(ctx, sbID)

	// 2. Its container's image matches the untrusted rule: refused, naming
	//    the rule and the handler, and nothing is created.
	_, err = e.rs.CreateContainer(ctx, sbID, e.containerConfig("app", "sleep", "3600"), pod)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "loopback-registries") || !strings.Contains(err.Error(), "runc") {
		t.Errorf("untrusted image on runc: %v, want FailedPrecondition naming the rule and runc", err)
	}
	if ctrs, _ := e.rs.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: sbID}); len(ctrs) != 0 {
		t.Errorf("containers after the refusal: %v", ctrs)
	}
}

// TestRuncMountsAndStopSignal: CRI mounts keep their read-only flag and
// propagation, and StopContainer sends the image's STOPSIGNAL.
func TestRuncMountsAndStopSignal(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()
	if _, err := e.is.PullImage(ctx, spec(e.reg.Ref("entrypoint", "latest")), nil, nil); err != nil {
		t.Fatal(err)
	}
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "data"), []byte("from-host"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A shared mount, so that host-to-container propagation is possible.
	rw := t.TempDir()
	for _, args := range [][]string{{"--bind", rw, rw}, {"--make-shared", rw}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("umount", "-l", rw).Run() })

	// 1. A read-only and a read-write hostPath mount.
	ctr := e.containerConfig("mounts", "sleep", "3600")
	ctr.Mounts = []*runtimeapi.Mount{
		{HostPath: host, ContainerPath: "/ro", Readonly: true},
		{HostPath: rw, ContainerPath: "/rw", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
	}
	_, id := e.runPod(t, e.podConfig("mounts"), ctr)
	if got := e.exec(t, id, "cat", "/ro/data"); got != "from-host" {
		t.Errorf("read-only mount content: %q", got)
	}
	if _, _, err := e.rs.ExecSync(ctx, id, []string{"touch", "/ro/x"}, 10*time.Second); !isExitCode(err, 1) {
		t.Errorf("write to a read-only mount: %v, want exit 1", err)
	}
	e.exec(t, id, "sh", "-c", "echo written > /rw/out")
	if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != "written\n" {
		t.Errorf("read-write mount: host sees %q (%v)", b, err)
	}
	if got := e.exec(t, id, "sh", "-c", "grep ' /rw ' /proc/self/mountinfo"); !strings.Contains(got, "master:") {
		t.Errorf("HOST_TO_CONTAINER propagation is not a slave mount: %q", got)
	}
	// A private source cannot propagate: refused, not silently private.
	bad := e.containerConfig("badprop", "sleep", "3600")
	bad.Mounts = []*runtimeapi.Mount{{HostPath: host, ContainerPath: "/p", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}}
	if _, err := e.rs.CreateContainer(ctx, e.sandboxOf(t, id), bad, e.podConfig("mounts")); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("host-to-container from a private mount: %v, want FailedPrecondition", err)
	}

	// 2. The entrypoint image's STOPSIGNAL is SIGQUIT: a trap on QUIT alone
	//    decides the exit code.
	sig := e.containerConfig("stopsig", "sh", "-c", "trap 'exit 42' QUIT; trap '' TERM; while :; do sleep 0.1; done")
	sig.Image = &runtimeapi.ImageSpec{Image: e.reg.Ref("entrypoint", "latest"), UserSpecifiedImage: e.reg.Ref("entrypoint", "latest")}
	_, sigID := e.runPod(t, e.podConfig("stopsig"), sig)
	if err := e.rs.StopContainer(ctx, sigID, 10); err != nil {
		t.Fatal(err)
	}
	st, err := e.rs.ContainerStatus(ctx, sigID, false)
	if err != nil || st.Status.ExitCode != 42 {
		t.Errorf("stop with the image's SIGQUIT: %v %v, want exit 42", st.GetStatus(), err)
	}
}

// TestRuncNetworkFailureLeavesNothing: CNI ADD runs beside the infra
// container's start; when a plugin of the chain fails (tuning, after
// bridge, on a sysctl that does not exist), RunPodSandbox fails, and the
// infra container, its netns and its record are gone. A pod started after
// the config is fixed runs.
func TestRuncNetworkFailureLeavesNothing(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()
	conflist := filepath.Join(e.d.Dir, "net.d", "10-crivm-e2e.conflist")
	good, err := os.ReadFile(conflist)
	if err != nil {
		t.Fatal(err)
	}
	// This daemon's live conmons (their arguments name its dirs); a zombie
	// only waits for the host's init to reap it (conmon daemonizes).
	conmons := func() int {
		out, _ := exec.Command("sh", "-c", `ps -eo stat=,args= | awk '$2 ~ /conmon$/ && $1 !~ /Z/' | grep -cF -- "$0"`, e.d.Dir).Output()
		n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		return n
	}
	before := conmons()
	if before != 0 {
		t.Fatalf("a fresh daemon has %d conmon processes", before)
	}

	// 1. A plugin fails ADD: the pod is refused, with the network named.
	bad := strings.Replace(string(good), `{"type": "portmap"`, `{"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.no_such_knob": "1"}},
    {"type": "portmap"`, 1)
	if bad == string(good) {
		t.Fatal("the bridge network's conflist changed shape: cannot insert the failing plugin")
	}
	if err := os.WriteFile(conflist, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rs.RunPodSandbox(ctx, e.podConfig("netfail"), ""); err == nil || !strings.Contains(err.Error(), "network") {
		t.Fatalf("RunPodSandbox with a failing CNI plugin: %v, want an error naming the network", err)
	}

	// 2. Nothing is left: no record, no conmon, no pod dir with its shm
	//    mount under <runroot>/pods (the env's leak check adds netns,
	//    veths, mounts and cgroups at the end).
	if pods, err := e.rs.ListPodSandbox(ctx, nil); err != nil || len(pods) != 0 {
		t.Errorf("pods after the failure: %v %v", pods, err)
	}
	if left, err := os.ReadDir(filepath.Join(e.d.Runroot, "pods")); err != nil || len(left) != 0 {
		t.Errorf("pod dirs after the failed RunPodSandbox: %v (%v), want none", left, err)
	}
	if m := mountsUnder(t, filepath.Join(e.d.Runroot, "pods")); len(m) > 0 {
		t.Errorf("mounts after the failed RunPodSandbox: %v", m)
	}
	// conmon exits once its container is gone, which the removal awaited.
	if n := conmons(); n != before {
		t.Errorf("live conmon processes %d after the failure, %d before", n, before)
	}

	// 3. Fixed config: the next pod runs.
	if err := os.WriteFile(conflist, good, 0o644); err != nil {
		t.Fatal(err)
	}
	e.runPod(t, e.podConfig("netok"), e.containerConfig("c", "sleep", "60"))
	// The count of step 2 sees this daemon's conmons: a running pod has two.
	if n := conmons(); n != 2 {
		t.Errorf("live conmon processes of a running pod: %d, want 2 (infra and container)", n)
	}
}
