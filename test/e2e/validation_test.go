package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/test/framework"
)

// hostState is what a refused request must leave untouched: the daemon's
// pod dirs, its sandboxes and containers, the steps it logged, and the
// host's network namespaces and this test's bridge.
type hostState struct {
	podDirs    []string
	sandboxes  int
	containers int
	steps      int
	net        framework.NetState
}

func (e *runcEnv) hostState(t *testing.T) hostState {
	t.Helper()
	ctx := context.Background()
	pods, err := e.rs.ListPodSandbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctrs, err := e.rs.ListContainers(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	net, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	return hostState{
		podDirs:   dirEntries(t, filepath.Join(e.d.Runroot, "pods")),
		sandboxes: len(pods), containers: len(ctrs),
		// Every pipeline step is logged (at debug) when it ends, as text
		// or JSON.
		steps: strings.Count(e.d.Log(), "msg=step ") + strings.Count(e.d.Log(), `"msg":"step"`),
		net:   net,
	}
}

// checkNothingCreated compares the host with before a refused request.
func (e *runcEnv) checkNothingCreated(t *testing.T, before hostState) {
	t.Helper()
	after := e.hostState(t)
	if fmt.Sprint(after.podDirs) != fmt.Sprint(before.podDirs) {
		t.Errorf("pod dirs under %s/pods: %v, were %v", e.d.Runroot, after.podDirs, before.podDirs)
	}
	if after.sandboxes != before.sandboxes || after.containers != before.containers {
		t.Errorf("sandboxes %d, containers %d; were %d and %d", after.sandboxes, after.containers, before.sandboxes, before.containers)
	}
	if after.steps != before.steps {
		t.Errorf("the daemon ran %d pipeline steps for a refused request", after.steps-before.steps)
	}
	// The host is shared with other tests: new namespace files, and what
	// names this test's bridge.
	var mine []string
	for _, d := range before.net.Diff(after.net) {
		if strings.HasPrefix(d, "netns file ") {
			mine = append(mine, d)
		}
	}
	mine = append(mine, framework.Matching(before.net.Diff(after.net), e.br.Name)...)
	if len(mine) > 0 {
		t.Errorf("network state created: %v", mine)
	}
}

// wantInvalid wants codes.InvalidArgument with a message naming field.
func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), field) {
		t.Errorf("got %v, want InvalidArgument naming %q", err, field)
	}
}

// TestValidation: hostile paths and strings in a pod spec are refused with
// InvalidArgument before anything reaches the host; a pod with a long name
// and no hostname gets the kubelet's derived hostname.
func TestValidation(t *testing.T) {
	ctx := context.Background()
	e := newRuncEnv(t)

	// 1. A DNS search domain holding a newline would add a resolv.conf line.
	pod := e.podConfig("dns-inject")
	pod.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"e2e.local\nnameserver 6.6.6.6"}}
	before := e.hostState(t)
	_, err := e.rs.RunPodSandbox(ctx, pod, "")
	wantInvalid(t, err, "dns_config.searches[0]")
	e.checkNothingCreated(t, before)

	// 2. A 64-byte hostname is no RFC 1123 label.
	pod = e.podConfig("long-hostname")
	pod.Hostname = strings.Repeat("h", 64)
	before = e.hostState(t)
	_, err = e.rs.RunPodSandbox(ctx, pod, "")
	wantInvalid(t, err, "hostname")
	e.checkNothingCreated(t, before)

	// 3. A cgroup parent climbing out of the hierarchy.
	evil := fmt.Sprintf("crivm-evil-%d", time.Now().UnixNano())
	pod = e.podConfig("cgroup-escape")
	pod.Linux.CgroupParent = "../../../../" + evil
	before = e.hostState(t)
	_, err = e.rs.RunPodSandbox(ctx, pod, "")
	wantInvalid(t, err, "linux.cgroup_parent")
	e.checkNothingCreated(t, before)
	for _, pattern := range []string{"/sys/fs/cgroup/" + evil + "*", "/sys/fs/cgroup/*/" + evil + "*", "/sys/fs/cgroup/*/*/" + evil + "*"} {
		if dirs, _ := filepath.Glob(pattern); len(dirs) > 0 {
			t.Errorf("cgroups created: %v", dirs)
		}
	}

	// 4. A container log path escaping the pod's log directory. The log
	//    directory is three levels below the test dir, so the escape would
	//    land in it.
	pod = e.podConfig("log-escape")
	pod.LogDirectory = filepath.Join(e.d.Dir, "logs", "e2e_log-escape_uid", "pod")
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	ctr := e.containerConfig("app", "sleep", "3600")
	ctr.LogPath = "../../../x.log"
	escaped := filepath.Join(pod.LogDirectory, ctr.LogPath)
	if filepath.Dir(escaped) != e.d.Dir {
		t.Fatalf("the escape would land in %s, not in the test dir", escaped)
	}
	before = e.hostState(t)
	_, err = e.rs.CreateContainer(ctx, sbID, ctr, pod)
	wantInvalid(t, err, "log_path")
	e.checkNothingCreated(t, before)
	if _, err := os.Lstat(escaped); !os.IsNotExist(err) {
		t.Errorf("%s exists (%v): the log escaped its directory", escaped, err)
	}

	// 5. A pod named with 70 bytes and no hostname runs; its hostname is
	//    the name cut to 63 bytes, as the kubelet derives it.
	name := strings.Repeat("long-pod-name-", 5)
	pod = e.podConfig(name)
	pod.Hostname = ""
	_, ctrID := e.runPod(t, pod, e.containerConfig("app", "sleep", "3600"))
	want := name[:63]
	if got := e.exec(t, ctrID, "cat", "/etc/hostname"); got != want+"\n" {
		t.Errorf("/etc/hostname: %q, want %q", got, want+"\n")
	}
	if got := e.exec(t, ctrID, "cat", "/etc/hosts"); !strings.Contains(got, "\t"+want+"\n") {
		t.Errorf("/etc/hosts lacks %q: %q", want, got)
	}
	// The kernel's hostname (the UTS namespace) and $HOSTNAME too, not the
	// node's.
	if got := e.exec(t, ctrID, "sh", "-c", "hostname; echo $HOSTNAME"); got != want+"\n"+want+"\n" {
		t.Errorf("hostname and $HOSTNAME: %q, want %q twice", got, want)
	}
}
