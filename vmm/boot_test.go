package vmm_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.podman.io/storage/pkg/reexec"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/vmm"
	"github.com/crivm/crivm/vmm/assets"
)

const qemuPath = "/usr/bin/qemu-system-x86_64"

// bootMu keeps VM boots in this package one at a time: the build machines
// have two shared cores.
var bootMu sync.Mutex

// guestAssets are built once per test binary into assetsDir, which
// TestMain removes.
var (
	assetsOnce sync.Once
	assetsDir  string
	built      struct {
		vmlinux, initrd, release string
		err                      error
	}
)

func TestMain(m *testing.M) {
	// The cgroup v1 shim (vmm.CgroupExecName) re-executes this binary.
	if reexec.Init() {
		return
	}
	code := m.Run()
	if assetsDir != "" {
		os.RemoveAll(assetsDir)
	}
	os.Exit(code)
}

// requireVM skips unless QEMU and a guest kernel are installed and the
// test is not -short.
func requireVM(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM under QEMU; skipped with -short")
	}
	if _, err := os.Stat(qemuPath); err != nil {
		t.Skipf("%s missing (apt-get install qemu-system-x86)", qemuPath)
	}
	if m, _ := filepath.Glob("/boot/vmlinuz-*"); len(m) == 0 {
		t.Skip("no /boot/vmlinuz-* (apt-get install linux-image-amd64)")
	}
}

// buildAssets builds the agent (static), extracts the vmlinux and builds
// the initrd into a cache dir shared by the tests of this binary.
func buildAssets(t *testing.T) (vmlinux, initrd, release string) {
	t.Helper()
	assetsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "crivm-vmm-test-assets-")
		if err != nil {
			built.err = err
			return
		}
		assetsDir = dir
		agent := filepath.Join(dir, "crivm-agent")
		// A test build: these tests exec as guest root.
		cmd := exec.Command("go", "build", "-trimpath", "-tags", "crivm_guestroot", "-ldflags", "-s -w", "-o", agent, "github.com/crivm/crivm/cmd/crivm-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("building agent: %v: %s", err, out)
			return
		}
		kernel, err := assets.FindKernel("")
		if err != nil {
			built.err = err
			return
		}
		g, err := assets.ForKernel(context.Background(), kernel, assets.InitrdOptions{
			AgentBinary: agent,
			Modules:     assets.BaseGuestModules,
			CacheDir:    dir,
			Compression: os.Getenv("CRIVM_TEST_INITRD_COMPRESSION"),
		})
		built.vmlinux, built.initrd, built.release, built.err = g.Vmlinux, g.Initrd, g.Release, err
	})
	if built.err != nil {
		t.Fatalf("building guest assets: %v", built.err)
	}
	return built.vmlinux, built.initrd, built.release
}

// shortDir returns a fresh directory with a path short enough for unix
// sockets (t.TempDir paths can exceed 108 bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "crivm-vm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// healthyAgent connects to vm's agent and waits until it answers Health
// (dumping the guest console if it never does); the connection closes
// when the test ends.
func healthyAgent(t *testing.T, ctx context.Context, vm *vmm.VM) *agentproxy.Client {
	t.Helper()
	c, err := agentproxy.Connect(ctx, &agentproxy.SerialDialer{Path: vm.AgentSocket()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.WaitHealthy(ctx, 5*time.Second); err != nil {
		dumpConsole(t, vm)
		t.Fatal(err)
	}
	return c
}

// killVM kills vm at the end of a test, after showing its console when
// the test failed.
func killVM(t *testing.T, vm *vmm.VM) {
	t.Helper()
	if t.Failed() {
		dumpConsole(t, vm)
	}
	if err := vm.Kill(context.Background()); err != nil {
		t.Error(err)
	}
}

func dumpConsole(t *testing.T, vm *vmm.VM) {
	t.Helper()
	if b, err := os.ReadFile(vm.ConsoleLog()); err == nil {
		t.Logf("guest console:\n%s", b)
	}
}

// pss returns the proportional set size of pid in KiB.
func pss(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no Pss in smaps_rollup")
}

func hostRelease(t *testing.T) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// busyboxShare returns a directory holding a static busybox, to share
// with the guest over 9p: the initrd holds only the agent, so the guest's
// commands come from a share, as a pod's would.
func busyboxShare(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox-static not installed (commands for the guest come from it)")
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	share := shortDir(t)
	if err := os.WriteFile(filepath.Join(share, "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return share
}

func TestVMBootAgent(t *testing.T) {
	requireVM(t)
	vmlinux, initrd, release := buildAssets(t)
	bootMu.Lock()
	defer bootMu.Unlock()

	share := busyboxShare(t)

	dir := shortDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	tbSize, _ := strconv.Atoi(os.Getenv("CRIVM_TEST_TB_SIZE"))
	vm, err := vmm.Start(ctx, vmm.MachineConfig{
		QEMUPath:   qemuPath,
		Accel:      vmm.AccelTCG,
		MemoryMiB:  256,
		TBSizeMiB:  tbSize,
		Kernel:     vmlinux,
		Initrd:     initrd,
		KernelArgs: os.Getenv("CRIVM_TEST_KERNEL_ARGS"),
		Dir:        dir,
		SharedDirs: []vmm.SharedDir{{Tag: "crivmtest", HostPath: share, ReadOnly: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	qemuUp := time.Since(start)
	defer func() {
		if t.Failed() || os.Getenv("CRIVM_TEST_CONSOLE") != "" {
			dumpConsole(t, vm)
		}
		vm.Kill(context.Background())
	}()

	d := &agentproxy.SerialDialer{Path: vm.AgentSocket()}
	c, err := agentproxy.Connect(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.WaitHealthy(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	boot := time.Since(start)
	t.Logf("boot: qemu up in %v, first healthy agent call after %v (guest uptime %.2fs)", qemuUp.Round(time.Millisecond), boot.Round(time.Millisecond), h.UptimeSeconds)
	if h.KernelRelease != release {
		t.Errorf("guest kernel %q, want %q", h.KernelRelease, release)
	}

	if _, err := c.CreateSandbox(ctx, &api.CreateSandboxRequest{
		SandboxId: "sb1", Hostname: "pod-one",
		Dns:    &api.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"default.svc.cluster.local"}},
		Mounts: []*api.SharedMount{{Tag: "crivmtest", MountPoint: "/run/crivm/test", ReadOnly: true}},
	}); err != nil {
		t.Fatal(err)
	}
	exec := func(args ...string) *api.ExecProcessResponse {
		t.Helper()
		r, err := c.ExecProcess(ctx, &api.ExecProcessRequest{Args: append([]string{"/run/crivm/test/busybox"}, args...), TimeoutMs: 30000})
		if err != nil {
			t.Fatalf("exec %v: %v", args, err)
		}
		return r
	}
	r := exec("uname", "-r")
	guestRel := strings.TrimSpace(string(r.Stdout))
	if r.ExitCode != 0 || guestRel != release {
		t.Errorf("uname -r = %q (exit %d, stderr %q), want %q", guestRel, r.ExitCode, r.Stderr, release)
	}
	if hr := hostRelease(t); guestRel == hr {
		t.Errorf("guest kernel %q is the host's: the command did not run in the guest", guestRel)
	}
	if r := exec("cat", "/proc/1/cmdline"); string(r.Stdout) != "/init\x00" {
		t.Errorf("/proc/1/cmdline = %q, want /init", r.Stdout)
	}
	if r := exec("hostname"); strings.TrimSpace(string(r.Stdout)) != "pod-one" {
		t.Errorf("hostname = %q", r.Stdout)
	}
	if r := exec("cat", "/etc/resolv.conf"); !strings.Contains(string(r.Stdout), "nameserver 10.0.0.10") {
		t.Errorf("resolv.conf = %q", r.Stdout)
	}
	if r := exec("sh", "-c", "echo out; echo err >&2; exit 3"); r.ExitCode != 3 || string(r.Stdout) != "out\n" || string(r.Stderr) != "err\n" {
		t.Errorf("sh -c: exit %d stdout %q stderr %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	if r := exec("touch", "/run/crivm/test/x"); r.ExitCode == 0 {
		t.Errorf("writing to a read-only share succeeded")
	}
	r, err = c.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"/run/crivm/test/busybox", "sleep", "30"}, TimeoutMs: 300})
	if err != nil || !r.TimedOut || r.ExitCode != 128+9 {
		t.Errorf("exec with timeout: %+v, %v; want timed out, exit 137", r, err)
	}
	if _, err := c.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c1"}); errdefs.Code(err).String() != "InvalidArgument" {
		t.Errorf("CreateContainer without a spec: %v, want InvalidArgument", err)
	}
	if _, err := c.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"no-such-command"}}); errdefs.Code(err).String() != "InvalidArgument" {
		t.Errorf("exec of a missing command: %v, want InvalidArgument", err)
	}
	mounts := string(exec("cat", "/proc/mounts").Stdout)
	for _, m := range []string{"proc /proc proc", "sysfs /sys sysfs", "devtmpfs /dev devtmpfs", "devpts /dev/pts devpts",
		"tmpfs /run tmpfs", "cgroup2 /sys/fs/cgroup cgroup2", "crivmtest /run/crivm/test 9p ro"} {
		if !strings.Contains(mounts, m) {
			t.Errorf("guest mounts lack %q:\n%s", m, mounts)
		}
	}
	// Every module the initrd carries is loaded (none for a kernel that
	// builds them in, as crivm's does; the mounts, the agent's port and
	// the power button above show those work).
	carried, err := assets.ResolveModules(filepath.Join("/lib/modules", release), assets.BaseGuestModules)
	if err != nil {
		t.Fatal(err)
	}
	mods := string(exec("cat", "/proc/modules").Stdout)
	for _, m := range carried {
		if !strings.Contains(mods, m.Name+" ") {
			t.Errorf("guest modules lack %q, which the initrd carries:\n%s", m.Name, mods)
		}
	}
	t.Logf("guest kernel %s: %d modules loaded from the initrd", release, len(carried))

	if p, err := pss(vm.PID()); err == nil {
		t.Logf("qemu host PSS with a %d MiB guest, booted, agent serving: %d MiB", 256, p/1024)
	}

	// The host side goes away (daemon restart) and comes back: the agent
	// accepts a new session. The second time a call is in flight: the
	// guest answers into a dead session, and that must not leak into the
	// next one.
	for i := range 2 {
		if i == 1 {
			inflight := make(chan error, 1)
			go func() {
				_, err := c.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"/run/crivm/test/busybox", "sh", "-c", "sleep 1; head -c 300000 /dev/zero"}})
				inflight <- err
			}()
			time.Sleep(300 * time.Millisecond)
			defer func() {
				if err := <-inflight; err == nil {
					t.Error("a call in flight across a disconnect succeeded")
				}
			}()
		}
		if err := c.Close(); err != nil {
			t.Fatalf("closing client: %v", err)
		}
		rs := time.Now()
		c, err = agentproxy.Connect(ctx, d)
		if err != nil {
			t.Fatalf("reconnect %d: %v", i, err)
		}
		if _, err := c.WaitHealthy(ctx, 5*time.Second); err != nil {
			t.Fatalf("health after reconnect %d: %v", i, err)
		}
		t.Logf("reconnect %d: healthy after %v", i, time.Since(rs).Round(time.Millisecond))
		if i == 1 {
			// Outlive the old call's output, then prove the stream is clean.
			time.Sleep(1500 * time.Millisecond)
			if r := exec("echo", "clean"); string(r.Stdout) != "clean\n" {
				t.Fatalf("after a disconnect mid-call: %q", r.Stdout)
			}
		}
	}

	// A daemon restart: find the VM again from its directory.
	vm2, err := vmm.Reconnect(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if vm2.PID() != vm.PID() {
		t.Fatalf("Reconnect pid %d, want %d", vm2.PID(), vm.PID())
	}
	if _, err := c.DestroySandbox(ctx, &api.DestroySandboxRequest{SandboxId: "sb1"}); err != nil {
		t.Fatal(err)
	}
	c.Close()

	stopStart := time.Now()
	if err := vm2.Stop(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop (ACPI power button, agent powers off): %v", time.Since(stopStart).Round(time.Millisecond))
	select {
	case <-vm.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("the first VM handle did not see QEMU exit")
	}
	if err := unix.Kill(vm.PID(), 0); err == nil {
		// A zombie waiting for init would still answer; check its state.
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", vm.PID())); !strings.Contains(string(st), ") Z") {
			t.Errorf("qemu pid %d still runs after Stop", vm.PID())
		}
	}
	assertNoSockets(t, dir)
	if b, _ := os.ReadFile(filepath.Join(dir, vmm.ConsoleLogName)); !strings.Contains(string(b), "power button pressed") {
		t.Errorf("the guest did not power off through the agent; console:\n%s", b)
	}
	if _, err := vmm.Reconnect(ctx, dir); !errdefs.IsClass(err, errdefs.ErrNotFound) {
		t.Errorf("Reconnect after Stop: %v, want NotFound", err)
	}
}

func assertNoSockets(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 || e.Name() == vmm.PidfileName {
			t.Errorf("%s left in the vm dir", e.Name())
		}
	}
}

// TestVMStartFailureLeavesNothing makes QEMU fail after validation passed
// (a bad machine type) and checks nothing is left.
func TestVMStartFailureLeavesNothing(t *testing.T) {
	requireVM(t)
	dir := shortDir(t)
	k := filepath.Join(dir, "k")
	os.WriteFile(k, []byte("not a kernel"), 0o644)
	_, err := vmm.Start(context.Background(), vmm.MachineConfig{
		QEMUPath: qemuPath, Accel: vmm.AccelTCG, MachineType: "no-such-machine", MemoryMiB: 256,
		Kernel: k, Initrd: k, Dir: dir,
	})
	if err == nil || !strings.Contains(err.Error(), "unsupported machine type") {
		t.Fatalf("Start with a bad machine type = %v, want QEMU's error", err)
	}
	assertNoSockets(t, dir)
	if _, err := vmm.Start(context.Background(), vmm.MachineConfig{QEMUPath: qemuPath, Accel: vmm.AccelTCG, MemoryMiB: 256, Kernel: "/nonexistent", Initrd: k, Dir: dir}); !errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("missing kernel: %v, want FailedPrecondition", err)
	}
}

// TestVMNetNSTap starts QEMU inside a network namespace with a tap device
// there, and checks the guest sees the NIC with the MAC it was given.
// netnsWithTap makes a network namespace named name holding tap0, up,
// with addrs (e.g. "10.99.0.1/24"), deleted at cleanup, and returns its
// path. It skips without iproute2.
func netnsWithTap(t *testing.T, name string, addrs ...string) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 missing")
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run("-n", name, "tuntap", "add", "dev", "tap0", "mode", "tap")
	for _, a := range addrs {
		run("-n", name, "addr", "add", a, "dev", "tap0")
	}
	run("-n", name, "link", "set", "tap0", "up")
	return "/run/netns/" + name
}

func TestVMNetNSTap(t *testing.T) {
	requireVM(t)
	nsPath := netnsWithTap(t, fmt.Sprintf("crivm-vmmtest-%d", os.Getpid()))
	vmlinux, initrd, _ := buildAssets(t)
	share := busyboxShare(t)
	bootMu.Lock()
	defer bootMu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := shortDir(t)
	const mac = "02:c0:ff:ee:00:01"
	vm, err := vmm.Start(ctx, vmm.MachineConfig{
		QEMUPath: qemuPath, Accel: vmm.AccelTCG, MemoryMiB: 256,
		Kernel: vmlinux, Initrd: initrd, Dir: dir,
		SharedDirs: []vmm.SharedDir{{Tag: "bb", HostPath: share, ReadOnly: true}},
		NetNSPath:  nsPath,
		Taps:       []vmm.Tap{{Name: "tap0", MAC: mac}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		killVM(t, vm)
		assertNoSockets(t, dir)
	}()
	var want, got unix.Stat_t
	if err := unix.Stat(nsPath, &want); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", vm.PID()), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino {
		t.Fatalf("qemu runs in netns inode %d, want %d (%s)", got.Ino, want.Ino, nsPath)
	}
	var self unix.Stat_t
	unix.Stat("/proc/self/ns/net", &self)
	if self.Ino == want.Ino {
		t.Fatal("the test process itself ended up in the pod's netns")
	}

	c := healthyAgent(t, ctx, vm)
	if _, err := c.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "n", Mounts: []*api.SharedMount{{Tag: "bb", MountPoint: "/bb", ReadOnly: true}}}); err != nil {
		t.Fatal(err)
	}
	r, err := c.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"/bb/busybox", "cat", "/sys/class/net/eth0/address"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(r.Stdout)) != mac {
		t.Fatalf("guest eth0 address %q (stderr %q), want %s", r.Stdout, r.Stderr, mac)
	}
}

// TestVMStopFallsBackToQuit stops a VM whose guest cannot handle the power
// button yet (it is still booting), so Stop must quit QEMU through QMP. A
// second Start on the same directory is refused while the VM runs.
func TestVMStopFallsBackToQuit(t *testing.T) {
	requireVM(t)
	vmlinux, initrd, _ := buildAssets(t)
	bootMu.Lock()
	defer bootMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := shortDir(t)
	cfg := vmm.MachineConfig{QEMUPath: qemuPath, Accel: vmm.AccelTCG, MemoryMiB: 256, Kernel: vmlinux, Initrd: initrd, Dir: dir}
	vm, err := vmm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill(context.Background())
	if _, err := vmm.Start(ctx, cfg); !errdefs.IsClass(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second Start in %s: %v, want AlreadyExists", dir, err)
	}
	if _, err := os.Stat(vm.QMPSocket()); err != nil {
		t.Fatalf("the refused Start removed the running VM's socket: %v", err)
	}
	start := time.Now()
	if err := vm.Stop(ctx, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop with fallback to quit: %v", time.Since(start).Round(time.Millisecond))
	select {
	case <-vm.Exited():
	default:
		t.Fatal("Stop returned before QEMU exited")
	}
	assertNoSockets(t, dir)
}

// TestVMAttachTap starts a VM whose NIC has no host side, as a pool's VM
// boots before its pod exists, then gives it a tap in a network namespace
// QEMU does not run in: frames pass both ways (the guest pings the tap's
// host address).
func TestVMAttachTap(t *testing.T) {
	requireVM(t)
	// 1. The pod's network namespace with a tap holding 10.99.0.1/24.
	nsPath := netnsWithTap(t, fmt.Sprintf("crivm-vmmattach-%d", os.Getpid()), "10.99.0.1/24")
	vmlinux, initrd, _ := buildAssets(t)
	share := busyboxShare(t)
	bootMu.Lock()
	defer bootMu.Unlock()

	// 2. A VM with an unplugged NIC, in the test's network namespace.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := shortDir(t)
	vm, err := vmm.Start(ctx, vmm.MachineConfig{
		QEMUPath: qemuPath, Accel: vmm.AccelTCG, MemoryMiB: 256,
		Kernel: vmlinux, Initrd: initrd, Dir: dir,
		SharedDirs: []vmm.SharedDir{{Tag: "bb", HostPath: share, ReadOnly: true}},
		Taps:       []vmm.Tap{{MAC: "02:c0:ff:ee:00:02", Unplugged: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer killVM(t, vm)
	c := healthyAgent(t, ctx, vm)
	if _, err := c.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "a", Mounts: []*api.SharedMount{{Tag: "bb", MountPoint: "/bb", ReadOnly: true}}}); err != nil {
		t.Fatal(err)
	}
	ping := func() (string, error) {
		r, err := c.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"/bb/busybox", "sh", "-c",
			"/bb/busybox ip addr add 10.99.0.2/24 dev eth0 2>/dev/null; /bb/busybox ip link set eth0 up; /bb/busybox ping -c 1 -W 3 10.99.0.1"}})
		if err != nil {
			return "", err
		}
		return string(r.Stdout) + string(r.Stderr), nil
	}
	// 3. The guest's NIC is down until the tap is there (see AttachTap).
	if r, err := c.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"/bb/busybox", "cat", "/sys/class/net/eth0/operstate"}}); err != nil || strings.TrimSpace(string(r.Stdout)) != "down" {
		t.Fatalf("guest eth0 before the tap: %v %q, want down", err, r.GetStdout())
	}

	// 4. Attached: the tap's host address answers.
	if err := vm.AttachTap(ctx, 0, nsPath, "tap0"); err != nil {
		t.Fatal(err)
	}
	if out, err := ping(); err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("ping after the tap is attached: %v: %q", err, out)
	}
}

// TestVMDistroKernelModules: a distro kernel, which has the virtio, 9p
// and network drivers as modules, boots with them loaded from the initrd
// in dependency order (crivm's own kernel, which the other tests boot,
// builds them in).
func TestVMDistroKernelModules(t *testing.T) {
	requireVM(t)
	buildAssets(t) // the agent binary
	kernel, err := assets.FindHostKernel()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := assets.ForKernel(ctx, kernel, assets.InitrdOptions{AgentBinary: filepath.Join(assetsDir, "crivm-agent"), Modules: assets.BaseGuestModules, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	vmlinux, initrd, release := g.Vmlinux, g.Initrd, g.Release
	carried, err := assets.ResolveModules(filepath.Join("/lib/modules", release), assets.BaseGuestModules)
	if err != nil {
		t.Fatal(err)
	}
	if len(carried) == 0 {
		t.Fatalf("the distro kernel %s builds in every base guest module: nothing to load", release)
	}
	bootMu.Lock()
	defer bootMu.Unlock()
	vm, err := vmm.Start(ctx, vmm.MachineConfig{
		QEMUPath: qemuPath, Accel: vmm.AccelTCG, MemoryMiB: 256, Kernel: vmlinux, Initrd: initrd, Dir: shortDir(t),
		SharedDirs: []vmm.SharedDir{{Tag: "crivmtest", HostPath: busyboxShare(t), ReadOnly: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer killVM(t, vm)
	c := healthyAgent(t, ctx, vm)
	// The share's 9p mount needs 9p, 9pnet_virtio and virtio_pci.
	if _, err := c.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "sb", Mounts: []*api.SharedMount{{Tag: "crivmtest", MountPoint: "/run/crivm/test", ReadOnly: true}}}); err != nil {
		t.Fatal(err)
	}
	r, err := c.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"/run/crivm/test/busybox", "cat", "/proc/modules"}, TimeoutMs: 30000})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range carried {
		if !strings.Contains(string(r.Stdout), m.Name+" ") {
			t.Errorf("guest modules lack %q, which the initrd carries:\n%s", m.Name, r.Stdout)
		}
	}
	t.Logf("distro kernel %s: %d modules loaded from the initrd", release, len(carried))
}
