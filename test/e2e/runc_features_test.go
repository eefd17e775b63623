package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/test/framework"
)

// runPod starts a pod with one running container and returns their IDs.
func (e *runcEnv) runPod(t *testing.T, pod *runtimeapi.PodSandboxConfig, ctr *runtimeapi.ContainerConfig) (string, string) {
	t.Helper()
	ctx := context.Background()
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	return sbID, e.startContainer(t, sbID, ctr, pod)
}

// startContainer creates and starts ctr in sandbox sbID and returns its ID.
func (e *runcEnv) startContainer(t *testing.T, sbID string, ctr *runtimeapi.ContainerConfig, pod *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	ctx := context.Background()
	ctrID, err := e.rs.CreateContainer(ctx, sbID, ctr, pod)
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, ctrID)
	if err := e.rs.StartContainer(ctx, ctrID); err != nil {
		t.Fatal(err)
	}
	return ctrID
}

func (e *runcEnv) exec(t *testing.T, ctrID string, cmd ...string) string {
	t.Helper()
	out, stderr, err := e.rs.ExecSync(context.Background(), ctrID, cmd, 10*time.Second)
	if err != nil {
		t.Fatalf("exec %v: %v (stderr %q)", cmd, err, stderr)
	}
	return string(out)
}

// waitExited polls ContainerStatus until the container has exited.
func (e *runcEnv) waitExited(t *testing.T, ctrID string, timeout time.Duration) *runtimeapi.ContainerStatus {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		st, err := e.rs.ContainerStatus(context.Background(), ctrID, false)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			return st.Status
		}
	}
	t.Fatalf("container %s did not exit within %v", ctrID, timeout)
	return nil
}

// TestRuncSecurityContext: run-as-user, readonly rootfs, dropped
// capabilities and the default seccomp profile take effect.
func TestRuncSecurityContext(t *testing.T) {
	e := newRuncEnv(t)
	pod := e.podConfig("secure")
	ctr := e.containerConfig("app", "sleep", "3600")
	uid := int64(1000)
	ctr.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser:          &runtimeapi.Int64Value{Value: uid},
		ReadonlyRootfs:     true,
		Capabilities:       &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}},
		Seccomp:            &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
		NoNewPrivs:         true,
		NamespaceOptions:   &runtimeapi.NamespaceOption{},
		SupplementalGroups: []int64{2000},
	}
	_, ctrID := e.runPod(t, pod, ctr)

	tests := []struct {
		name string
		cmd  []string
		want string
	}{
		{"uid", []string{"id", "-u"}, "1000\n"},
		// The primary group comes from the image's /etc/passwd for uid 1000.
		{"groups", []string{"id", "-G"}, "1000 2000\n"},
		// CAP_NET_BIND_SERVICE is bit 10: 0x400, and nothing else is left
		// in the bounding set. A non-root process has no effective caps.
		{"bounding caps", []string{"sh", "-c", "grep CapBnd /proc/self/status | cut -f2"}, "0000000000000400\n"},
		{"effective caps", []string{"sh", "-c", "grep CapEff /proc/self/status | cut -f2"}, "0000000000000000\n"},
		{"seccomp mode", []string{"sh", "-c", "grep '^Seccomp:' /proc/self/status | cut -f2"}, "2\n"},
		{"no new privs", []string{"sh", "-c", "grep NoNewPrivs /proc/self/status | cut -f2"}, "1\n"},
	}
	for _, tt := range tests {
		if got := e.exec(t, ctrID, tt.cmd...); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
	// The read-only rootfs refuses writes; /tmp is part of it.
	if _, _, err := e.rs.ExecSync(context.Background(), ctrID, []string{"touch", "/newfile"}, 10*time.Second); !isExitCode(err, 1) {
		t.Errorf("touch on a read-only rootfs: %v, want exit 1", err)
	}
	// The default profile refuses unshare (namespace creation).
	_, stderr, err := e.rs.ExecSync(context.Background(), ctrID, []string{"unshare", "-n", "true"}, 10*time.Second)
	if err == nil || !strings.Contains(string(stderr), "Operation not permitted") {
		t.Errorf("unshare under RuntimeDefault: err %v stderr %q, want Operation not permitted", err, stderr)
	}
}

// TestRuncExitAndOOM: a container that exits at once reports its code and
// log; a memory hog over its limit ends OOMKilled.
func TestRuncExitAndOOM(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()

	// 1. Exits at once with 7, after writing a line.
	_, quick := e.runPod(t, e.podConfig("quick"), e.containerConfig("quick", "sh", "-c", "echo bye; exit 7"))
	st := e.waitExited(t, quick, 10*time.Second)
	if st.ExitCode != 7 || st.Reason != "Error" || st.FinishedAt < st.StartedAt {
		t.Errorf("quick exit: code %d reason %q started %d finished %d", st.ExitCode, st.Reason, st.StartedAt, st.FinishedAt)
	}
	if b, _ := os.ReadFile(st.LogPath); !strings.Contains(string(b), " stdout F bye") {
		t.Errorf("quick exit log: %q", b)
	}

	// 2. A 16 MiB limit and a process that wants much more.
	hog := e.containerConfig("hog", "sh", "-c", "x=a; while true; do x=$x$x; done")
	hog.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}
	_, hogID := e.runPod(t, e.podConfig("hog"), hog)
	st = e.waitExited(t, hogID, 60*time.Second)
	if st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("memory hog: reason %q exit %d, want OOMKilled 137", st.Reason, st.ExitCode)
	}
	_ = ctx
}

// TestRuncStreams: exec with and without a terminal, attach, and
// port-forward, through the streaming server with the kubelet's protocol.
func TestRuncStreams(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()
	ctr := e.containerConfig("app", "sh", "-c", "while true; do echo tick; sleep 0.2; done & exec nc -ll -p 8080 -e echo pong")
	ctr.Stdin, ctr.Tty = false, false
	sbID, ctrID := e.runPod(t, e.podConfig("streams"), ctr)

	// 1. Exec without a terminal: stdin in, stdout and stderr apart.
	resp, err := e.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: ctrID, Cmd: []string{"sh", "-c", "cat; echo err >&2; exit 5"}, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	err = framework.Stream(ctx, resp.Url, framework.StreamOptions{Stdin: strings.NewReader("from-stdin"), Stdout: &out, Stderr: &errb})
	if out.String() != "from-stdin" || errb.String() != "err\n" || err == nil || !strings.Contains(err.Error(), "5") {
		t.Errorf("exec: stdout %q stderr %q err %v; want from-stdin, err, exit 5", out.String(), errb.String(), err)
	}

	// 2. Exec with a terminal: the process sees a tty of the size we sent.
	resp, err = e.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: ctrID, Cmd: []string{"sh", "-c", "tty; stty size"}, Stdout: true, Tty: true})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = framework.Stream(ctx, resp.Url, framework.StreamOptions{Stdout: &out, TTY: true, Size: &remotecommand.TerminalSize{Width: 77, Height: 33}})
	if err != nil || !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "33 77") {
		t.Errorf("tty exec: %q (%v), want a /dev/pts tty of 33x77", out.String(), err)
	}

	// 3. Attach sees the container's own stdout.
	resp2, err := e.rs.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: ctrID, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	var attached syncBuf
	framework.Stream(actx, resp2.Url, framework.StreamOptions{Stdout: &attached, Stderr: io.Discard})
	cancel()
	if !strings.Contains(attached.String(), "tick") {
		t.Errorf("attach output: %q, want ticks", attached.String())
	}

	// 4. Port-forward to nc listening on 8080 in the pod.
	pf, err := e.rs.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: sbID, Port: []int32{8080}})
	if err != nil {
		t.Fatal(err)
	}
	local, stop, err := framework.PortForward(pf.Url, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	conn, err := net.DialTimeout("tcp", local, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(conn)
	conn.Close()
	if string(b) != "pong\n" {
		t.Errorf("port-forward read %q, want pong", b)
	}
}

// syncBuf is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// TestRuncNetworking: two pods on the bridge reach each other, and a
// hostPort mapping reaches a pod from the host.
func TestRuncNetworking(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()
	server := e.podConfig("server")
	server.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: int32(30000 + time.Now().UnixNano()%5000)}}
	srvSB, _ := e.runPod(t, server, e.containerConfig("srv", "nc", "-ll", "-p", "80", "-e", "echo", "hello-from-server"))
	_, client := e.runPod(t, e.podConfig("client"), e.containerConfig("cli", "sleep", "3600"))
	st, err := e.rs.PodSandboxStatus(ctx, srvSB, false)
	if err != nil {
		t.Fatal(err)
	}
	ip := st.Status.Network.Ip

	// 1. Pod to pod over the bridge.
	if got := e.exec(t, client, "sh", "-c", "nc -w 3 "+ip+" 80 </dev/null"); got != "hello-from-server\n" {
		t.Errorf("pod to pod: %q", got)
	}

	// 2. Host to pod through the hostPort.
	hostPort := server.PortMappings[0].HostPort
	if got := dialRead("127.0.0.1:"+strconv.Itoa(int(hostPort)), 5*time.Second); string(got) != "hello-from-server\n" {
		t.Errorf("hostPort %d: %q", hostPort, got)
	}

	// 3. Pod stats show the traffic on eth0.
	ps, err := e.rs.PodSandboxStats(ctx, srvSB)
	if err != nil {
		t.Fatal(err)
	}
	if n := ps.GetLinux().GetNetwork().GetDefaultInterface(); n.GetName() != "eth0" || n.GetRxBytes().GetValue() == 0 || n.GetTxBytes().GetValue() == 0 {
		t.Errorf("pod network stats: %v", n)
	}
}

// TestRuncStats: CPU time and memory grow under load.
func TestRuncStats(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()
	_, ctrID := e.runPod(t, e.podConfig("stats"), e.containerConfig("app", "sleep", "3600"))
	before, err := e.rs.ContainerStats(ctx, ctrID)
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU for a second and hold 32 MiB in a tmpfs-backed file.
	e.exec(t, ctrID, "sh", "-c", "dd if=/dev/zero of=/dev/shm/blob bs=1M count=32 2>/dev/null; i=0; end=$(($(date +%s)+1)); while [ $(date +%s) -le $end ]; do i=$((i+1)); done")
	after, err := e.rs.ContainerStats(ctx, ctrID)
	if err != nil {
		t.Fatal(err)
	}
	cpu0, cpu1 := before.GetCpu().GetUsageCoreNanoSeconds().GetValue(), after.GetCpu().GetUsageCoreNanoSeconds().GetValue()
	if cpu1 < cpu0+200_000_000 {
		t.Errorf("cpu usage grew from %d to %d ns, want at least +200ms", cpu0, cpu1)
	}
	if after.GetWritableLayer().GetUsedBytes() == nil {
		t.Error("no writable layer usage")
	}
	list, err := e.rs.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{Id: ctrID})
	if err != nil || len(list) != 1 {
		t.Errorf("ListContainerStats: %v %v", list, err)
	}
	_ = fmt.Sprint
}

// dialRead connects to addr, retrying until timeout, and returns what the
// first connection that answers sends before closing.
func dialRead(addr string, timeout time.Duration) []byte {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		got, _ := io.ReadAll(conn)
		conn.Close()
		if len(got) > 0 {
			return got
		}
	}
	return nil
}
