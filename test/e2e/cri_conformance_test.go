package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	utilversion "k8s.io/apimachinery/pkg/util/version"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criclient "k8s.io/cri-client/pkg"

	"github.com/crivm/crivm/test/framework"
)

// TestRuncCRIConformance: what critest v1.37 and a kubelet v1.37.2 found
// wrong (issue 17), against the real daemon with runc: privileged and ALL
// capabilities within the runtime's bounding set, idempotent stops of
// unknown IDs, a timed-out exec leaving no process, an empty seccomp
// profile meaning unconfined, TERM in tty execs, concurrent image
// removals, the default handler and a semver version in Status/Version,
// and no warning for a sandbox process a stop ended.
func TestRuncCRIConformance(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()

	// 1. A privileged container and one with capabilities ALL start, with
	//    the capabilities the runtime holds: the daemon's own bounding set
	//    (this machine's root lacks CAP_SYS_RESOURCE, and runc failed with
	//    "unable to apply caps" when asked for it).
	pod := e.podConfig("priv")
	pod.Linux.SecurityContext.Privileged = true
	privCfg := e.containerConfig("priv", "sleep", "3600")
	privCfg.Linux.SecurityContext.Privileged = true
	sbID, privID := e.runPod(t, pod, privCfg)
	allCfg := e.containerConfig("all", "sleep", "3600")
	allCfg.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"ALL"}}
	allID := e.startContainer(t, sbID, allCfg, pod)
	held := ownCapBnd(t) & (1<<41 - 1) // the capabilities Linux defines up to CAP_CHECKPOINT_RESTORE
	want := fmt.Sprintf("%016x\n%016x\n", held, held)
	for name, id := range map[string]string{"privileged": privID, "ALL": allID} {
		if got := e.exec(t, id, "sh", "-c", "grep -E '^Cap(Bnd|Eff)' /proc/self/status | cut -f2"); got != want {
			t.Errorf("%s container: CapBnd and CapEff %q, want the runtime's bounding set %q", name, got, want)
		}
	}

	// 2. Stop is idempotent: unknown container and sandbox IDs succeed.
	unknown := strings.Repeat("0f", 32)
	if err := e.rs.StopContainer(ctx, unknown, 1); err != nil {
		t.Errorf("StopContainer of an unknown ID: %v, want success", err)
	}
	if err := e.rs.StopPodSandbox(ctx, unknown); err != nil {
		t.Errorf("StopPodSandbox of an unknown ID: %v, want success", err)
	}

	// 3. An exec that times out is killed and reaped before ExecSync
	//    returns: right after, the only sleep in the container is its
	//    init (critest looks with pgrep at once; a zombie counts).
	_, sleeper := e.runPod(t, e.podConfig("exec"), e.containerConfig("sleeper", "sleep", "3600"))
	if _, _, err := e.rs.ExecSync(ctx, sleeper, []string{"sleep", "4321"}, time.Second); !errors.Is(err, criclient.ErrCommandTimedOut) {
		t.Errorf("exec of sleep 4321 with a 1s timeout: %v, want a timeout", err)
	}
	if ps := e.exec(t, sleeper, "sh", "-c", "cat /proc/[0-9]*/stat"); strings.Count(ps, "(sleep)") != 1 {
		t.Errorf("processes right after a timed-out exec:\n%swant one sleep (the init)", ps)
	}

	// 4. A container that asks for no seccomp profile runs unconfined
	//    (seccomp_use_default_when_empty is false by default).
	if got := e.exec(t, sleeper, "sh", "-c", "grep '^Seccomp:' /proc/self/status | cut -f2"); got != "0\n" {
		t.Errorf("seccomp mode without a profile: %q, want 0 (unconfined)", got)
	}

	// 5. An exec with a terminal has TERM=xterm, though the container has
	//    no terminal (and so no TERM) of its own.
	resp, err := e.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: sleeper, Cmd: []string{"sh", "-c", "echo term=$TERM"}, Stdout: true, Tty: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := framework.Stream(ctx, resp.Url, framework.StreamOptions{Stdout: &out, TTY: true}); err != nil || !strings.Contains(out.String(), "term=xterm") {
		t.Errorf("tty exec: %q (%v), want term=xterm", out.String(), err)
	}
	if got := e.exec(t, sleeper, "sh", "-c", "echo term=$TERM"); got != "term=\n" {
		t.Errorf("exec without a terminal: %q, want no TERM", got)
	}

	// 6. Removals of one image at once all succeed: the ones that find it
	//    already deleted treat it as gone.
	layered := e.reg.Ref("layered", "latest")
	if _, err := e.is.PullImage(ctx, spec(layered), nil, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- e.is.RemoveImage(ctx, spec(layered)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent RemoveImage: %v", err)
		}
	}
	if st, err := e.is.ImageStatus(ctx, spec(layered), false); err != nil || st.GetImage() != nil {
		t.Errorf("image after the removals: %v %v, want none", st.GetImage(), err)
	}

	// 7. Status lists the default handler under "" (the kubelet's name for
	//    pods without a RuntimeClass), and RuntimeVersion is semver (the
	//    kubelet's node status shows crivm://Unknown otherwise).
	st, err := e.rs.Status(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range st.GetRuntimeHandlers() {
		names = append(names, strconv.Quote(h.GetName()))
	}
	if len(names) == 0 || names[0] != `""` || !strings.Contains(strings.Join(names, ","), `"runc"`) {
		t.Errorf("runtime handlers %v, want \"\" first and runc", names)
	}
	v, err := e.rs.Version(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := utilversion.ParseSemantic(v.RuntimeVersion); err != nil {
		t.Errorf("RuntimeVersion %q is not semver: %v", v.RuntimeVersion, err)
	}

	// 8. A normal StopPodSandbox ends the sandbox process; that is not
	//    reported as a sandbox that died.
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the exit watch reports the infra exit
	if strings.Contains(e.d.Log(), "sandbox process is gone") {
		t.Errorf("a normal stop logged a dead sandbox:\n%s", e.d.Log())
	}
}

// ownCapBnd is this process's bounding set; the daemon, started by this
// test as root, has the same.
func ownCapBnd(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no CapBnd in /proc/self/status")
	return 0
}

// TestVMCRIConformance: issue 17's findings in a VM pod (a trusted pod on
// the vm handler, privileged inside its VM): a setuid program runs as its
// owner (the guest mounts the share holding rootfs and volumes without
// nosuid), a privileged container holds every capability of the guest
// (whatever the host daemon lacks) and can create a bridge (the initrd
// carries bridge, stp and llc), a timed-out exec leaves no process, an
// empty seccomp profile is unconfined, and a tty exec has TERM=xterm.
func TestVMCRIConformance(t *testing.T) {
	requiresVM(t)
	e := newRuncEnv(t)
	ctx := context.Background()

	// A setuid-root program printing its effective uid, in a hostPath
	// volume (the volume is in the same guest mount as the rootfs).
	dir := t.TempDir()
	src := filepath.Join(dir, "euid.go")
	if err := os.WriteFile(src, []byte("package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() { fmt.Printf(\"euid=%d\\n\", os.Geteuid()) }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	suidDir := filepath.Join(dir, "suid")
	os.Mkdir(suidDir, 0o755)
	euid := filepath.Join(suidDir, "euid")
	build := exec.Command(goBinary(), "build", "-o", euid, src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the setuid program: %v\n%s", err, out)
	}
	if err := os.Chmod(euid, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)

	// 1. A privileged pod on the vm handler.
	pod := e.podConfig("vmconf")
	pod.Linux.SecurityContext.Privileged = true
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	if _, info := e.sandboxStatus(t, sbID); info.Handler != "vm" {
		t.Fatalf("pod handler %q, want vm", info.Handler)
	}

	// 2. Allow privilege escalation: a non-root process runs the setuid
	//    program as root (no_new_privs off).
	user := e.containerConfig("user", "sleep", "3600")
	user.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
	user.Mounts = []*runtimeapi.Mount{{HostPath: suidDir, ContainerPath: "/suid", Readonly: true}}
	userID := e.startContainer(t, sbID, user, pod)
	if got := e.exec(t, userID, "/suid/euid"); got != "euid=0\n" {
		t.Errorf("setuid-root program run by uid 1000 in the VM: %q, want euid=0", got)
	}
	nnp := e.containerConfig("nnp", "sleep", "3600")
	nnp.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
	nnp.Linux.SecurityContext.NoNewPrivs = true
	nnp.Mounts = user.Mounts
	nnpID := e.startContainer(t, sbID, nnp, pod)
	if got := e.exec(t, nnpID, "/suid/euid"); got != "euid=1000\n" {
		t.Errorf("setuid-root program with no_new_privs: %q, want euid=1000", got)
	}

	// 3. A privileged container holds every capability of the guest,
	//    CAP_SYS_RESOURCE included, and creates a bridge.
	privCfg := e.containerConfig("priv", "sleep", "3600")
	privCfg.Linux.SecurityContext.Privileged = true
	privID := e.startContainer(t, sbID, privCfg, pod)
	if got := e.exec(t, privID, "sh", "-c", "grep -E '^Cap(Bnd|Eff)' /proc/self/status | cut -f2"); got != "000001ffffffffff\n000001ffffffffff\n" {
		t.Errorf("privileged VM container: CapBnd and CapEff %q, want all 41 capabilities", got)
	}
	if out, stderr, err := e.rs.ExecSync(ctx, privID, []string{"brctl", "addbr", "crivmbr0"}, 30*time.Second); err != nil {
		t.Errorf("brctl addbr in a privileged VM container: %v (stdout %q stderr %q)", err, out, stderr)
	} else if got := e.exec(t, privID, "sh", "-c", "cat /sys/class/net/crivmbr0/bridge/stp_state && brctl delbr crivmbr0"); got != "0\n" {
		t.Errorf("the new bridge: %q", got)
	}

	// 4. A timed-out exec is killed and reaped in the guest before
	//    ExecSync returns: right after, the pod's PID namespace holds the
	//    sleeps it held before (the containers' inits), no more.
	sleeps := func() int {
		return strings.Count(e.exec(t, privID, "sh", "-c", "cat /proc/[0-9]*/stat"), "(sleep)")
	}
	before := sleeps()
	if _, _, err := e.rs.ExecSync(ctx, privID, []string{"sleep", "4321"}, time.Second); !errors.Is(err, criclient.ErrCommandTimedOut) {
		t.Errorf("exec of sleep 4321 with a 1s timeout: %v, want a timeout", err)
	}
	if after := sleeps(); after != before {
		t.Errorf("sleep processes right after a timed-out exec: %d, before it %d", after, before)
	}

	// 5. No seccomp profile asked: unconfined. A tty exec has TERM=xterm.
	if got := e.exec(t, userID, "sh", "-c", "grep '^Seccomp:' /proc/self/status | cut -f2"); got != "0\n" {
		t.Errorf("seccomp mode without a profile in the VM: %q, want 0 (unconfined)", got)
	}
	resp, err := e.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: userID, Cmd: []string{"sh", "-c", "echo term=$TERM"}, Stdout: true, Tty: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := framework.Stream(ctx, resp.Url, framework.StreamOptions{Stdout: &out, TTY: true}); err != nil || !strings.Contains(out.String(), "term=xterm") {
		t.Errorf("tty exec in the VM: %q (%v), want term=xterm", out.String(), err)
	}
}

// goBinary is the go command (the Makefile puts /usr/local/go/bin first
// in PATH).
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}
