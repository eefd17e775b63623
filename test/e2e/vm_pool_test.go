package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/test/testutil/testsystemd"
	"github.com/crivm/crivm/vmm"
)

// TestVMPool: with vm_factory = "pool", crivm keeps vm_pool_size VMs
// booted, and a VM pod takes one; with vm_factory = "template" and a
// vm_pool_size, the pool holds clones of the template, started and
// resumed ahead of pods. A pooled VM serves its pod like a booted one
// (container, logs, exec, the pod IP from the host through the tap it got
// when taken), runs in the pod's cgroup once taken, and two differ in what
// must be each pod's; a pod bigger than the pool's VMs boots; the pool
// refills; pods that took one survive a restart, which kills the pooled
// VMs no pod took and fills the pool again; a stopped daemon leaves no
// pooled VM running.
func TestVMPool(t *testing.T) {
	requiresVM(t)
	for _, tt := range []struct {
		name, factory string
		clone         bool
	}{
		{"booted", "pool", false},
		{"clones", "template", true},
	} {
		t.Run(tt.name, func(t *testing.T) { testVMPool(t, tt.factory, tt.clone) })
	}
}

func testVMPool(t *testing.T, factory string, clone bool) {
	e := newRuncEnv(t, "[crivm.runtime.runtimes.vm]", fmt.Sprintf("vm_factory = %q", factory), "vm_pool_size = 2", "max_memory_mib = 1024")
	ctx := context.Background()
	hostKernel := strings.TrimSpace(readFile(t, "/proc/sys/kernel/osrelease"))
	pooled := func() []string {
		out, _ := exec.Command("pgrep", "-f", "qemu-system.*-name crivm-pool-").Output()
		return strings.Fields(string(out))
	}
	run := func(name string) factoryPod {
		t.Helper()
		return e.runFactoryPod(t, name, "echo hello-from-pool; exec nc -ll -p 8080 -e echo pong")
	}

	// 1. The pool fills: two VMs wait, clones of the template's RAM
	//    under "template".
	e.waitPooledVMs(t, 2)
	waiting := pooled()
	if len(waiting) != 2 {
		t.Fatalf("pooled QEMUs %v, want 2", waiting)
	}
	for _, pid := range waiting {
		if got := templateRAMFD(t, pid) != ""; got != clone {
			t.Errorf("pooled QEMU %s maps a template's RAM: %v, want %v", pid, got, clone)
		}
	}

	// 2. Two pods take them.
	a, b := run("pool-a"), run("pool-b")
	for _, p := range []factoryPod{a, b} {
		if p.info.Extra["vm_source"] != "pool" || (p.info.Extra["vm_template"] != "") != clone {
			t.Fatalf("pod %s: vm_source %q, template %q (not pooled: %q), want pool, clone %v", p.cfg.Metadata.Name, p.info.Extra["vm_source"], p.info.Extra["vm_template"], p.info.Extra["vm_not_cloned"], clone)
		}
		if pid := fmt.Sprint(p.info.Process.Pid); !slices.Contains(waiting, pid) {
			t.Errorf("pod %s runs in QEMU %s, not one of the pooled %v", p.cfg.Metadata.Name, pid, waiting)
		}
	}
	t.Logf("pooled pod start (taking the VM to CreateSandbox): %s ms and %s ms", a.info.Extra["boot_ms"], b.info.Extra["boot_ms"])

	// 3. A taken VM is the pod's: the guest kernel inside, its log, the
	//    host's clock, and the pod IP reachable from the host through the
	//    attached tap.
	if got := strings.TrimSpace(e.exec(t, a.ctrID, "uname", "-r")); got == hostKernel || got != a.info.Extra["guest_kernel"] {
		t.Errorf("uname -r in a pooled VM: %q (host %q, guest %q)", got, hostKernel, a.info.Extra["guest_kernel"])
	}
	var logData string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !strings.Contains(logData, "hello-from-pool"); time.Sleep(100 * time.Millisecond) {
		logData = readFile(t, filepath.Join(a.cfg.LogDirectory, "app.log"))
	}
	if !strings.Contains(logData, " stdout F hello-from-pool") {
		t.Errorf("pooled VM container log: %q", logData)
	}
	if got := strings.TrimSpace(e.exec(t, a.ctrID, "cat", "/proc/1/comm")); got != "pause" {
		t.Errorf("PID 1 of the pooled pod's PID namespace: %q, want the agent's pause", got)
	}
	if s := strings.TrimSpace(e.exec(t, a.ctrID, "date", "+%s")); !near(s, time.Now().Unix(), 5) {
		t.Errorf("pooled VM clock %s, host %d", s, time.Now().Unix())
	}
	for _, p := range []factoryPod{a, b} {
		if pong := dialRead(p.ip+":8080", 10*time.Second); string(pong) != "pong\n" {
			t.Errorf("pod %s IP %s:8080 from the host: %q, want pong", p.cfg.Metadata.Name, p.ip, pong)
		}
	}
	pairs := []differ{
		{"urandom", e.drawRandom(t, a.ctrID), e.drawRandom(t, b.ctrID)},
		{"MAC", e.exec(t, a.ctrID, "cat", "/sys/class/net/eth0/address"), e.exec(t, b.ctrID, "cat", "/sys/class/net/eth0/address")},
		{"IP", a.ip, b.ip},
		{"hostname", e.exec(t, a.ctrID, "hostname"), e.exec(t, b.ctrID, "hostname")},
	}
	if !clone { // clones of one boot share it (docs/security.md)
		pairs = append(pairs, differ{"boot_id", e.exec(t, a.ctrID, "cat", "/proc/sys/kernel/random/boot_id"), e.exec(t, b.ctrID, "cat", "/proc/sys/kernel/random/boot_id")})
	}
	checkDiffer(t, "pooled pods", pairs)

	// 4. QEMU runs in the pod's cgroup now, and the pool's is gone.
	qemu := a.info.Process.Pid
	cg := strings.TrimSpace(readFile(t, fmt.Sprintf("/proc/%d/cgroup", qemu)))
	if want := "crivm-" + a.sbID; !strings.Contains(cg, want) {
		t.Errorf("pooled QEMU %d in cgroup %q, want the pod's (%s)", qemu, cg, want)
	}

	// 5. A pod bigger than the pool's VMs boots.
	bigID := e.runTooBigVMPod(t, "pool-big")

	// 6. The pool refills behind the pods that took from it.
	e.waitPooledVMs(t, 4)

	// 7. A restart: the pods keep running; the pooled VMs nobody took
	//    die with the daemon, and the new one fills the pool again.
	if err := e.d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	taken := map[string]bool{fmt.Sprint(a.info.Process.Pid): true, fmt.Sprint(b.info.Process.Pid): true}
	for _, pid := range pooled() {
		if !taken[pid] {
			t.Errorf("pooled QEMU %s, which no pod took, still runs after the daemon stopped", pid)
		}
	}
	e.d.Start(ctx)
	e.rs = e.d.RuntimeService(ctx)
	if err := e.d.WaitLog(20*time.Second, "reattached to a running VM"); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(e.exec(t, b.ctrID, "hostname")); got != "pool-b" {
		t.Errorf("pool-b after the restart: hostname %q", got)
	}
	e.waitPooledVMs(t, 6)
	c := run("pool-c")
	if c.info.Extra["vm_source"] != "pool" {
		t.Errorf("the first pod after a restart: vm_source %q (not pooled: %q), want pool", c.info.Extra["vm_source"], c.info.Extra["vm_not_cloned"])
	}

	// 8. Stop and remove: nothing is left of the pods' VMs.
	e.removeFactoryPods(t, []factoryPod{a, b, c}, bigID)
}

// waitPooledVMs waits until the daemon's log, which spans its restarts,
// says n pooled VMs were booted.
func (e *runcEnv) waitPooledVMs(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if strings.Count(e.d.Log(), `msg="pooled VM ready"`) >= n {
			return
		}
	}
	t.Fatalf("the pool did not boot %d VMs; daemon log:\n%s", n, e.d.Log())
}

// TestVMPoolVirtioFS: a pooled VM whose share is served over virtio-fs
// comes with its virtiofsd, which moves to the pod's cgroup with QEMU
// when a pod takes the VM, serves the pod's container and ends with it.
func TestVMPoolVirtioFS(t *testing.T) {
	requiresVM(t)
	if _, err := vmm.FindVirtiofsd(""); err != nil {
		t.Skipf("virtio-fs needs virtiofsd: %v", err)
	}
	e := newRuncEnv(t, "[crivm.runtime.runtimes.vm]", `vm_factory = "pool"`, "vm_pool_size = 1", `shared_fs = "virtio-fs"`)
	e.waitPooledVMs(t, 1)

	// 1. A pod takes the pooled VM and its container writes to its
	//    rootfs, served by the pooled virtiofsd.
	p := e.runFactoryPod(t, "pool-vfs", "echo hello-over-virtiofs > /written; exec sleep 3600")
	if p.info.Extra["vm_source"] != "pool" || p.info.Extra["shared_fs"] != "virtio-fs" {
		t.Fatalf("vm_source %q over %q (not pooled: %q), want pool over virtio-fs", p.info.Extra["vm_source"], p.info.Extra["shared_fs"], p.info.Extra["vm_not_cloned"])
	}
	if got := e.exec(t, p.ctrID, "cat", "/written"); got != "hello-over-virtiofs\n" {
		t.Errorf("the container's own file: %q", got)
	}

	// 2. virtiofsd and QEMU run in the pod's cgroup.
	fsd, err := strconv.Atoi(p.info.Extra["virtiofsd_pid"])
	if err != nil {
		t.Fatalf("virtiofsd_pid %q: %v", p.info.Extra["virtiofsd_pid"], err)
	}
	want := "crivm-" + p.sbID
	for what, pid := range map[string]int{"QEMU": p.info.Process.Pid, "virtiofsd": fsd} {
		if cg := readFile(t, fmt.Sprintf("/proc/%d/cgroup", pid)); !strings.Contains(cg, want) {
			t.Errorf("%s %d in cgroup %q, want the pod's (%s)", what, pid, strings.TrimSpace(cg), want)
		}
	}

	// 3. Removal ends both.
	e.removeFactoryPods(t, []factoryPod{p})
	if proc.Alive(fsd, 0, "") {
		t.Errorf("virtiofsd %d alive after RemovePodSandbox", fsd)
	}
}

// TestVMPoolSystemd: under the systemd cgroup driver (a test systemd), a
// pooled VM boots in a scope of its own, and the pod that takes it gets
// its QEMU and virtiofsd (with its child) in the pod's scope, in every
// hierarchy.
func TestVMPoolSystemd(t *testing.T) {
	if !underTestSystemd(t) {
		return
	}
	conn := testsystemd.Conn(t)
	e := newRuncEnv(t, "[crivm.runtime]", `cgroup_manager = "systemd"`,
		"[crivm.runtime.runtimes.vm]", `shared_fs = "virtio-fs"`, `vm_factory = "pool"`, "vm_pool_size = 1")
	slice := fmt.Sprintf("crivme2e-pool%d.slice", time.Now().UnixNano()%100000)
	testsystemd.StartSlice(t, conn, slice, 2<<30)
	e.waitPooledVMs(t, 1)

	// 1. A pod in the slice takes the pooled VM.
	cfg := e.podConfig("pool-systemd")
	cfg.Linux.CgroupParent = slice
	sbID, err := e.rs.RunPodSandbox(context.Background(), cfg, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	_, info := e.sandboxStatus(t, sbID)
	if info.Extra["vm_source"] != "pool" {
		t.Fatalf("vm_source %q (not pooled: %q), want pool", info.Extra["vm_source"], info.Extra["vm_not_cloned"])
	}
	p := factoryPod{sbID: sbID, cfg: cfg, info: info}
	p.ctrID = e.startContainer(t, sbID, e.containerConfig("app", "sleep", "3600"), cfg)

	// 2. QEMU and virtiofsd are in the pod's scope, which systemd knows.
	want := "/crivme2e.slice/" + slice + "/crivm-vm-" + sbID + ".scope"
	fsd, _ := strconv.Atoi(info.Extra["virtiofsd_pid"])
	for what, pid := range map[string]int{"QEMU": info.Process.Pid, "virtiofsd": fsd} {
		for _, c := range []string{"memory", "cpu", "pids", "name=systemd"} {
			if got := procCgroup(pid, c); got != want {
				t.Errorf("%s (pid %d): %s cgroup %q, want %q", what, pid, c, got, want)
			}
		}
	}
	props, err := conn.GetUnitTypePropertiesContext(context.Background(), "crivm-vm-"+sbID+".scope", "Scope")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(props["ControlGroup"]); got != want {
		t.Errorf("the pod's scope: ControlGroup %s, want %s", got, want)
	}

	// 3. Removal ends the VM.
	e.removeFactoryPods(t, []factoryPod{p})
	if proc.Alive(fsd, 0, "") {
		t.Errorf("virtiofsd %d alive after RemovePodSandbox", fsd)
	}
}
