package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// randomDefaultN is TestRandomRequests' number of requests without
// CRIVM_RANDOM_N, the target: they take 30 to 45 s on the
// project's 2-core machines (up to 100 s while other tests load them).
const randomDefaultN = 10000

// randomVMRequests is how many of the requests are RunPodSandbox for the vm
// handler, each with a field validation must refuse before a VM boots.
const randomVMRequests = 20

// TestRandomRequests sends random CRI requests, made by mutating valid
// configs with a seeded PRNG, to the real daemon on the runc handler (plus
// a few vm-handler pods that must be refused before any VM boots). It
// asserts that no request gets codes.Unknown (every failure is classified),
// that the daemon survives (Version answers, its log has no panic) and
// that, once every pod it made is removed, nothing is left on the host.
//
// CRIVM_RANDOM_SEED replays a run (the seed is logged); CRIVM_RANDOM_N
// changes the number of requests.
func TestRandomRequests(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CRIVM_RANDOM_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CRIVM_RANDOM_SEED=%q: %v", s, err)
		}
		seed = v
	}
	n := randomDefaultN
	if s := os.Getenv("CRIVM_RANDOM_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			t.Fatalf("CRIVM_RANDOM_N=%q: want a count", s)
		}
		n = v
	}
	t.Logf("seed %d, %d requests (replay with CRIVM_RANDOM_SEED=%d CRIVM_RANDOM_N=%d)", seed, n, seed, n)

	e := newRuncEnv(t)
	ctx := context.Background()
	// The requests go through the CRI's own gRPC client, not cri-client:
	// cri-client turns an exec's exit code into an error of code Unknown,
	// and a request is reported as it was sent.
	conn, err := grpc.NewClient(e.d.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	g := &randomGen{
		t: t, e: e, r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		rs: runtimeapi.NewRuntimeServiceClient(conn), is: runtimeapi.NewImageServiceClient(conn),
		codes: map[string]map[codes.Code]int{}, took: map[string]time.Duration{},
	}
	g.setUp(ctx)

	// 1. The cases issue 15 reported (each got codes.Unknown from a
	//    helper): InvalidArgument naming the field, and nothing made.
	g.reportedCases(ctx)

	// 2. The requests: every vm request at a random place among them.
	vmAt := map[int]bool{}
	for len(vmAt) < min(randomVMRequests, n) {
		vmAt[g.r.IntN(n)] = true
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		var req randomRequest
		if vmAt[i] {
			req = g.vmPod(i)
		} else {
			req = g.next(i)
		}
		if !g.send(ctx, i, req) {
			break
		}
	}
	took := time.Since(start)

	// 3. The daemon is up and never panicked.
	if _, err := g.rs.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Errorf("Version after the requests: %v", err)
	}
	if m := panicLine.FindString(e.d.Log()); m != "" {
		t.Errorf("the daemon's log has a panic: %q", m)
	}

	// 4. Every pod any request made is removed; the leak check of
	//    newRuncEnv then finds nothing of them.
	g.removeAll(ctx)

	t.Logf("%d requests in %v (%.0f/s); codes by RPC:\n%s", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), g.summary())
	for _, o := range g.offenders {
		t.Errorf("request %d %s got %v: %s\nrequest: %s", o.i, o.rpc, o.code, o.msg, o.req)
	}
	if len(g.offenders) > 0 {
		t.Errorf("%d requests got an unclassified error (seed %d)", len(g.offenders), seed)
	}
}

// reportedCases sends the requests issue 15 found answered with
// codes.Unknown: each must be InvalidArgument naming its field, refused
// before anything is made.
func (g *randomGen) reportedCases(ctx context.Context) {
	pod := func(mutate func(*runtimeapi.PodSandboxConfig)) *runtimeapi.PodSandboxConfig {
		c := g.e.podConfig("rnd-reported")
		mutate(c)
		return c
	}
	ctr := func(mutate func(*runtimeapi.ContainerConfig)) *runtimeapi.ContainerConfig {
		c := g.e.containerConfig("reported", "sleep", "3600")
		mutate(c)
		return c
	}
	create := func(c *runtimeapi.ContainerConfig) func() error {
		return func() error {
			_, err := g.rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: g.anchorSb, Config: c, SandboxConfig: g.anchorPod})
			return err
		}
	}
	run := func(c *runtimeapi.PodSandboxConfig, handler string) func() error {
		return func() error {
			_, err := g.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: c, RuntimeHandler: handler})
			return err
		}
	}
	want := func(name, field string, err error) {
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), field) {
			g.t.Errorf("%s: got %v, want InvalidArgument naming %q", name, err, field)
		}
	}
	// The vm handler sizes the VM in StartSandbox, once the pod's files
	// and network namespace are made (and then undone): only the code is
	// checked.
	want("a VM memory limit of 2^62", "max_memory_mib", run(pod(func(c *runtimeapi.PodSandboxConfig) {
		c.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 62}
	}), "vm")())
	for _, tc := range []struct {
		name, field string
		call        func() error
	}{
		{"a 4 KB hostname", "hostname", run(pod(func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 4096) }), "")},
		{"NUL in a pod name", "metadata.name", run(pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a\x00b" }), "")},
		{"a negative pod memory limit", "linux.resources.memory_limit_in_bytes", run(pod(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1 << 20}
		}), "")},
		{"NUL in an env value", "envs[0]", create(ctr(func(c *runtimeapi.ContainerConfig) {
			c.Envs = []*runtimeapi.KeyValue{{Key: "A", Value: []byte("b\x00c")}}
		}))},
		{"an env key with =", "envs[0]", create(ctr(func(c *runtimeapi.ContainerConfig) {
			c.Envs = []*runtimeapi.KeyValue{{Key: "A=B", Value: []byte("c")}}
		}))},
		{"cpuset garbage-9999", "cpuset_cpus", create(ctr(func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpusetCpus: "garbage-9999"}
		}))},
		{"a 1-byte memory limit", "memory_limit_in_bytes", create(ctr(func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1}
		}))},
		{"a log path too long", "log_path", create(ctr(func(c *runtimeapi.ContainerConfig) {
			c.LogPath = strings.Repeat("l/", 2040) + "x.log"
		}))},
		{"a log path that is a directory", "log_path", create(ctr(func(c *runtimeapi.ContainerConfig) { c.LogPath = "a-dir" }))},
		{"cpu_shares above 262144 in an update", "cpu_shares", func() error {
			_, err := g.rs.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{
				ContainerId: g.anchors[anchorUpdated], Linux: &runtimeapi.LinuxContainerResources{CpuShares: 262145},
			})
			return err
		}},
	} {
		before := g.e.hostState(g.t)
		want(tc.name, tc.field, tc.call())
		g.e.checkNothingCreated(g.t, before)
	}
}

// panicLine is how a Go panic starts in the daemon's output.
var panicLine = regexp.MustCompile(`(?m)^panic: .*$|^goroutine \d+ \[running\]:`)

// randomGen builds and sends the random requests and keeps what they made.
type randomGen struct {
	t      *testing.T
	e      *runcEnv
	r      *rand.Rand
	rs     runtimeapi.RuntimeServiceClient
	is     runtimeapi.ImageServiceClient
	logDir string // the anchor pod's log directory

	// The anchor: a pod that CreateContainer requests aim at, with two
	// running containers, one for UpdateContainerResources and one for
	// ExecSync (an exec in a container an update left with 1 ms of CPU a
	// second takes seconds). No request stops or removes them.
	anchorPod *runtimeapi.PodSandboxConfig
	anchorSb  string
	anchors   [2]string // anchorUpdated, anchorExec

	// pods and ctrs are what successful requests made besides the anchor,
	// oldest first; past maxSpare the oldest are removed.
	pods, ctrs []string

	codes     map[string]map[codes.Code]int
	took      map[string]time.Duration // by RPC
	offenders []randomOffender
}

// maxSpare bounds the pods and containers the random requests keep.
const maxSpare = 3

// The anchor containers.
const (
	anchorUpdated = iota
	anchorExec
)

type randomOffender struct {
	i        int
	rpc      string
	code     codes.Code
	msg, req string
}

// randomRequest is one request: its RPC, the request message (for the
// report) and the call. made is the ID of what a successful call created.
type randomRequest struct {
	rpc  string
	msg  proto.Message
	vm   bool
	call func(ctx context.Context) (made string, err error)
}

func (g *randomGen) setUp(ctx context.Context) {
	t := g.t
	g.anchorPod = g.e.podConfig("rnd-anchor")
	g.logDir = g.anchorPod.LogDirectory
	resp, err := g.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: g.anchorPod})
	if err != nil {
		t.Fatal(err)
	}
	g.anchorSb = resp.PodSandboxId
	g.e.ids = append(g.e.ids, g.anchorSb)
	g.startAnchor(ctx, anchorUpdated)
	g.startAnchor(ctx, anchorExec)
	// What log_path mutations point at: a directory, and a file that
	// a path would need as a directory.
	for _, err := range []error{os.MkdirAll(filepath.Join(g.logDir, "a-dir"), 0o755), os.WriteFile(filepath.Join(g.logDir, "a-file"), nil, 0o644)} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// startAnchor (re)starts anchor container a, which a request may have
// killed (an update to a tiny memory limit, say).
func (g *randomGen) startAnchor(ctx context.Context, a int) {
	if id := g.anchors[a]; id != "" {
		g.rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id})
		g.rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
	}
	cfg := g.e.containerConfig(fmt.Sprintf("anchor-%d", len(g.e.ids)), "sleep", "3600")
	resp, err := g.rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: g.anchorSb, Config: cfg, SandboxConfig: g.anchorPod})
	if err != nil {
		g.t.Fatal(err)
	}
	g.anchors[a] = resp.ContainerId
	g.e.ids = append(g.e.ids, resp.ContainerId)
	if _, err := g.rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		g.t.Fatal(err)
	}
}

// send runs req and records its code; it returns false once the daemon
// is gone.
func (g *randomGen) send(ctx context.Context, i int, req randomRequest) bool {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	start := time.Now()
	made, err := req.call(cctx)
	g.took[req.rpc] += time.Since(start)
	cancel()
	code := status.Code(err)
	if g.codes[req.rpc] == nil {
		g.codes[req.rpc] = map[codes.Code]int{}
	}
	g.codes[req.rpc][code]++
	if code == codes.Unknown {
		g.offenders = append(g.offenders, randomOffender{i: i, rpc: req.rpc, code: code, msg: status.Convert(err).Message(), req: shortText(req.msg)})
	}
	if req.vm && err == nil {
		g.t.Errorf("request %d: a vm pod with an invalid field was accepted (a VM booted): %s", i, shortText(req.msg))
	}
	if made != "" {
		g.e.ids = append(g.e.ids, made)
	}
	if code == codes.Unavailable && syscall.Kill(g.e.d.Pid(), 0) != nil {
		g.t.Errorf("the daemon died at request %d %s: %s\nrequest: %s", i, req.rpc, err, shortText(req.msg))
		return false
	}
	return true
}

// next picks an RPC by weight and builds its request.
func (g *randomGen) next(i int) randomRequest {
	ops := []struct {
		weight int
		build  func(i int) randomRequest
	}{
		{8, g.runPodSandbox},
		{20, g.createContainer},
		{4, g.startContainer},
		{18, g.updateResources},
		{4, g.execSync},
		{4, g.stopContainer},
		{4, g.removeContainer},
		{3, g.stopPod},
		{3, g.removePod},
		{5, g.pullImage},
		{8, g.readOnly},
	}
	total := 0
	for _, op := range ops {
		total += op.weight
	}
	w := g.r.IntN(total)
	for _, op := range ops {
		if w < op.weight {
			return op.build(i)
		}
		w -= op.weight
	}
	panic("unreachable")
}

// keep records a pod or container a request made and removes the oldest
// past maxSpare.
func (g *randomGen) keep(ctx context.Context, list *[]string, id string, remove func(context.Context, string)) {
	*list = append(*list, id)
	for len(*list) > maxSpare {
		old := (*list)[0]
		*list = (*list)[1:]
		remove(ctx, old)
	}
}

func (g *randomGen) dropPod(ctx context.Context, id string) {
	g.cleanupCall("StopPodSandbox", func() error {
		_, err := g.rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
		return err
	})
	g.cleanupCall("RemovePodSandbox", func() error {
		_, err := g.rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
		return err
	})
}

func (g *randomGen) dropCtr(ctx context.Context, id string) {
	g.cleanupCall("RemoveContainer", func() error {
		_, err := g.rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
		return err
	})
}

// cleanupCall runs a valid teardown request, which must succeed.
func (g *randomGen) cleanupCall(rpc string, call func() error) {
	if err := call(); err != nil && status.Code(err) != codes.NotFound {
		g.t.Errorf("cleanup %s: %v", rpc, err)
	}
}

// removeAll stops and removes every pod the daemon has.
func (g *randomGen) removeAll(ctx context.Context) {
	resp, err := g.rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		g.t.Fatal(err)
	}
	for _, p := range resp.Items {
		g.dropPod(ctx, p.Id)
	}
}

func (g *randomGen) summary() string {
	rpcs := make([]string, 0, len(g.codes))
	for rpc := range g.codes {
		rpcs = append(rpcs, rpc)
	}
	sort.Strings(rpcs)
	var b strings.Builder
	for _, rpc := range rpcs {
		var cs []string
		for c, k := range g.codes[rpc] {
			cs = append(cs, fmt.Sprintf("%v=%d", c, k))
		}
		sort.Strings(cs)
		fmt.Fprintf(&b, "  %-26s %8v  %s\n", rpc, g.took[rpc].Round(time.Millisecond), strings.Join(cs, " "))
	}
	return b.String()
}

// --- value pickers ---

func pick[T any](g *randomGen, vs ...T) T { return vs[g.r.IntN(len(vs))] }

func (g *randomGen) chance(p float64) bool { return g.r.Float64() < p }

// oddString is a string a field might get: often fine, often not.
func (g *randomGen) oddString() string {
	return pick(g, "", "ok", "a\x00b", "a/b", "a b", "a\nb", "ünïcode", "x;y=z", "../..", strings.Repeat("s", 254), strings.Repeat("s", 4096), "\x1b[2J")
}

// oddID is an ID a request might name: an existing one or not.
func (g *randomGen) oddID(existing ...string) string {
	if len(existing) > 0 && g.chance(0.6) {
		return existing[g.r.IntN(len(existing))]
	}
	id := pick(g, "", "nonexistent", "../../etc/passwd", "a\x00b", strings.Repeat("f", 64), strings.Repeat("0", 4096), "*")
	if len(existing) > 0 && g.chance(0.2) {
		id = existing[g.r.IntN(len(existing))][:g.r.IntN(12)+1] // a prefix
	}
	return id
}

// victimID is oddID for a request that stops or removes: never one that
// names (as a prefix, which the daemon resolves) the anchor pod or
// containers.
func (g *randomGen) victimID(existing ...string) string {
	id := g.oddID(existing...)
	for _, a := range append(g.anchors[:], g.anchorSb) {
		if id != "" && strings.HasPrefix(a, id) {
			return "nonexistent"
		}
	}
	return id
}

// --- pods ---

// podMutations change one field of a pod config each, to a value that
// may or may not be valid.
func (g *randomGen) podMutations() []func(*runtimeapi.PodSandboxConfig) {
	return []func(*runtimeapi.PodSandboxConfig){
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = g.oddString() },
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = g.oddString() },
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = g.oddString() },
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Attempt = pick(g, uint32(0), 1, 1<<32-1) },
		func(c *runtimeapi.PodSandboxConfig) {
			c.Hostname = pick(g, "", "h", strings.Repeat("h", 4096), "Upper", "a\x00b", "web-0.web.default.svc", "-x", "a_b")
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.LogDirectory = pick(g, "", "relative/logs", c.LogDirectory+"\x00", c.LogDirectory+"/"+strings.Repeat("d", 300),
				c.LogDirectory+strings.Repeat("/d", 2100), c.LogDirectory+"/", filepath.Join(g.logDir, "a-file"))
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{
				Servers:  pick(g, []string{"10.96.0.10"}, []string{"not-an-ip"}, []string{"fe80::1%eth0"}, slices.Repeat([]string{"10.0.0.1"}, 17), []string{"1.2.3.4\x00"}),
				Searches: pick(g, nil, []string{"a b"}, []string{""}, slices.Repeat([]string{"s"}, 33), []string{"svc.cluster.local"}),
				Options:  pick(g, nil, []string{"ndots:5"}, []string{"a\nb"}),
			}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = append(c.PortMappings, &runtimeapi.PortMapping{
				Protocol:      pick(g, runtimeapi.Protocol_TCP, runtimeapi.Protocol_UDP, runtimeapi.Protocol_SCTP, runtimeapi.Protocol(99)),
				ContainerPort: pick(g, int32(0), -1, 80, 70000),
				HostPort:      pick(g, int32(0), -1, 70000, 40000+g.r.Int32N(1000)),
				HostIp:        pick(g, "", "garbage", "127.0.0.1", "::1", "1.2.3.4\x00"),
			})
		},
		func(c *runtimeapi.PodSandboxConfig) { c.Labels = g.oddMap() },
		func(c *runtimeapi.PodSandboxConfig) { c.Annotations = g.oddMap() },
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.CgroupParent = pick(g, "", "../evil", "/a//b", "relative/x", "/crivm\x00", "x.slice", "/"+strings.Repeat("c", 5000))
		},
		func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = g.oddSysctls() },
		func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.Privileged = true },
		func(c *runtimeapi.PodSandboxConfig) {
			ns := c.Linux.SecurityContext.NamespaceOptions
			modes := []runtimeapi.NamespaceMode{runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_CONTAINER, runtimeapi.NamespaceMode_NODE, runtimeapi.NamespaceMode_TARGET, 99}
			switch g.r.IntN(4) {
			case 0:
				ns.Network = pick(g, modes...)
			case 1:
				ns.Pid = pick(g, modes...)
			case 2:
				ns.Ipc = pick(g, modes...)
			default:
				ns.TargetId = g.oddString()
			}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			sc := c.Linux.SecurityContext
			switch g.r.IntN(4) {
			case 0:
				sc.RunAsUser = &runtimeapi.Int64Value{Value: g.oddUID()}
			case 1:
				sc.RunAsGroup = &runtimeapi.Int64Value{Value: g.oddUID()}
			case 2:
				sc.SupplementalGroups = []int64{g.oddUID()}
			default:
				sc.ReadonlyRootfs = true
			}
		},
		func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.Seccomp = g.oddProfile() },
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.SeccompProfilePath = pick(g, "runtime/default", "unconfined", "localhost/x.json", "garbage", "localhost/")
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.SelinuxOptions = &runtimeapi.SELinuxOption{Type: pick(g, "t", "a\x00b"), Level: pick(g, "", "s0:c1,c2")}
		},
		func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.Apparmor = g.oddProfile() },
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{
				Mode: pick(g, runtimeapi.NamespaceMode_NODE, runtimeapi.NamespaceMode_POD, 99),
				Uids: pick(g, nil, []*runtimeapi.IDMapping{{HostId: 0, ContainerId: 0, Length: 1}}, []*runtimeapi.IDMapping{{HostId: 1 << 31, ContainerId: 0, Length: 1 << 31}}),
				Gids: pick(g, nil, []*runtimeapi.IDMapping{{HostId: 100000, ContainerId: 0, Length: 0}}),
			}
		},
		func(c *runtimeapi.PodSandboxConfig) { c.Linux.Resources = g.oddResources() },
		func(c *runtimeapi.PodSandboxConfig) { c.Linux.Overhead = g.oddResources() },
	}
}

// badPodMutations each make a pod config invalid: vm-handler requests
// take one of them and must be refused before a VM boots.
func (g *randomGen) badPodMutations() []func(*runtimeapi.PodSandboxConfig) {
	return []func(*runtimeapi.PodSandboxConfig){
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a\x00b" },
		func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 4096) },
		func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"net..ipv4": "1"} },
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1\x00"}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1 << 20}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuShares: 1 << 20}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuQuota: 500, CpuPeriod: 100000}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpusetCpus: "garbage-9999"}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Overhead = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -5}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 70000}}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"not-an-ip"}}
		},
		func(c *runtimeapi.PodSandboxConfig) { c.Labels = map[string]string{"a\x00b": "v"} },
		func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "relative/logs" },
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: -1}
		},
	}
}

func (g *randomGen) oddMap() map[string]string {
	m := map[string]string{}
	for range g.r.IntN(3) + 1 {
		m[pick(g, "app", "a\x00b", "", "k"+strconv.Itoa(g.r.IntN(9)), strings.Repeat("k", 300))] =
			pick(g, "", "v", "v\x00", "line\nline", strings.Repeat("v", 300<<10))
	}
	return m
}

func (g *randomGen) oddSysctls() map[string]string {
	return map[string]string{
		pick(g, "net.ipv4.ip_forward", "net.ipv4.nonexistent", "kernel.shm_rmid_forced", "vm.swappiness", "net..x",
			"net.ipv4.conf.a/../../x", "a\x00b", "", "net.ipv4.conf.all.forwarding", "net/ipv4/ip_forward"): pick(g, "1", "0", "abc", "1\x00", "", "-5", strings.Repeat("9", 100)),
	}
}

func (g *randomGen) oddUID() int64 {
	return pick(g, int64(0), 1000, 65534, -1, 1<<31-1, 1<<31, 1<<32, -1<<40)
}

func (g *randomGen) oddProfile() *runtimeapi.SecurityProfile {
	return &runtimeapi.SecurityProfile{
		ProfileType:  pick(g, runtimeapi.SecurityProfile_RuntimeDefault, runtimeapi.SecurityProfile_Unconfined, runtimeapi.SecurityProfile_Localhost, 99),
		LocalhostRef: pick(g, "", "relative", "/nonexistent/profile.json", "/etc/hostname", "a\x00b"),
	}
}

// oddResources are container (or pod) resources with one or two fields
// set to edge or invalid values.
func (g *randomGen) oddResources() *runtimeapi.LinuxContainerResources {
	r := &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 256 << 20}
	for range g.r.IntN(2) + 1 {
		switch g.r.IntN(11) {
		case 0:
			r.CpuShares = pick(g, int64(0), 1, 2, 262144, 262145, -5, 1<<40)
		case 1:
			r.CpuQuota = pick(g, int64(0), -1, -5, 999, 1000, 50000, 1<<44, 1<<60)
		case 2:
			r.CpuPeriod = pick(g, int64(0), -1, 999, 1000, 100000, 1000000, 1000001)
		case 3:
			r.MemoryLimitInBytes = pick(g, int64(0), 1, 4096, 1<<20, 6<<20-1, 6<<20, 64<<20, -1, 1<<62)
		case 4:
			r.MemorySwapLimitInBytes = pick(g, int64(0), -1, -5, 1<<20, 512<<20)
		case 5:
			r.OomScoreAdj = pick(g, int64(0), -1000, 1000, -1001, 2000, -998)
		case 6:
			r.CpusetCpus = pick(g, "", "0", "0-1", "1,0", "garbage-9999", "0-9999", "5", "1-0", "0,", "-1", "0-1:1/2", " 0", "0\x00")
		case 7:
			r.CpusetMems = pick(g, "", "0", "3", "x", "0-0", "0\n")
		case 8:
			r.HugepageLimits = []*runtimeapi.HugepageLimit{{
				PageSize: pick(g, "2MB", "1GB", "", "garbage", "../../x", "2MB\x00", "64KB"),
				Limit:    pick(g, uint64(0), 2<<20, 1<<63),
			}}
		case 9:
			r.Unified = map[string]string{pick(g, "memory.high", "cpu.weight", "../x", "", "a\x00b", "cgroup.procs"): pick(g, "max", "100", "garbage", "1\x00")}
		default:
			r.MemoryLimitInBytes, r.MemorySwapLimitInBytes = 128<<20, pick(g, int64(64<<20), 128<<20, 256<<20)
		}
	}
	return r
}

func (g *randomGen) runPodSandbox(i int) randomRequest {
	cfg := g.e.podConfig(fmt.Sprintf("rnd-%d", i))
	mutate(g, cfg, g.podMutations(), g.badPodMutations())
	handler := ""
	if g.chance(0.1) {
		handler = pick(g, "runc", "nonexistent", "RUNC", "a\x00b")
	}
	req := &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler}
	return randomRequest{rpc: "RunPodSandbox", msg: req, call: func(ctx context.Context) (string, error) {
		resp, err := g.rs.RunPodSandbox(ctx, req)
		if err != nil {
			return "", err
		}
		g.keep(ctx, &g.pods, resp.PodSandboxId, g.dropPod)
		return resp.PodSandboxId, nil
	}}
}

// freeShare is the share of RunPodSandbox and CreateContainer requests
// that get only random mutations, which may leave them valid: a valid one
// runs the whole pipeline (CNI, conmon, runc), at hundreds of times the
// cost of a refusal. The others get one of the bad mutations too.
const freeShare = 0.1

// mutate applies one to three random mutations to c and, but for a
// freeShare of requests, one bad one.
func mutate[T any](g *randomGen, c T, muts, bad []func(T)) {
	for range 1 + g.r.IntN(3) {
		muts[g.r.IntN(len(muts))](c)
	}
	if !g.chance(freeShare) {
		bad[g.r.IntN(len(bad))](c)
	}
}

func (g *randomGen) vmPod(i int) randomRequest {
	cfg := g.e.podConfig(fmt.Sprintf("rnd-vm-%d", i))
	muts := g.badPodMutations()
	muts[g.r.IntN(len(muts))](cfg)
	req := &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: "vm"}
	return randomRequest{rpc: "RunPodSandbox(vm)", msg: req, vm: true, call: func(ctx context.Context) (string, error) {
		resp, err := g.rs.RunPodSandbox(ctx, req)
		if err != nil {
			return "", err
		}
		g.dropPod(ctx, resp.PodSandboxId)
		return resp.PodSandboxId, nil
	}}
}

// --- containers ---

func (g *randomGen) containerMutations() []func(*runtimeapi.ContainerConfig) {
	return []func(*runtimeapi.ContainerConfig){
		func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = g.oddString() },
		func(c *runtimeapi.ContainerConfig) {
			c.Image = &runtimeapi.ImageSpec{Image: pick(g, "", "nonexistent:latest", "sha256:"+strings.Repeat("0", 64), "UPPER", "a\x00b", g.e.busybox)}
		},
		func(c *runtimeapi.ContainerConfig) { c.Command = g.oddArgv() },
		func(c *runtimeapi.ContainerConfig) { c.Args = g.oddArgv() },
		func(c *runtimeapi.ContainerConfig) {
			c.WorkingDir = pick(g, "", "/", "relative", "/tmp/x\x00", "/bin/busybox", "/nonexistent/deep", "/"+strings.Repeat("w", 5000))
		},
		func(c *runtimeapi.ContainerConfig) {
			c.Envs = append(c.Envs, &runtimeapi.KeyValue{
				Key:   pick(g, "", "A=B", "A\x00", "OK", "=", strings.Repeat("K", 300)),
				Value: []byte(pick(g, "", "v\x00", "ok", "a=b", strings.Repeat("v", 100<<10))),
			})
		},
		func(c *runtimeapi.ContainerConfig) {
			src := filepath.Join(g.e.d.Dir, "mnt-src")
			c.Mounts = append(c.Mounts, &runtimeapi.Mount{
				ContainerPath:     pick(g, "", "relative", "/mnt/x", "/mnt\x00", "/", "/proc/x", "/bin/busybox", "/etc"),
				HostPath:          pick(g, "", "relative", src, src+"\x00", "/dev/null", filepath.Join(g.logDir, "a-file")),
				Readonly:          g.chance(0.5),
				Propagation:       pick(g, runtimeapi.MountPropagation_PROPAGATION_PRIVATE, runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, 99),
				RecursiveReadOnly: g.chance(0.2),
			})
		},
		func(c *runtimeapi.ContainerConfig) {
			c.Devices = append(c.Devices, &runtimeapi.Device{
				ContainerPath: pick(g, "", "relative", "/dev/xnull", "/dev/x\x00"),
				HostPath:      pick(g, "/dev/null", "/dev/nonexistent", "relative", "/etc/hostname", "/dev/null\x00"),
				Permissions:   pick(g, "", "rwm", "r", "xyz", "rw\x00"),
			})
		},
		func(c *runtimeapi.ContainerConfig) { c.Labels = g.oddMap() },
		func(c *runtimeapi.ContainerConfig) { c.Annotations = g.oddMap() },
		func(c *runtimeapi.ContainerConfig) {
			c.LogPath = pick(g, "", "x.log", "sub/dir/x.log", strings.Repeat("l", 300)+".log", "a-dir", "a-file/x.log",
				"x\x00.log", "../x.log", strings.Repeat("d/", 2100)+"x.log")
		},
		func(c *runtimeapi.ContainerConfig) {
			c.Stdin, c.StdinOnce, c.Tty = g.chance(0.5), g.chance(0.5), g.chance(0.5)
		},
		func(c *runtimeapi.ContainerConfig) { c.Linux.Resources = g.oddResources() },
		func(c *runtimeapi.ContainerConfig) {
			sc := c.Linux.SecurityContext
			switch g.r.IntN(15) {
			case 0:
				sc.Capabilities = &runtimeapi.Capability{
					AddCapabilities:  []string{pick(g, "CAP_GARBAGE", "NET_ADMIN", "ALL", "", "a\x00b")},
					DropCapabilities: []string{pick(g, "ALL", "CHOWN", "nope")},
				}
			case 1:
				sc.Privileged = true
			case 2:
				sc.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: g.oddID(g.anchors[:]...)}
			case 3:
				sc.RunAsUser = &runtimeapi.Int64Value{Value: g.oddUID()}
			case 4:
				sc.RunAsUsername = pick(g, "nobody", "nonexistent", "a:b", "a\x00b", "root")
			case 5:
				sc.RunAsGroup = &runtimeapi.Int64Value{Value: g.oddUID()}
			case 6:
				sc.MaskedPaths = []string{pick(g, "relative", "/proc/x\x00", "/proc/kcore", "")}
			case 7:
				sc.ReadonlyPaths = []string{pick(g, "relative", "/proc/x\x00", "/proc/sys", "")}
			case 8:
				sc.Seccomp = g.oddProfile()
			case 9:
				sc.SupplementalGroups = []int64{g.oddUID()}
			case 10:
				sc.SeccompProfilePath = pick(g, "runtime/default", "unconfined", "localhost/x.json", "localhost//etc/hostname", "garbage", "localhost/")
			case 11:
				sc.ApparmorProfile = pick(g, "runtime/default", "unconfined", "localhost/x", "garbage", "localhost/")
			case 12:
				sc.SelinuxOptions = &runtimeapi.SELinuxOption{User: "u", Role: "r", Type: pick(g, "t", "a\x00b", ""), Level: pick(g, "", "s0:c1,c2", "garbage:::")}
			case 13:
				sc.SupplementalGroupsPolicy = pick(g, runtimeapi.SupplementalGroupsPolicy_Merge, runtimeapi.SupplementalGroupsPolicy_Strict, 99)
			default:
				sc.ReadonlyRootfs, sc.NoNewPrivs = g.chance(0.5), g.chance(0.5)
			}
		},
		func(c *runtimeapi.ContainerConfig) {
			// An image volume, of the pulled image or of none.
			c.Mounts = append(c.Mounts, &runtimeapi.Mount{
				ContainerPath: "/vol", Readonly: g.chance(0.8),
				Image:        &runtimeapi.ImageSpec{Image: pick(g, g.e.busybox, "", "nonexistent:latest", "sha256:"+strings.Repeat("1", 64))},
				ImageSubPath: pick(g, "", "bin", "no/such/dir", "../..", "bin/busybox"),
			})
		},
		func(c *runtimeapi.ContainerConfig) {
			if len(c.Mounts) == 0 {
				c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/mnt/opts", HostPath: filepath.Join(g.e.d.Dir, "mnt-src")}}
			}
			c.Mounts[0].MountOptions = []string{pick(g, "ro", "nosuid", "garbage", "", "rbind", "a\x00b")}
		},
		func(c *runtimeapi.ContainerConfig) {
			c.CDIDevices = []*runtimeapi.CDIDevice{{Name: pick(g, "vendor.com/gpu=0", "garbage", "", "a\x00b")}}
		},
	}
}

func (g *randomGen) oddArgv() []string {
	return pick(g, nil, []string{}, []string{""}, []string{"sleep", "3600"}, []string{"/no/such/binary"}, []string{"a\x00b"},
		[]string{"sleep", "3600\x00"}, []string{"sh", "-c", "exit 3"}, []string{"echo", strings.Repeat("a", 200<<10)}, []string{"/etc"})
}

// badContainerMutations each make a container config invalid.
func (g *randomGen) badContainerMutations() []func(*runtimeapi.ContainerConfig) {
	resources := func(r *runtimeapi.LinuxContainerResources) func(*runtimeapi.ContainerConfig) {
		return func(c *runtimeapi.ContainerConfig) { c.Linux.Resources = r }
	}
	security := func(mutate func(*runtimeapi.LinuxContainerSecurityContext)) func(*runtimeapi.ContainerConfig) {
		return func(c *runtimeapi.ContainerConfig) { mutate(c.Linux.SecurityContext) }
	}
	return []func(*runtimeapi.ContainerConfig){
		func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "a\x00b" },
		func(c *runtimeapi.ContainerConfig) { c.Envs = append(c.Envs, &runtimeapi.KeyValue{Key: "A=B"}) },
		func(c *runtimeapi.ContainerConfig) {
			c.Envs = append(c.Envs, &runtimeapi.KeyValue{Key: "A", Value: []byte("v\x00")})
		},
		func(c *runtimeapi.ContainerConfig) { c.Command = []string{"sleep", "3600\x00"} },
		func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "relative" },
		func(c *runtimeapi.ContainerConfig) { c.LogPath = "a-dir" },
		func(c *runtimeapi.ContainerConfig) { c.LogPath = strings.Repeat("l", 300) + ".log" },
		func(c *runtimeapi.ContainerConfig) { c.LogPath = "../x.log" },
		func(c *runtimeapi.ContainerConfig) {
			c.Mounts = append(c.Mounts, &runtimeapi.Mount{ContainerPath: "rel", HostPath: "/dev/null"})
		},
		func(c *runtimeapi.ContainerConfig) {
			c.Devices = append(c.Devices, &runtimeapi.Device{HostPath: "/dev/null", Permissions: "xyz"})
		},
		resources(&runtimeapi.LinuxContainerResources{CpuShares: 1}),
		resources(&runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1}),
		resources(&runtimeapi.LinuxContainerResources{CpusetCpus: "garbage-9999"}),
		resources(&runtimeapi.LinuxContainerResources{CpuQuota: 999}),
		resources(&runtimeapi.LinuxContainerResources{OomScoreAdj: 2000}),
		security(func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.RunAsUser = &runtimeapi.Int64Value{Value: 1 << 31}
		}),
		security(func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.MaskedPaths = []string{"relative"} }),
		security(func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"CAP_GARBAGE"}}
		}),
	}
}

func (g *randomGen) createContainer(i int) randomRequest {
	cfg := g.e.containerConfig(fmt.Sprintf("c%d", i), "sleep", "3600")
	mutate(g, cfg, g.containerMutations(), g.badContainerMutations())
	sbID := g.anchorSb
	if g.chance(0.1) {
		sbID = g.oddID(g.pods...)
	}
	req := &runtimeapi.CreateContainerRequest{PodSandboxId: sbID, Config: cfg, SandboxConfig: g.anchorPod}
	return randomRequest{rpc: "CreateContainer", msg: req, call: func(ctx context.Context) (string, error) {
		resp, err := g.rs.CreateContainer(ctx, req)
		if err != nil {
			return "", err
		}
		g.keep(ctx, &g.ctrs, resp.ContainerId, g.dropCtr)
		return resp.ContainerId, nil
	}}
}

// makesNothing is a request whose call creates nothing.
func makesNothing(rpc string, msg proto.Message, call func(ctx context.Context) error) randomRequest {
	return randomRequest{rpc: rpc, msg: msg, call: func(ctx context.Context) (string, error) { return "", call(ctx) }}
}

func (g *randomGen) startContainer(int) randomRequest {
	req := &runtimeapi.StartContainerRequest{ContainerId: g.oddID(g.ctrs...)}
	return makesNothing("StartContainer", req, func(ctx context.Context) error { _, err := g.rs.StartContainer(ctx, req); return err })
}

func (g *randomGen) updateResources(int) randomRequest {
	id := g.anchors[anchorUpdated]
	if g.chance(0.2) {
		id = g.oddID(g.ctrs...)
	}
	req := &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: g.oddResources()}
	return makesNothing("UpdateContainerResources", req, func(ctx context.Context) error {
		_, err := g.rs.UpdateContainerResources(ctx, req)
		g.checkAnchor(ctx, id, err)
		return err
	})
}

// checkAnchor restarts an anchor container a request found gone.
func (g *randomGen) checkAnchor(ctx context.Context, id string, err error) {
	if status.Code(err) != codes.FailedPrecondition {
		return
	}
	for a, anchor := range g.anchors {
		if id == anchor {
			g.startAnchor(ctx, a)
		}
	}
}

func (g *randomGen) execSync(int) randomRequest {
	id := g.anchors[anchorExec]
	if g.chance(0.2) {
		id = g.oddID(g.ctrs...)
	}
	cmd := pick(g, []string{"true"}, []string{"sh", "-c", "exit 3"}, nil, []string{""}, []string{"/no/such/binary"}, []string{"a\x00b"},
		[]string{"true", "x\x00"}, []string{"echo", strings.Repeat("a", 200<<10)}, []string{"/etc"}, []string{"", "true"})
	if g.chance(0.02) {
		cmd = []string{"sleep", "2"} // past a timeout of 1 s
	}
	req := &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: pick(g, int64(0), 1, -1)}
	return makesNothing("ExecSync", req, func(ctx context.Context) error {
		_, err := g.rs.ExecSync(ctx, req)
		g.checkAnchor(ctx, id, err)
		return err
	})
}

func (g *randomGen) stopContainer(int) randomRequest {
	req := &runtimeapi.StopContainerRequest{ContainerId: g.victimID(g.ctrs...), Timeout: pick(g, int64(0), -1, 1)}
	return makesNothing("StopContainer", req, func(ctx context.Context) error { _, err := g.rs.StopContainer(ctx, req); return err })
}

func (g *randomGen) removeContainer(int) randomRequest {
	req := &runtimeapi.RemoveContainerRequest{ContainerId: g.victimID(g.ctrs...)}
	return makesNothing("RemoveContainer", req, func(ctx context.Context) error {
		_, err := g.rs.RemoveContainer(ctx, req)
		g.ctrs = without(g.ctrs, req.ContainerId, err)
		return err
	})
}

func (g *randomGen) stopPod(int) randomRequest {
	req := &runtimeapi.StopPodSandboxRequest{PodSandboxId: g.victimID(g.pods...)}
	return makesNothing("StopPodSandbox", req, func(ctx context.Context) error { _, err := g.rs.StopPodSandbox(ctx, req); return err })
}

func (g *randomGen) removePod(int) randomRequest {
	req := &runtimeapi.RemovePodSandboxRequest{PodSandboxId: g.victimID(g.pods...)}
	return makesNothing("RemovePodSandbox", req, func(ctx context.Context) error {
		_, err := g.rs.RemovePodSandbox(ctx, req)
		g.pods = without(g.pods, req.PodSandboxId, err)
		return err
	})
}

// without is ids less id once its removal succeeded (err nil).
func without(ids []string, id string, err error) []string {
	if err != nil {
		return ids
	}
	return slices.DeleteFunc(ids, func(x string) bool { return x == id })
}

// pullImage pulls malformed references, and references the test registry
// does not have; none reaches a registry off this machine.
func (g *randomGen) pullImage(int) randomRequest {
	ref := pick(g, "", "UPPER/case", "a b", "busybox@sha256:bad", "::", "a\x00b", strings.Repeat("r", 5000), "sha256:"+strings.Repeat("a", 64),
		g.e.reg.Ref("nonexistent", "latest"), g.e.reg.Ref("busybox", "no-such-tag"), g.e.reg.Ref("busybox", "latest"), g.e.reg.Host+"/x@sha256:"+strings.Repeat("0", 64),
		g.e.reg.Host+"/"+strings.Repeat("p/", 200)+"x", "-leading-dash")
	req := &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}
	return makesNothing("PullImage", req, func(ctx context.Context) error { _, err := g.is.PullImage(ctx, req); return err })
}

// readOnly sends one of the RPCs that change nothing (RemoveImage of
// images no request uses; Exec, Attach and PortForward only hand out a
// URL), with odd IDs and filters.
func (g *randomGen) readOnly(int) randomRequest {
	ctrID, sbID := g.oddID(append(g.anchors[:], g.ctrs...)...), g.oddID(append([]string{g.anchorSb}, g.pods...)...)
	switch g.r.IntN(11) {
	case 7:
		// Never an image the test uses.
		img := pick(g, "", "a\x00b", "nonexistent", "sha256:"+strings.Repeat("0", 64), g.e.reg.Ref("nonexistent", "latest"))
		req := &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: img}}
		return makesNothing("RemoveImage", req, func(ctx context.Context) error { _, err := g.is.RemoveImage(ctx, req); return err })
	case 8:
		req := &runtimeapi.ExecRequest{ContainerId: ctrID, Cmd: g.oddArgv(), Tty: g.chance(0.5), Stdin: g.chance(0.5), Stdout: g.chance(0.5), Stderr: g.chance(0.5)}
		return makesNothing("Exec", req, func(ctx context.Context) error { _, err := g.rs.Exec(ctx, req); return err })
	case 9:
		req := &runtimeapi.AttachRequest{ContainerId: ctrID, Tty: g.chance(0.5), Stdin: g.chance(0.5), Stdout: g.chance(0.5)}
		return makesNothing("Attach", req, func(ctx context.Context) error { _, err := g.rs.Attach(ctx, req); return err })
	case 10:
		req := &runtimeapi.PortForwardRequest{PodSandboxId: sbID, Port: []int32{pick(g, int32(80), 0, -1, 70000)}}
		return makesNothing("PortForward", req, func(ctx context.Context) error { _, err := g.rs.PortForward(ctx, req); return err })
	case 0:
		req := &runtimeapi.ContainerStatusRequest{ContainerId: ctrID, Verbose: g.chance(0.5)}
		return makesNothing("ContainerStatus", req, func(ctx context.Context) error { _, err := g.rs.ContainerStatus(ctx, req); return err })
	case 1:
		req := &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sbID, Verbose: g.chance(0.5)}
		return makesNothing("PodSandboxStatus", req, func(ctx context.Context) error { _, err := g.rs.PodSandboxStatus(ctx, req); return err })
	case 2:
		req := &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			Id: pick(g, "", ctrID), PodSandboxId: pick(g, "", sbID),
			State:         pick(g, nil, &runtimeapi.ContainerStateValue{State: 99}, &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}),
			LabelSelector: pick(g, nil, g.oddMap()),
		}}
		return makesNothing("ListContainers", req, func(ctx context.Context) error { _, err := g.rs.ListContainers(ctx, req); return err })
	case 3:
		req := &runtimeapi.ContainerStatsRequest{ContainerId: ctrID}
		return makesNothing("ContainerStats", req, func(ctx context.Context) error { _, err := g.rs.ContainerStats(ctx, req); return err })
	case 4:
		req := &runtimeapi.ReopenContainerLogRequest{ContainerId: ctrID}
		return makesNothing("ReopenContainerLog", req, func(ctx context.Context) error { _, err := g.rs.ReopenContainerLog(ctx, req); return err })
	case 5:
		req := &runtimeapi.PodSandboxStatsRequest{PodSandboxId: sbID}
		return makesNothing("PodSandboxStats", req, func(ctx context.Context) error { _, err := g.rs.PodSandboxStats(ctx, req); return err })
	default:
		img := pick(g, "", "a\x00b", "nonexistent", g.e.busybox, "sha256:"+strings.Repeat("0", 64))
		req := &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: img}, Verbose: g.chance(0.5)}
		return makesNothing("ImageStatus", req, func(ctx context.Context) error { _, err := g.is.ImageStatus(ctx, req); return err })
	}
}

// shortText is m in the text format with every string (and bytes)
// longer than 96 bytes cut, for the report.
func shortText(m proto.Message) string {
	m = proto.Clone(m)
	cutStrings(m.ProtoReflect())
	return prototext.MarshalOptions{}.Format(m)
}

func cutStrings(m protoreflect.Message) {
	cut := func(s string) string {
		if len(s) <= 96 {
			return s
		}
		return fmt.Sprintf("%s…(%d bytes)", s[:64], len(s))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			mv := m.Mutable(fd).Map()
			var keys []protoreflect.MapKey
			mv.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			for _, k := range keys {
				v := mv.Get(k)
				if fd.MapValue().Kind() == protoreflect.StringKind {
					v = protoreflect.ValueOfString(cut(v.String()))
				}
				mv.Clear(k)
				if fd.MapKey().Kind() == protoreflect.StringKind {
					k = protoreflect.ValueOfString(cut(k.String())).MapKey()
				}
				mv.Set(k, v)
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for i := 0; i < l.Len(); i++ {
				switch fd.Kind() {
				case protoreflect.StringKind:
					l.Set(i, protoreflect.ValueOfString(cut(l.Get(i).String())))
				case protoreflect.MessageKind:
					cutStrings(l.Get(i).Message())
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(cut(v.String())))
		case fd.Kind() == protoreflect.BytesKind: // an env value
			m.Set(fd, protoreflect.ValueOfBytes([]byte(cut(string(v.Bytes())))))
		case fd.Kind() == protoreflect.MessageKind:
			cutStrings(m.Mutable(fd).Message())
		}
		return true
	})
}
