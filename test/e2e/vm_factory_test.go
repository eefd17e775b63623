package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/proc"
)

// TestVMTemplateClones: with vm_factory = "template", VM pods are clones
// of one saved template VM. A clone runs a container with its logs, exec,
// stop and removal like a booted VM; two clones differ in what must be
// theirs (randomness, MAC, IP, hostname); the template's RAM, mapped into
// every clone's QEMU, cannot be written even by root through QEMU's own
// descriptor; a pod bigger than the template boots; clones survive a
// daemon restart, after which the template is built again.
func TestVMTemplateClones(t *testing.T) {
	requiresVM(t)
	e := newRuncEnv(t, "[crivm.runtime.runtimes.vm]", `vm_factory = "template"`, "max_memory_mib = 1024")
	hostKernel := strings.TrimSpace(readFile(t, "/proc/sys/kernel/osrelease"))

	run := func(name string) factoryPod {
		t.Helper()
		return e.runFactoryPod(t, name, "echo hello-from-clone; exec sleep 3600")
	}

	// 1. Two pods: the first waits for the template's build, both are
	//    clones of it.
	a, b := run("clone-a"), run("clone-b")
	for _, c := range []factoryPod{a, b} {
		if c.info.Extra["vm_source"] != "clone" || c.info.Extra["vm_template"] == "" {
			t.Fatalf("pod %s: vm_source %q template %q (not cloned: %q), want a clone", c.cfg.Metadata.Name, c.info.Extra["vm_source"], c.info.Extra["vm_template"], c.info.Extra["vm_not_cloned"])
		}
	}
	t.Logf("clone start (QEMU to CreateSandbox): %s ms and %s ms", a.info.Extra["boot_ms"], b.info.Extra["boot_ms"])

	// 2. The canary, logs, exec: a clone is a VM with the guest kernel.
	if got := strings.TrimSpace(e.exec(t, a.ctrID, "uname", "-r")); got == hostKernel || got != a.info.Extra["guest_kernel"] {
		t.Errorf("uname -r in a clone: %q (host %q, guest %q)", got, hostKernel, a.info.Extra["guest_kernel"])
	}
	logPath := filepath.Join(a.cfg.LogDirectory, "app.log")
	var logData string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !strings.Contains(logData, "hello-from-clone"); time.Sleep(100 * time.Millisecond) {
		logData = readFile(t, logPath)
	}
	if !strings.Contains(logData, " stdout F hello-from-clone") {
		t.Errorf("clone container log: %q", logData)
	}

	// 3. What each clone must own differs between them.
	checkDiffer(t, "clones", []differ{
		{"urandom", e.drawRandom(t, a.ctrID), e.drawRandom(t, b.ctrID)},
		{"MAC", e.exec(t, a.ctrID, "cat", "/sys/class/net/eth0/address"), e.exec(t, b.ctrID, "cat", "/sys/class/net/eth0/address")},
		{"IP", a.ip, b.ip},
		{"hostname", e.exec(t, a.ctrID, "hostname"), e.exec(t, b.ctrID, "hostname")},
	})
	if got, want := strings.TrimSpace(e.exec(t, a.ctrID, "cat", "/sys/class/net/eth0/address")), a.info.Extra["guest_mac"]; got != want {
		t.Errorf("clone NIC MAC %q, want the pod's %q", got, want)
	}
	// The guest clock is the host's, not the template's.
	if s := strings.TrimSpace(e.exec(t, a.ctrID, "date", "+%s")); !near(s, time.Now().Unix(), 5) {
		t.Errorf("clone clock %s, host %d", s, time.Now().Unix())
	}

	// 4. As an attacker holding a clone's QEMU: its descriptor of the
	//    template's RAM refuses writes, from root too.
	qemu := a.info.Process.Pid
	ramFD := templateRAMFD(t, fmt.Sprint(qemu))
	if ramFD == "" {
		t.Fatalf("no template RAM among QEMU %d's descriptors", qemu)
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%s", qemu, ramFD), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("owned"), 1<<20); !errors.Is(err, unix.EPERM) {
		t.Errorf("writing the template's RAM through QEMU's descriptor: %v, want EPERM", err)
	}
	if _, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); !errors.Is(err, unix.EPERM) {
		t.Errorf("mapping the template's RAM shared and writable: %v, want EPERM", err)
	}
	f.Close()

	// 5. A pod bigger than the template boots instead.
	bigID := e.runTooBigVMPod(t, "big")

	// 6. A daemon restart: the clones keep running and answer; the
	//    template died with the daemon's memory, and the next pod gets a
	//    new one.
	e.restart(t)
	if err := e.d.WaitLog(20*time.Second, "reattached to a running VM"); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(e.exec(t, b.ctrID, "hostname")); got != "clone-b" {
		t.Errorf("clone-b after the restart: hostname %q", got)
	}
	c := run("clone-c")
	if c.info.Extra["vm_source"] != "clone" {
		t.Errorf("the first pod after a restart: vm_source %q (not cloned: %q), want a clone of a new template", c.info.Extra["vm_source"], c.info.Extra["vm_not_cloned"])
	}

	// 7. Stop and remove: nothing is left of the clones.
	e.removeFactoryPods(t, []factoryPod{a, b, c}, bigID)
}

// runTooBigVMPod runs a VM pod named name with a 512 MiB memory limit,
// more than a factory's VMs hold, and checks it booted for that reason.
func (e *runcEnv) runTooBigVMPod(t *testing.T, name string) string {
	t.Helper()
	big := e.podConfig(name)
	big.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 512 << 20}
	id, err := e.rs.RunPodSandbox(context.Background(), big, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, id)
	if _, info := e.sandboxStatus(t, id); info.Extra["vm_source"] != "boot" || info.Extra["vm_not_cloned"] != "too_big" {
		t.Errorf("a 512 MiB pod: vm_source %q, not made by the factory %q; want boot, too_big", info.Extra["vm_source"], info.Extra["vm_not_cloned"])
	}
	return id
}

// factoryPod is a VM pod with one container, as the VM factory tests
// start them.
type factoryPod struct {
	sbID, ctrID string
	cfg         *runtimeapi.PodSandboxConfig
	info        sandboxInfo
	ip          string
}

// runFactoryPod starts a VM pod named name whose container "app" runs
// script.
func (e *runcEnv) runFactoryPod(t *testing.T, name, script string) factoryPod {
	t.Helper()
	cfg := e.podConfig(name)
	sbID, err := e.rs.RunPodSandbox(context.Background(), cfg, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	st, info := e.sandboxStatus(t, sbID)
	p := factoryPod{sbID: sbID, cfg: cfg, info: info, ip: st.Status.Network.Ip}
	p.ctrID = e.startContainer(t, sbID, e.containerConfig("app", "sh", "-c", script), cfg)
	return p
}

// removeFactoryPods stops and removes pods and the sandboxes more, and
// checks that nothing is left of the pods' VMs: QEMU, the VM dir, nor its
// name (a symlink for a pod that took a pooled VM).
func (e *runcEnv) removeFactoryPods(t *testing.T, pods []factoryPod, more ...string) {
	t.Helper()
	ctx := context.Background()
	ids := slices.Clone(more)
	for _, p := range pods {
		ids = append(ids, p.sbID)
	}
	for _, id := range ids {
		if err := e.rs.StopPodSandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := e.rs.RemovePodSandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		if pid := p.info.Process.Pid; proc.Alive(pid, 0, "") {
			t.Errorf("QEMU %d of %s alive after RemovePodSandbox", pid, p.cfg.Metadata.Name)
		}
		dir := p.info.Extra["vm_dir"]
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("VM dir %s left (%v)", dir, err)
		}
		if name := filepath.Join(filepath.Dir(dir), p.sbID[:32]); name != dir {
			if _, err := os.Lstat(name); !os.IsNotExist(err) {
				t.Errorf("the pod's VM dir name %s left (%v)", name, err)
			}
		}
	}
}

// templateRAMFD is the descriptor through which QEMU pid maps a
// template's RAM, or "".
func templateRAMFD(t *testing.T, pid string) string {
	t.Helper()
	fds, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if l, _ := os.Readlink("/proc/" + pid + "/fd/" + fd.Name()); strings.Contains(l, "memfd:crivm-template-") && !strings.Contains(l, "state") {
			return fd.Name()
		}
	}
	return ""
}

// drawRandom is 32 bytes of the guest RNG, read in container id, in hex.
func (e *runcEnv) drawRandom(t *testing.T, id string) string {
	t.Helper()
	return strings.Join(strings.Fields(e.exec(t, id, "sh", "-c", "head -c 32 /dev/urandom | od -An -tx1")), "")
}

// differ is something two pods must not share: what, and each one's.
type differ struct{ what, ga, gb string }

// checkDiffer fails t for each pair whose values are empty or equal.
func checkDiffer(t *testing.T, whose string, pairs []differ) {
	t.Helper()
	for _, p := range pairs {
		if strings.TrimSpace(p.ga) == "" || p.ga == p.gb {
			t.Errorf("the %s' %s: %q and %q, want two different values", whose, p.what, p.ga, p.gb)
		}
	}
}

func near(s string, want, tol int64) bool {
	var got int64
	if _, err := fmt.Sscan(s, &got); err != nil {
		return false
	}
	return got >= want-tol && got <= want+tol
}

// readFile is path's content; a missing file is empty.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}
