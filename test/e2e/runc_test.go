package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criclient "k8s.io/cri-client/pkg"

	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
	"github.com/crivm/crivm/test/testutil"
)

// runcEnv is a daemon with a registry, the pause fixture, a bridge network,
// and busybox pulled.
type runcEnv struct {
	d       *framework.Daemon
	reg     *framework.Registry
	br      *framework.Bridge
	rs      internalapi.RuntimeService
	is      internalapi.ImageManagerService
	busybox string
	before  framework.NetState
	// ids are the sandboxes and containers the test made, for leak checks.
	ids []string
}

// newRuncEnv starts the environment; dropIn, when given, is extra daemon
// config written as a drop-in.
func newRuncEnv(t *testing.T, dropIn ...string) *runcEnv {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresBinary(t, registry.Binary)
	testutil.RequiresBinary(t, "runc")
	testutil.RequiresBinary(t, "conmon")
	testutil.RequiresBinary(t, "/usr/lib/cni/bridge")
	ctx := context.Background()
	before, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	reg := framework.StartRegistry(t, registry.Options{})
	d := framework.NewDaemon(t, framework.DaemonOptions{})
	d.TrustRegistry(reg.Host)
	d.UsePauseImage(reg.Ref("pause", "latest"))
	br := d.UseBridgeNetwork()
	if len(dropIn) > 0 {
		if err := os.WriteFile(filepath.Join(d.DropIn, "20-test.conf"), []byte(strings.Join(dropIn, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.Start(ctx)
	e := &runcEnv{d: d, reg: reg, br: br, rs: d.RuntimeService(ctx), is: d.ImageService(ctx), before: before}
	// Registered first, so it runs after the test's own cleanups removed
	// its pods: whatever is left then is a leak.
	t.Cleanup(func() {
		if !t.Failed() {
			e.checkNoLeaks(t, e.ids...)
		}
	})
	e.busybox, err = e.is.PullImage(ctx, spec(reg.Ref("busybox", "latest")), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *runcEnv) podConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: name + "-uid"},
		Hostname:     name,
		LogDirectory: filepath.Join(e.d.Dir, "logs", name),
		Linux:        &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}}},
	}
}

func (e *runcEnv) containerConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: e.busybox, UserSpecifiedImage: e.reg.Ref("busybox", "latest")},
		Command:  cmd,
		LogPath:  name + ".log",
		Linux:    &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{}},
	}
}

// checkNoLeaks asserts that nothing the test made is left on the host.
func (e *runcEnv) checkNoLeaks(t *testing.T, ids ...string) {
	t.Helper()
	leaks, err := e.before.Leaks(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Network namespace files carry the first 32 characters of an id.
	keys := []string{e.br.Name}
	for _, id := range ids {
		keys = append(keys, id[:min(32, len(id))])
	}
	if mine := framework.Matching(leaks, keys...); len(mine) > 0 {
		t.Errorf("left behind: %v", mine)
	}
	// host-local keeps this daemon's IP allocations in its own dir: one
	// file per IP, naming the container.
	ipFiles, _ := filepath.Glob(filepath.Join(e.d.Dir, "ipam", "*", "*"))
	for _, f := range ipFiles {
		b, _ := os.ReadFile(f)
		for _, id := range ids {
			if strings.Contains(string(b), id) {
				t.Errorf("IP allocation %s of %s left behind", filepath.Base(f), id)
			}
		}
	}
	for _, id := range ids {
		if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/*/crivm-" + id); len(dirs) > 0 {
			t.Errorf("cgroups left behind: %v", dirs)
		}
		if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/crivm-" + id); len(dirs) > 0 {
			t.Errorf("cgroups left behind: %v", dirs)
		}
	}
	out, _ := exec.Command("sh", "-c", "ps -eo args | grep -E 'conmon|runc|qemu-system|virtiofsd' | grep -v grep || true").Output()
	for _, id := range ids {
		// virtiofsd's command line names the VM dir: the first 32 of the id.
		if strings.Contains(string(out), id[:min(32, len(id))]) || strings.Contains(string(out), "crivm-"+id[:min(12, len(id))]) {
			t.Errorf("a process of %s is still running:\n%s", id, out)
		}
	}
	// The overlay driver keeps its home bind-mounted while the daemon runs.
	driverHome := filepath.Join(e.d.Root, "storage", "overlay")
	for _, m := range mountsUnder(t, e.d.Root, e.d.Runroot+"/pods") {
		if m != driverHome {
			t.Errorf("mount left behind: %s", m)
		}
	}
}

// mountsUnder lists mount points at or below any of dirs.
func mountsUnder(t *testing.T, dirs ...string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		for _, d := range dirs {
			if f[4] == d || strings.HasPrefix(f[4], d+"/") {
				out = append(out, f[4])
			}
		}
	}
	return out
}

var criLogLine = regexp.MustCompile(`^\S+ (stdout|stderr) (F|P) (.*)$`)

// TestRuncPodLifecycle: a pod and a container through runc and conmon, with
// logs, exec, status, stop, remove, and nothing left afterwards.
func TestRuncPodLifecycle(t *testing.T) {
	ctx := context.Background()
	e := newRuncEnv(t)
	rs := e.rs

	// 1. RunPodSandbox: the pod gets an IP on the test bridge.
	pod := e.podConfig("web")
	sbID, err := rs.RunPodSandbox(ctx, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := rs.PodSandboxStatus(ctx, sbID, true)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || !strings.HasPrefix(st.Status.Network.Ip, e.br.Prefix) {
		t.Errorf("sandbox: state %v ip %q, want READY on %s", st.Status.State, st.Status.Network.Ip, e.br.Subnet)
	}
	if st.Status.Annotations["io.crivm.handler"] != "runc" || st.Status.Annotations["io.crivm.trust"] != "trusted" {
		t.Errorf("trust annotations: %v", st.Status.Annotations)
	}
	if !strings.Contains(st.Info["info"], `"handler":"runc"`) {
		t.Errorf("verbose info lacks the handler: %s", st.Info["info"])
	}
	if ps, err := e.is.ImageStatus(ctx, spec(e.reg.Ref("pause", "latest")), false); err != nil || !ps.GetImage().GetPinned() {
		t.Errorf("the pause image is not pinned: %v %v", ps.GetImage(), err)
	}

	// 2. A container writing to stdout and stderr, then sleeping.
	cfg := e.containerConfig("app", "sh", "-c", "echo hello-out; echo hello-err >&2; exec sleep 3600")
	ctrID, err := rs.CreateContainer(ctx, sbID, cfg, pod)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.StartContainer(ctx, ctrID); err != nil {
		t.Fatal(err)
	}
	cs, err := rs.ContainerStatus(ctx, ctrID, false)
	if err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container status: %v %v", cs, err)
	}
	// image_id is the image ID PullImage returned; image_ref the digested
	// reference of the repository the container names.
	if cs.Status.ImageId != e.busybox || !strings.HasPrefix(cs.Status.ImageRef, e.reg.Host+"/busybox@sha256:") || cs.Status.LogPath != filepath.Join(pod.LogDirectory, "app.log") {
		t.Errorf("status: image id %q (want %q), image ref %q, log %q", cs.Status.ImageId, e.busybox, cs.Status.ImageRef, cs.Status.LogPath)
	}
	if l, err := rs.ListContainers(ctx, &runtimeapi.ContainerFilter{Id: ctrID}); err != nil || len(l) != 1 || l[0].ImageId != e.busybox || l[0].ImageRef != cs.Status.ImageRef {
		t.Errorf("list: %v %v, want image id %q and image ref %q", l, err, e.busybox, cs.Status.ImageRef)
	}

	// 3. The log is in CRI format, with both streams.
	var logData string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(cs.Status.LogPath)
		if logData = string(b); strings.Contains(logData, "hello-err") && strings.Contains(logData, "hello-out") {
			break
		}
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(logData), "\n") {
		m := criLogLine.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("log line not in CRI format: %q", l)
			continue
		}
		got[m[3]] = m[1]
	}
	if got["hello-out"] != "stdout" || got["hello-err"] != "stderr" {
		t.Errorf("log streams: got %v from %q", got, logData)
	}

	// 4. ExecSync: output, exit code, and the canary: runc shares the host kernel.
	stdout, _, err := rs.ExecSync(ctx, ctrID, []string{"sh", "-c", "hostname; uname -r; exit 3"}, 10*time.Second)
	hostKernel, _ := exec.Command("uname", "-r").Output()
	if want := "web\n" + string(hostKernel); string(stdout) != want || !isExitCode(err, 3) {
		t.Errorf("exec: stdout %q err %v, want %q and exit code 3", stdout, err, want)
	}
	_, _, err = rs.ExecSync(ctx, ctrID, []string{"sleep", "10"}, time.Second)
	if !errors.Is(err, criclient.ErrCommandTimedOut) {
		t.Errorf("exec of sleep 10 with a 1s timeout: %v, want a timeout", err)
	}

	// 5. Listing and filters.
	ctrs, err := rs.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: sbID, State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil || len(ctrs) != 1 || ctrs[0].Id != ctrID {
		t.Errorf("ListContainers running in pod: %v %v", ctrs, err)
	}

	// 6. Stop with a timeout: sleep ignores nothing, SIGTERM ends it.
	start := time.Now()
	if err := rs.StopContainer(ctx, ctrID, 10); err != nil {
		t.Fatal(err)
	}
	cs, err = rs.ContainerStatus(ctx, ctrID, false)
	if err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED || cs.Status.ExitCode != 143 {
		t.Errorf("after stop: %v (%v), want EXITED 143", cs.GetStatus(), err)
	}
	if time.Since(start) > 8*time.Second {
		t.Errorf("stop took %v: SIGTERM was not delivered", time.Since(start))
	}

	// 7. Remove everything; both removals are idempotent.
	for i := 0; i < 2; i++ {
		if err := rs.RemoveContainer(ctx, ctrID); err != nil {
			t.Fatal(err)
		}
		if err := rs.StopPodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
		if err := rs.RemovePodSandbox(ctx, sbID); err != nil {
			t.Fatal(err)
		}
	}
	if pods, _ := rs.ListPodSandbox(ctx, nil); len(pods) != 0 {
		t.Errorf("pods after removal: %v", pods)
	}
	e.checkNoLeaks(t, sbID, ctrID)

	// 8. A stopped daemon holds no mount at all.
	if err := e.d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(t, e.d.Root, e.d.Runroot); len(m) > 0 {
		t.Errorf("mounts after the daemon stopped: %v", m)
	}
}

// isExitCode reports whether err is the cri-client's error for a command
// that exited with code.
func isExitCode(err error, code int) bool {
	var ee interface{ ExitStatus() int }
	return errors.As(err, &ee) && ee.ExitStatus() == code
}
