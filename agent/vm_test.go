package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/vmm"
	"github.com/crivm/crivm/vmm/assets"
)

const (
	qemuPath    = "/usr/bin/qemu-system-x86_64"
	busyboxPath = "/bin/busybox"
)

// requireVM skips unless the test may boot a VM and every tool it needs
// is installed, saying which is missing.
func requireVM(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM under QEMU; skipped with -short")
	}
	for _, need := range []struct{ path, pkg string }{
		{qemuPath, "qemu-system-x86"}, {busyboxPath, "busybox-static"},
	} {
		if _, err := os.Stat(need.path); err != nil {
			t.Skipf("%s missing (apt-get install %s)", need.path, need.pkg)
		}
	}
	if m, _ := filepath.Glob("/boot/vmlinuz-*"); len(m) == 0 {
		t.Skip("no /boot/vmlinuz-* (apt-get install linux-image-amd64)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip missing (apt-get install iproute2)")
	}
}

// shortDir returns a fresh directory with a path short enough for unix
// sockets.
func shortDir(t *testing.T, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// guestAssets builds the static agent, the vmlinux and the agent initrd.
func guestAssets(t *testing.T) (vmlinux, initrd string) {
	t.Helper()
	dir := shortDir(t, "crivm-agent-assets-")
	agent := filepath.Join(dir, "crivm-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "crivm_guestroot", "-ldflags", "-s -w", "-o", agent, "github.com/crivm/crivm/cmd/crivm-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building agent: %v: %s", err, out)
	}
	kernel, err := assets.FindKernel("")
	if err != nil {
		t.Fatal(err)
	}
	g, err := assets.ForKernel(context.Background(), kernel, assets.InitrdOptions{AgentBinary: agent, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return g.Vmlinux, g.Initrd
}

// busyboxRootfs makes a container rootfs at dir: the static busybox with
// a symlink per applet, and an /etc/passwd.
func busyboxRootfs(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			os.Symlink("busybox", filepath.Join(dir, "bin", a))
		}
	}
	os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc", "group"), []byte("root:x:0:\n"), 0o644)
}

type guest struct {
	t      *testing.T
	c      *agentproxy.Client
	shared string
	sb     *runtimeapi.PodSandboxConfig
}

// ctrOpts shape one test container.
type ctrOpts struct {
	tty, stdin   bool
	memoryLimit  int64
	seccomp      bool
	podSharedPID bool
}

// create makes a rootfs for id in the share, generates its spec the way
// the vm handler does (oci.ContainerSpec with host paths, then
// agentproxy.GuestSpec) and creates it in the guest.
func (g *guest) create(ctx context.Context, id string, o ctrOpts, args ...string) {
	t := g.t
	t.Helper()
	rootfs := agentproxy.HostRootfs(g.shared, id)
	busyboxRootfs(t, rootfs)
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: id},
		Command:  args,
		Tty:      o.tty,
		Stdin:    o.stdin,
		Linux:    &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{}},
	}
	if o.memoryLimit > 0 {
		cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: o.memoryLimit}
	}
	if o.seccomp {
		cfg.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	}
	sb := g.sb
	if o.podSharedPID {
		sb = &runtimeapi.PodSandboxConfig{Metadata: g.sb.Metadata, Hostname: g.sb.Hostname, Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}},
		}}
	}
	spec, err := oci.ContainerSpec(oci.ContainerSpecInput{
		Host:           oci.Host{Cgroups: oci.CgroupFeatures{V2: true}, DaemonOOMScoreAdj: -1000},
		ID:             id,
		SandboxID:      "sb1",
		Sandbox:        sb,
		Config:         cfg,
		RootfsPath:     rootfs,
		NamespacePaths: agentproxy.GuestNamespacePaths(o.podSharedPID),
	})
	if err != nil {
		t.Fatalf("generating the spec of %s: %v", id, err)
	}
	if _, err := agentproxy.GuestSpec(spec, id, agentproxy.GuestSpecOptions{}); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(spec)
	r, err := g.c.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: id, OciSpec: b, Tty: o.tty, Stdin: o.stdin})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", id, err)
	}
	// The guest's steps come back for the host's log, in order.
	var names []string
	for _, p := range r.GetPhases() {
		names = append(names, p.GetName())
		if p.GetMs() < 0 {
			t.Errorf("CreateContainer %s: phase %s took %v ms", id, p.GetName(), p.GetMs())
		}
	}
	if want := []string{"cgroup", "fork", "config", "rootfs", "lookup", "ready"}; !slices.Equal(names, want) {
		t.Errorf("CreateContainer %s: phases %v, want %v", id, names, want)
	}
}

func (g *guest) start(ctx context.Context, id string) {
	g.t.Helper()
	if _, err := g.c.StartContainer(ctx, &api.StartContainerRequest{ContainerId: id}); err != nil {
		g.t.Fatalf("StartContainer %s: %v", id, err)
	}
}

func (g *guest) wait(ctx context.Context, id, execID string) *api.WaitProcessResponse {
	g.t.Helper()
	r, err := g.c.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: id, ExecId: execID})
	if err != nil {
		g.t.Fatalf("WaitProcess %s/%s: %v", id, execID, err)
	}
	return r
}

// output reads a stream to its end.
func (g *guest) output(ctx context.Context, id, execID string, s api.Stream) string {
	g.t.Helper()
	var b bytes.Buffer
	if _, err := agentproxy.CopyOutput(ctx, g.c, agentproxy.OutputStream{ContainerID: id, ExecID: execID, Stream: s, Poll: 5 * time.Second}, &b); err != nil {
		g.t.Fatalf("reading %s of %s/%s: %v", s, id, execID, err)
	}
	return b.String()
}

func (g *guest) exec(ctx context.Context, id string, args ...string) *api.ExecProcessResponse {
	g.t.Helper()
	r, err := g.c.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: id, Args: args, TimeoutMs: 60000})
	if err != nil {
		g.t.Fatalf("exec %v in %q: %v", args, id, err)
	}
	return r
}

func (g *guest) delete(ctx context.Context, id string) {
	g.t.Helper()
	for i := range 2 {
		if _, err := g.c.DeleteContainer(ctx, &api.DeleteContainerRequest{ContainerId: id}); err != nil {
			g.t.Fatalf("DeleteContainer %s (%d): %v", id, i, err)
		}
	}
}

// TestVMContainers boots one VM with the agent, configures its
// network over a tap, and runs busybox containers from a 9p share.
func TestVMContainers(t *testing.T) {
	requireVM(t)
	vmlinux, initrd := guestAssets(t)

	ns := fmt.Sprintf("crivm-agenttest-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip("-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
	ip("-n", ns, "addr", "add", "10.77.0.1/24", "dev", "tap0")
	ip("-n", ns, "link", "set", "tap0", "up")
	const mac = "02:c0:ff:ee:00:07"

	shared := shortDir(t, "crivm-shared-")
	os.Chmod(shared, 0o755)
	dir := shortDir(t, "crivm-vm-")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	vm, err := vmm.Start(ctx, vmm.MachineConfig{
		QEMUPath: qemuPath, Accel: vmm.AccelTCG, MemoryMiB: 256,
		Kernel: vmlinux, Initrd: initrd, Dir: dir,
		SharedDirs: []vmm.SharedDir{{Tag: agentproxy.SharedTag, HostPath: shared}},
		NetNSPath:  "/run/netns/" + ns,
		Taps:       []vmm.Tap{{Name: "tap0", MAC: mac}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() || os.Getenv("CRIVM_TEST_CONSOLE") != "" {
			if b, err := os.ReadFile(vm.ConsoleLog()); err == nil {
				t.Logf("guest console:\n%s", b)
			}
		}
		vm.Kill(context.Background())
	}()
	c, err := agentproxy.Connect(ctx, &agentproxy.SerialDialer{Path: vm.AgentSocket()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WaitHealthy(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("agent healthy after %v", time.Since(start).Round(time.Millisecond))

	sb := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "pod", Namespace: "default", Uid: "uid1"},
		Hostname: "pod-one",
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
	if _, err := c.CreateSandbox(ctx, &api.CreateSandboxRequest{
		SandboxId: "sb1", Hostname: "pod-one",
		Dns:        &api.DNSConfig{Servers: []string{"10.77.0.1"}},
		Mounts:     []*api.SharedMount{{Tag: agentproxy.SharedTag, MountPoint: agentproxy.GuestSharedDir, AllowSuid: true}},
		Interfaces: []*api.Interface{{Mac: mac, Mtu: 1400, Addresses: []string{"10.77.0.2/24"}}},
		Routes:     []*api.Route{{Gateway: "10.77.0.1"}},
	}); err != nil {
		t.Fatal(err)
	}
	g := &guest{t: t, c: c, shared: shared, sb: sb}

	// The guest's own tools come from a rootfs in the share.
	busyboxRootfs(t, filepath.Join(shared, "tools"))
	gbb := agentproxy.GuestSharedDir + "/tools/bin/busybox"
	t.Run("network", func(t *testing.T) {
		g := *g
		g.t = t
		addr := string(g.exec(ctx, "", gbb, "ip", "addr", "show", "eth0").Stdout)
		if !strings.Contains(addr, "inet 10.77.0.2/24") || !strings.Contains(addr, "mtu 1400") || !strings.Contains(addr, mac) {
			t.Errorf("guest eth0:\n%s", addr)
		}
		if r := string(g.exec(ctx, "", gbb, "ip", "route").Stdout); !strings.Contains(r, "default via 10.77.0.1 dev eth0") {
			t.Errorf("guest routes:\n%s", r)
		}
		if h := string(g.exec(ctx, "", gbb, "cat", "/etc/hosts").Stdout); !strings.Contains(h, "10.77.0.2\tpod-one") {
			t.Errorf("guest /etc/hosts:\n%s", h)
		}
		out, err := exec.Command("ip", "netns", "exec", ns, busyboxPath, "ping", "-c", "1", "-W", "10", "10.77.0.2").CombinedOutput()
		if err != nil {
			t.Errorf("ping from the pod netns to the guest: %v: %s", err, out)
		}
	})

	t.Run("exit code and streams", func(t *testing.T) {
		g := *g
		g.t = t
		g.create(ctx, "c1", ctrOpts{}, "sh", "-c", "echo out; echo err >&2; exit 3")
		g.start(ctx, "c1")
		// Wait first: output written before the host reads is kept.
		w := g.wait(ctx, "c1", "")
		if w.ExitCode != 3 || w.OomKilled {
			t.Errorf("WaitProcess = %+v, want exit 3, not OOM-killed", w)
		}
		if o := g.output(ctx, "c1", "", api.Stream_STDOUT); o != "out\n" {
			t.Errorf("stdout %q", o)
		}
		if e := g.output(ctx, "c1", "", api.Stream_STDERR); e != "err\n" {
			t.Errorf("stderr %q", e)
		}
		if w2 := g.wait(ctx, "c1", ""); w2.ExitCode != 3 {
			t.Errorf("second WaitProcess = %+v", w2)
		}
		if _, err := c.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "c1", Args: []string{"true"}}); !errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("exec in an exited container: %v, want FailedPrecondition", err)
		}
		g.delete(ctx, "c1")
		if _, err := c.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "c1"}); !errdefs.IsClass(err, errdefs.ErrNotFound) {
			t.Errorf("WaitProcess after delete: %v, want NotFound", err)
		}
	})

	// A hostile guest root floods its console, which the host keeps on
	// tmpfs: QEMU does not pace the UART, whatever its baud rate, so the
	// flood reaches console.log at the emulation's speed. vmm.TrimLogs'
	// interval is sized by this rate, which the test logs.
	t.Run("console flood", func(t *testing.T) {
		g := *g
		g.t = t
		size := func() int64 {
			st, err := os.Stat(vm.ConsoleLog())
			if err != nil {
				t.Fatal(err)
			}
			return st.Size()
		}
		const n = 256 << 10
		before := size()
		start := time.Now()
		g.exec(ctx, "", gbb, "sh", "-c", fmt.Sprintf("%s stty -F /dev/ttyS0 300; %s head -c %d /dev/zero > /dev/ttyS0", gbb, gbb, n))
		for deadline := time.Now().Add(time.Minute); size()-before < n && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		}
		took := time.Since(start)
		if grown := size() - before; grown < n {
			t.Fatalf("console.log grew by %d bytes in %v, want %d", grown, took, n)
		}
		t.Logf("%d KiB onto the console at 300 baud in %v: %.0f KB/s", n>>10, took.Round(time.Millisecond), float64(n)/took.Seconds()/1000)
	})

	t.Run("exec failing after the start", func(t *testing.T) {
		g := *g
		g.t = t
		// Executable, so CreateContainer's check passes, but no program:
		// the exec fails after StartContainer returned, which does not
		// wait for it.
		bin := filepath.Join(agentproxy.HostRootfs(g.shared, "badexec"), "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, "notelf"), []byte("\x00\x01 not a program\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		g.create(ctx, "badexec", ctrOpts{}, "/bin/notelf")
		g.start(ctx, "badexec")
		w := g.wait(ctx, "badexec", "")
		if w.ExitCode != 128 || !strings.Contains(w.StartError, "exec /bin/notelf: exec format error") {
			t.Errorf("WaitProcess = %+v, want exit 128 and the exec's error", w)
		}
		if _, err := c.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "badexec", Args: []string{"true"}}); !errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("exec in a container whose start failed: %v, want FailedPrecondition", err)
		}
		g.delete(ctx, "badexec")
	})

	t.Run("oom", func(t *testing.T) {
		g := *g
		g.t = t
		g.create(ctx, "hog", ctrOpts{memoryLimit: 16 << 20}, "sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done")
		g.start(ctx, "hog")
		w := g.wait(ctx, "hog", "")
		if !w.OomKilled || w.ExitCode != 137 {
			t.Errorf("WaitProcess = %+v, want OOM-killed, exit 137", w)
		}
		g.delete(ctx, "hog")
	})

	t.Run("running container", func(t *testing.T) {
		g := *g
		g.t = t
		g.create(ctx, "run", ctrOpts{seccomp: true}, "sleep", "1000")
		g.start(ctx, "run")
		if h := strings.TrimSpace(string(g.exec(ctx, "run", "hostname").Stdout)); h != "pod-one" {
			t.Errorf("hostname in the container = %q", h)
		}
		if u := strings.TrimSpace(string(g.exec(ctx, "run", "id", "-u").Stdout)); u != "0" {
			t.Errorf("id -u = %q", u)
		}
		if cl := string(g.exec(ctx, "run", "cat", "/proc/1/cmdline").Stdout); cl != "sleep\x001000\x00" {
			t.Errorf("/proc/1/cmdline in the container = %q, want the container's sleep", cl)
		}
		if s := string(g.exec(ctx, "run", "grep", "Seccomp:", "/proc/self/status").Stdout); !strings.Contains(s, "2") {
			t.Errorf("seccomp status in the container = %q, want filter mode", s)
		}
		st, err := c.StatsContainer(ctx, &api.StatsContainerRequest{ContainerId: "run"})
		if err != nil {
			t.Fatal(err)
		}
		if st.CpuUsageNs == 0 || st.MemoryUsageBytes == 0 || st.MemoryWorkingSetBytes == 0 || st.PidsCurrent == 0 {
			t.Errorf("stats %+v: want non-zero cpu, memory, working set, pids", st)
		}
		// The metrics' values: the container's processes and their files
		// in the guest's /proc, and what only cgroup v2 has.
		for _, k := range []string{"processes", "file_descriptors", "max_open_files_soft", "memory_max_usage_bytes", "pressure_cpu_some_us"} {
			if _, ok := st.Values[k]; !ok || (k != "pressure_cpu_some_us" && st.Values[k] == 0) {
				t.Errorf("stats value %s: %d (present %v)", k, st.Values[k], ok)
			}
		}

		res, _ := json.Marshal(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20))}})
		if _, err := c.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: "run", Resources: res}); err != nil {
			t.Errorf("UpdateContainer: %v", err)
		} else if m := strings.TrimSpace(string(g.exec(ctx, "run", "cat", "/sys/fs/cgroup/memory.max").Stdout)); m != fmt.Sprint(64<<20) {
			t.Errorf("memory.max after update = %q", m)
		}

		r, err := c.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "run", Args: []string{"sleep", "30"}, TimeoutMs: 500})
		if err != nil || !r.TimedOut || r.ExitCode != 137 {
			t.Errorf("exec with timeout: %+v, %v; want timed out, exit 137", r, err)
		}
		// The timed-out process is gone, reaped (no zombie), by the time
		// the call returns: the only sleep left is the init (critest
		// checks with pgrep right away).
		if ps := string(g.exec(ctx, "run", "sh", "-c", "cat /proc/[0-9]*/comm").Stdout); strings.Count(ps, "sleep\n") != 1 {
			t.Errorf("processes after a timed-out exec of sleep:\n%s\nwant one sleep (the init)", ps)
		}

		// A streamed exec with stdin.
		if _, err := c.StartProcess(ctx, &api.StartProcessRequest{ContainerId: "run", ExecId: "e1", Args: []string{"sh", "-c", "echo hi; cat"}, Stdin: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: "run", ExecId: "e1", Data: []byte("abc\n")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: "run", ExecId: "e1"}); err != nil {
			t.Fatal(err)
		}
		if o := g.output(ctx, "run", "e1", api.Stream_STDOUT); o != "hi\nabc\n" {
			t.Errorf("exec stdout %q", o)
		}
		if w := g.wait(ctx, "run", "e1"); w.ExitCode != 0 {
			t.Errorf("exec e1: %+v", w)
		}

		// A streamed exec with a terminal, resized.
		if _, err := c.StartProcess(ctx, &api.StartProcessRequest{ContainerId: "run", ExecId: "t", Args: []string{"sh", "-c", "sleep 1; stty size; tty"}, Tty: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ResizeTerminal(ctx, &api.ResizeTerminalRequest{ContainerId: "run", ExecId: "t", Width: 100, Height: 30}); err != nil {
			t.Error(err)
		}
		if o := g.output(ctx, "run", "t", api.Stream_STDOUT); !strings.Contains(o, "30 100\r\n/dev/pts/") {
			t.Errorf("exec with a tty: output %q", o)
		}
		if e := g.output(ctx, "run", "t", api.Stream_STDERR); e != "" {
			t.Errorf("exec with a tty: stderr %q", e)
		}
		if w := g.wait(ctx, "run", "t"); w.ExitCode != 0 {
			t.Errorf("exec with a tty: %+v", w)
		}

		// SIGTERM ends a sleep that is not PID 1 of its namespace.
		if _, err := c.StartProcess(ctx, &api.StartProcessRequest{ContainerId: "run", ExecId: "s", Args: []string{"sleep", "1000"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "run", ExecId: "s", Signal: uint32(unix.SIGTERM)}); err != nil {
			t.Fatal(err)
		}
		if w := g.wait(ctx, "run", "s"); w.ExitCode != 128+int32(unix.SIGTERM) {
			t.Errorf("exec'd sleep after SIGTERM: %+v, want exit 143", w)
		}
		if _, err := c.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: "run", ExecId: "s"}); err != nil {
			t.Error(err)
		}

		// The init ignores SIGTERM (PID 1 without a handler); --all
		// SIGKILL ends the container.
		if _, err := c.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "run", Signal: uint32(unix.SIGKILL), All: true}); err != nil {
			t.Fatal(err)
		}
		if w := g.wait(ctx, "run", ""); w.ExitCode != 137 || w.OomKilled {
			t.Errorf("init after SIGKILL: %+v", w)
		}
		if _, err := c.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "run", Signal: uint32(unix.SIGTERM)}); err != nil {
			t.Errorf("signalling an exited init: %v", err)
		}
		g.delete(ctx, "run")
	})

	t.Run("tty", func(t *testing.T) {
		g := *g
		g.t = t
		// A 64-character id, as the kubelet's: the console socket path
		// must not grow with it.
		id := strings.Repeat("7", 64)
		g.create(ctx, id, ctrOpts{tty: true}, "sh", "-c", "tty; echo hello")
		g.start(ctx, id)
		var out string
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); out = g.output(ctx, id, "", api.Stream_STDOUT) }()
		if w := g.wait(ctx, id, ""); w.ExitCode != 0 {
			t.Errorf("tty container: %+v", w)
		}
		wg.Wait()
		if !strings.Contains(out, "/dev/pts/0") || !strings.Contains(out, "hello\r\n") {
			t.Errorf("tty output %q", out)
		}
		g.delete(ctx, id)
	})

	t.Run("stdin", func(t *testing.T) {
		g := *g
		g.t = t
		g.create(ctx, "cat", ctrOpts{stdin: true}, "cat")
		g.start(ctx, "cat")
		if _, err := c.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: "cat", Data: []byte("ping\n")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: "cat"}); err != nil {
			t.Fatal(err)
		}
		if o := g.output(ctx, "cat", "", api.Stream_STDOUT); o != "ping\n" {
			t.Errorf("cat stdout %q", o)
		}
		if w := g.wait(ctx, "cat", ""); w.ExitCode != 0 {
			t.Errorf("cat: %+v", w)
		}
		g.delete(ctx, "cat")
	})

	t.Run("pod pid namespace", func(t *testing.T) {
		g := *g
		g.t = t
		g.create(ctx, "shared", ctrOpts{podSharedPID: true}, "sleep", "1000")
		g.start(ctx, "shared")
		if cl := string(g.exec(ctx, "shared", "cat", "/proc/1/cmdline").Stdout); cl != "crivm-agent\x00pause\x00" {
			t.Errorf("PID 1 of the pod's pid namespace = %q, want the agent's holder", cl)
		}
		// Left running: DestroySandbox must end it.
	})

	if _, err := c.DestroySandbox(ctx, &api.DestroySandboxRequest{SandboxId: "sb1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "shared"}); !errdefs.IsClass(err, errdefs.ErrNotFound) {
		t.Errorf("a container after DestroySandbox: %v, want NotFound", err)
	}
}

func ptr[T any](v T) *T { return &v }
