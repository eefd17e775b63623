package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/storage"
	"go.podman.io/storage/pkg/reexec"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/image"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/mountfs"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/test/fixtures"
	"github.com/crivm/crivm/test/testutil"
	"github.com/crivm/crivm/trust"
)

// TestMain lets containers/storage re-execute the test binary to unpack
// layers (the busybox fixture), as crivm's main does.
func TestMain(m *testing.M) {
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

// Handler names of the fake environment: both are the same fakeHandler,
// registered once as an oci handler (RunPodSandbox prepares a pause rootfs
// for it) and once as a vm handler (no pause rootfs).
const (
	fakeOCI = "fake-oci"
	fakeVM  = "fake-vm"
)

// testImage is the name the busybox fixture is stored under.
const testImage = "localhost/crivm-test/busybox:latest"

// fakeCall is one call a fakeHandler received. ID is the sandbox's or the
// container's; Req is StartSandbox's *handlers.SandboxRequest or
// CreateContainer's *handlers.ContainerRequest, nil for the others.
type fakeCall struct {
	Method string
	ID     string
	Req    any
}

func (c fakeCall) String() string { return c.Method + " " + c.ID }

// fakeHandler is a handlers.Handler that runs nothing. It records every
// call in order (Features and WatchExits excepted: they ask, not act),
// keeps the state of the containers it created, reports it as a runtime
// would, and fails the methods a test names.
type fakeHandler struct {
	mu    sync.Mutex
	calls []fakeCall                          // guarded by mu
	fail  map[string]error                    // guarded by mu: method → what it returns
	ctrs  map[string]*handlers.ContainerState // guarded by mu: by container ID
	// onCall (guarded by mu) runs at the start of every recorded method,
	// without mu held: a test looks at the world there, or panics to end
	// the RPC the way a crash would, leaving what the steps before made.
	onCall func(ctx context.Context, c fakeCall)
	// features and process are set by the test between RPCs, never
	// while one runs.
	features handlers.Features
	process  *store.Process // StartSandbox reports it
}

var _ handlers.Handler = (*fakeHandler)(nil)

// pausingHandler is the fake as the oci handler: its pods run from the
// pause image, as runc's with an infra container do.
type pausingHandler struct{ *fakeHandler }

func (pausingHandler) NeedsPause(*runtimeapi.PodSandboxConfig) bool { return true }

// newFakeHandler reports this test process as every sandbox's process, so
// that a sandbox stays Ready until stopped.
func newFakeHandler(t *testing.T) *fakeHandler {
	t.Helper()
	p := &store.Process{Pid: os.Getpid(), BootID: proc.BootID()}
	var err error
	if p.StartTime, err = proc.StartTime(p.Pid); err != nil {
		t.Fatal(err)
	}
	return &fakeHandler{fail: map[string]error{}, ctrs: map[string]*handlers.ContainerState{}, process: p}
}

// failWith makes method return err from now on (nil: succeed again).
func (h *fakeHandler) failWith(method string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		delete(h.fail, method)
		return
	}
	h.fail[method] = err
}

func (h *fakeHandler) setOnCall(f func(ctx context.Context, c fakeCall)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onCall = f
}

// journal is every call so far, as "Method ID".
func (h *fakeHandler) journal() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(h.calls))
	for i, c := range h.calls {
		out[i] = c.String()
	}
	return out
}

// reset forgets the calls so far.
func (h *fakeHandler) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = nil
}

// lastReq is the request of the last call of method.
func (h *fakeHandler) lastReq(method string) any {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.calls) - 1; i >= 0; i-- {
		if h.calls[i].Method == method {
			return h.calls[i].Req
		}
	}
	return nil
}

// call records a call, runs onCall and returns the failure set for method.
func (h *fakeHandler) call(ctx context.Context, method, id string, req any) error {
	c := fakeCall{Method: method, ID: id, Req: req}
	h.mu.Lock()
	h.calls = append(h.calls, c)
	on := h.onCall
	h.mu.Unlock()
	if on != nil {
		on(ctx, c)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fail[method]
}

// state is a copy of container id's state; the caller holds mu.
func (h *fakeHandler) state(id string) *handlers.ContainerState {
	st, ok := h.ctrs[id]
	if !ok {
		return nil
	}
	cp := *st
	return &cp
}

func (h *fakeHandler) StartSandbox(ctx context.Context, req *handlers.SandboxRequest) (*handlers.SandboxStarted, error) {
	if err := h.call(ctx, "StartSandbox", req.Sandbox.ID, req); err != nil {
		return nil, err
	}
	p := *h.process
	return &handlers.SandboxStarted{Process: &p, Extra: map[string]string{"fake": "started"}}, nil
}

func (h *fakeHandler) StopSandbox(ctx context.Context, sb *store.Sandbox) error {
	return h.call(ctx, "StopSandbox", sb.ID, nil)
}

func (h *fakeHandler) RemoveSandbox(ctx context.Context, sb *store.Sandbox) error {
	return h.call(ctx, "RemoveSandbox", sb.ID, nil)
}

func (h *fakeHandler) CreateContainer(ctx context.Context, sb *store.Sandbox, req *handlers.ContainerRequest) (*handlers.ContainerCreated, error) {
	if err := h.call(ctx, "CreateContainer", req.Container.ID, req); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ctrs[req.Container.ID] = &handlers.ContainerState{State: store.ContainerCreated}
	return &handlers.ContainerCreated{Extra: map[string]string{"fake": "created"}}, nil
}

func (h *fakeHandler) StartContainer(ctx context.Context, sb *store.Sandbox, c *store.Container) (*handlers.ContainerState, error) {
	if err := h.call(ctx, "StartContainer", c.ID, nil); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.ctrs[c.ID]
	if !ok {
		return nil, errdefs.NotFound("fake container %s", c.ID)
	}
	st.State, st.StartedAt = store.ContainerRunning, time.Now()
	return h.state(c.ID), nil
}

// StopContainer exits a container it knows, and reports one it does not
// (a daemon restarted since) as exited.
func (h *fakeHandler) StopContainer(ctx context.Context, c *store.Container, opts handlers.StopOptions) (*handlers.ContainerState, error) {
	if err := h.call(ctx, "StopContainer", c.ID, nil); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.ctrs[c.ID]
	if !ok {
		return &handlers.ContainerState{State: store.ContainerExited, FinishedAt: time.Now(), ExitCode: 137, Reason: "Error"}, nil
	}
	if st.State != store.ContainerExited {
		st.State, st.FinishedAt, st.ExitCode, st.Reason = store.ContainerExited, time.Now(), 0, "Completed"
	}
	return h.state(c.ID), nil
}

func (h *fakeHandler) RemoveContainer(ctx context.Context, c *store.Container) error {
	if err := h.call(ctx, "RemoveContainer", c.ID, nil); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.ctrs, c.ID)
	return nil
}

func (h *fakeHandler) ContainerState(ctx context.Context, c *store.Container) (*handlers.ContainerState, error) {
	if err := h.call(ctx, "ContainerState", c.ID, nil); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.state(c.ID); st != nil {
		return st, nil
	}
	return nil, errdefs.NotFound("fake container %s", c.ID)
}

func (h *fakeHandler) ExecSync(ctx context.Context, c *store.Container, req handlers.ExecRequest) (*handlers.ExecResult, error) {
	return nil, errors.Join(h.call(ctx, "ExecSync", c.ID, nil), errdefs.Unimplemented("fake exec"))
}

func (h *fakeHandler) Exec(ctx context.Context, c *store.Container, req handlers.StreamRequest) error {
	return errors.Join(h.call(ctx, "Exec", c.ID, nil), errdefs.Unimplemented("fake exec"))
}

func (h *fakeHandler) Attach(ctx context.Context, c *store.Container, req handlers.StreamRequest) error {
	return errors.Join(h.call(ctx, "Attach", c.ID, nil), errdefs.Unimplemented("fake attach"))
}

func (h *fakeHandler) PortForward(ctx context.Context, sb *store.Sandbox, port int32, stream io.ReadWriteCloser) error {
	return errors.Join(h.call(ctx, "PortForward", sb.ID, nil), errdefs.Unimplemented("fake port-forward"))
}

func (h *fakeHandler) UpdateResources(ctx context.Context, c *store.Container, res *specs.LinuxResources) error {
	return h.call(ctx, "UpdateResources", c.ID, nil)
}

func (h *fakeHandler) Stats(ctx context.Context, c *store.Container) (*handlers.ContainerStats, error) {
	if err := h.call(ctx, "Stats", c.ID, nil); err != nil {
		return nil, err
	}
	return &handlers.ContainerStats{Timestamp: time.Now()}, nil
}

func (h *fakeHandler) SandboxStats(ctx context.Context, sb *store.Sandbox) (*handlers.ContainerStats, error) {
	return nil, h.call(ctx, "SandboxStats", sb.ID, nil)
}

func (h *fakeHandler) ReopenLog(ctx context.Context, c *store.Container) error {
	return h.call(ctx, "ReopenLog", c.ID, nil)
}

func (h *fakeHandler) Features() handlers.Features { return h.features }

func (h *fakeHandler) WatchExits(ctx context.Context, exited func(id string)) error { return nil }

func (h *fakeHandler) Restore(ctx context.Context, sb *store.Sandbox, ctrs []*store.Container) error {
	return h.call(ctx, "Restore", sb.ID, nil)
}

// cniMode is what the fake environment's CNI network does.
type cniMode int

const (
	// cniNone: no network config, so a pod network fails Check, before
	// any plugin runs.
	cniNone cniMode = iota
	// cniOK: the fake plugin's ADD gives the pod 10.99.0.2.
	cniOK
	// cniAddFails: the fake plugin's ADD fails; DEL succeeds.
	cniAddFails
)

// fakeEnvOptions shape a fakeEnv.
type fakeEnvOptions struct {
	// busybox stores the busybox fixture as testImage and makes it the
	// pause image: CreateContainer and fakeOCI pods need it.
	busybox bool
	cni     cniMode
}

// fakeEnv is a RuntimeService over real small parts (a store, vfs image
// storage, pod files, network namespaces, a netns.Manager with a fake CNI
// plugin) in a private tmpfs, with fakeHandler as both handlers, served
// over gRPC behind the instrumenting interceptors.
type fakeEnv struct {
	t        *testing.T
	dir      string
	podsDir  string
	netnsDir string
	// cniLog gets one line per fake CNI plugin run: "COMMAND netns=PATH
	// pod_dir=yes|no".
	cniLog string
	cfg    *configs.Config
	deps   Deps
	images *image.Service
	logs   *syncBuffer

	// Replaced by restart.
	h      *fakeHandler
	st     *store.Store
	s      *RuntimeService
	client runtimeapi.RuntimeServiceClient
	stop   func()
}

// newFakeEnv needs root: pod files mount a tmpfs, pod networks are
// network namespaces, and the image storage unpacks layers as root.
func newFakeEnv(t *testing.T, o fakeEnvOptions) *fakeEnv {
	t.Helper()
	testutil.RequiresRoot(t)
	e := &fakeEnv{t: t, dir: t.TempDir(), logs: &syncBuffer{}}
	// A private tmpfs of its own, so no mount propagates to the host's
	// table and whatever a failed test leaves is unmounted with it.
	if err := unix.Mount("crivm-test", e.dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mountfs.UnmountAll(e.dir); err != nil {
			t.Errorf("unmounting the test root: %v", err)
		}
	})
	if err := unix.Mount("", e.dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", e.logs)
		}
	})
	e.podsDir, e.netnsDir = filepath.Join(e.dir, "pods"), filepath.Join(e.dir, "netns")
	e.cniLog = filepath.Join(e.dir, "cni.log")

	e.cfg = configs.Defaults()
	e.cfg.Runtime.DefaultRuntime = fakeVM
	e.cfg.Runtime.RuntimeUntrustedWorkload = fakeVM
	e.cfg.Runtime.DefaultWorkloadTrust = configs.Trusted
	e.cfg.Runtime.Runtimes = map[string]*configs.RuntimeHandler{
		fakeOCI: {RuntimeType: configs.RuntimeTypeOCI},
		fakeVM:  {RuntimeType: configs.RuntimeTypeVM},
	}
	e.cfg.Image.PauseImage = testImage

	var err error
	e.images, err = image.New(context.Background(), image.Options{
		Root: filepath.Join(e.dir, "storage"), Runroot: filepath.Join(e.dir, "storage-run"), Driver: "vfs",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.images.Close() })
	if o.busybox {
		importBusybox(t, e.images)
	}

	e.deps = Deps{
		Config:   func() *configs.Config { return e.cfg },
		Trust:    trust.New(e.cfg, nil),
		Images:   e.images,
		Network:  e.fakeCNI(o.cni),
		NetNSDir: e.netnsDir,
		PodsDir:  e.podsDir,
		Version:  "0.0.0-test",
		Logger:   slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	e.st = e.openStore()
	e.start(newFakeHandler(t))
	t.Cleanup(func() {
		e.stop()
		e.st.Close()
	})
	return e
}

func (e *fakeEnv) openStore() *store.Store {
	e.t.Helper()
	st, err := store.Open(filepath.Join(e.dir, "state"))
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// start builds the service over e.st with h as both handlers and serves
// it over gRPC.
func (e *fakeEnv) start(h *fakeHandler) {
	e.t.Helper()
	e.h = h
	e.deps.Store = e.st
	e.deps.Handlers = handlers.Registry{
		fakeOCI: {Name: fakeOCI, Type: configs.RuntimeTypeOCI, Handler: pausingHandler{h}},
		fakeVM:  {Name: fakeVM, Type: configs.RuntimeTypeVM, Handler: h},
	}
	e.s = NewRuntimeService(e.deps)
	lis := bufconn.Listen(1 << 20)
	gs := New(e.deps, e.s)
	served := make(chan struct{})
	go func() {
		defer close(served)
		gs.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///fake",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.client = runtimeapi.NewRuntimeServiceClient(conn)
	e.stop = func() {
		conn.Close()
		gs.Stop()
		<-served
	}
}

// restart is a daemon restart after a crash: the service and its handler
// are new, the store is reopened from disk; images, pod files and network
// namespaces stay as they were.
func (e *fakeEnv) restart() {
	e.t.Helper()
	e.stop()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.st = e.openStore()
	e.start(newFakeHandler(e.t))
}

// ctx carries the daemon's logger, for calls that bypass gRPC.
func (e *fakeEnv) ctx() context.Context {
	return log.WithLogger(context.Background(), e.deps.Logger)
}

// fakeCNI writes a network config naming the fake plugin (none for
// cniNone) and returns a manager for it.
func (e *fakeEnv) fakeCNI(mode cniMode) *netns.Manager {
	e.t.Helper()
	confDir, binDir := filepath.Join(e.dir, "cni-conf"), filepath.Join(e.dir, "cni-bin")
	for _, d := range []string{confDir, binDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	add := `echo '{"cniVersion":"1.0.0","ips":[{"address":"10.99.0.2/24"}]}'`
	if mode == cniAddFails {
		add = `echo '{"cniVersion":"1.0.0","code":11,"msg":"fake ADD failure"}'; exit 1`
	}
	script := fmt.Sprintf(`#!/bin/sh
cat >/dev/null
d=no; [ -d %q/"$CNI_CONTAINERID" ] && d=yes
echo "$CNI_COMMAND netns=$CNI_NETNS pod_dir=$d" >>%q
case "$CNI_COMMAND" in
ADD) %s ;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}' ;;
esac
exit 0
`, e.podsDir, e.cniLog, add)
	if err := os.WriteFile(filepath.Join(binDir, "fake-cni"), []byte(script), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if mode != cniNone {
		conf := `{"cniVersion":"1.0.0","name":"fake","plugins":[{"type":"fake-cni"}]}`
		if err := os.WriteFile(filepath.Join(confDir, "10-fake.conflist"), []byte(conf), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	return netns.NewManager(netns.Options{ConfDir: confDir, PluginDirs: []string{binDir}, CacheDir: filepath.Join(e.dir, "cni-cache")})
}

// cniRuns are the lines of the fake plugin's log.
func (e *fakeEnv) cniRuns() []string {
	e.t.Helper()
	b, err := os.ReadFile(e.cniLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// importBusybox copies the busybox fixture (built in Go from the host's
// static busybox, cached) into s as testImage.
func importBusybox(t *testing.T, s *image.Service) {
	t.Helper()
	if _, err := os.Stat(fixtures.BusyboxPath); err != nil {
		t.Skipf("busybox-static not installed (%s missing): run make deps", fixtures.BusyboxPath)
	}
	img, err := fixtures.Busybox(fixtures.DefaultCacheDir())
	if err != nil {
		t.Fatal(err)
	}
	src, err := layout.ParseReference(img.Layout + ":" + img.Tag)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := istorage.Transport.ParseStoreReference(s.Store(), testImage)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := signature.NewPolicyContext(&signature.Policy{Default: []signature.PolicyRequirement{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer policy.Destroy()
	if _, err := copy.Image(context.Background(), policy, dst, src, nil); err != nil {
		t.Fatalf("storing the busybox fixture: %v", err)
	}
}

// podConfig is a pod on the host's network (no CNI runs) unless net says
// otherwise.
func podConfig(name string, net podNet) *runtimeapi.PodSandboxConfig {
	ns := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}
	switch net {
	case netPod:
		ns.Network = runtimeapi.NamespaceMode_POD
	case netUserns:
		ns.Network = runtimeapi.NamespaceMode_POD
		m := []*runtimeapi.IDMapping{{HostId: 100000, ContainerId: 0, Length: 65536}}
		ns.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}
	}
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name + "-uid"},
		Linux:    &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns}},
	}
}

// podNet is a pod's network in podConfig.
type podNet int

const (
	netHost   podNet = iota
	netPod           // its own network namespace, set up by CNI
	netUserns        // its own user namespace: the sandbox makes the network namespace
)

func ctrConfig(name string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: testImage, UserSpecifiedImage: testImage},
		Command:  []string{"sleep", "60"},
	}
}

// runPod runs a host-network pod on handler and returns its ID.
func (e *fakeEnv) runPod(name, handler string) string {
	e.t.Helper()
	resp, err := e.client.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: podConfig(name, netHost), RuntimeHandler: handler})
	if err != nil {
		e.t.Fatalf("running pod %s: %v", name, err)
	}
	return resp.GetPodSandboxId()
}

// createContainer creates container name in pod sb, started if start.
func (e *fakeEnv) createContainer(sb, name string, start bool) string {
	e.t.Helper()
	ctx := context.Background()
	resp, err := e.client.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: sb, Config: ctrConfig(name),
	})
	if err != nil {
		e.t.Fatalf("creating container %s: %v", name, err)
	}
	if start {
		if _, err := e.client.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.GetContainerId()}); err != nil {
			e.t.Fatalf("starting container %s: %v", name, err)
		}
	}
	return resp.GetContainerId()
}

// leftovers lists what the store, the storage and the disk still hold:
// sandbox and container records and intents, storage containers (rootfs),
// pod dirs, network namespaces and mounts under the pods and netns dirs.
// A clean environment has none.
func (e *fakeEnv) leftovers() []string {
	e.t.Helper()
	var out []string
	for _, sb := range e.st.Sandboxes.List(nil) {
		out = append(out, "sandbox record "+sb.ID)
	}
	for _, sb := range e.st.PendingSandboxes.List(nil) {
		out = append(out, "sandbox intent "+sb.ID)
	}
	for _, c := range e.st.Containers.List(nil) {
		out = append(out, "container record "+c.ID)
	}
	for _, c := range e.st.PendingContainers.List(nil) {
		out = append(out, "container intent "+c.ID)
	}
	ctrs, err := e.images.Store().Containers()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range ctrs {
		out = append(out, "rootfs "+c.ID)
	}
	for _, d := range []string{e.podsDir, e.netnsDir} {
		ents, err := os.ReadDir(d)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			e.t.Fatal(err)
		}
		for _, ent := range ents {
			out = append(out, "file "+filepath.Join(d, ent.Name()))
		}
		mounts, err := mountfs.MountsBelow(d)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, m := range mounts {
			if m != d { // netns.New makes the dir itself a shared mount
				out = append(out, "mount "+m)
			}
		}
	}
	return out
}

// storageHas reports whether image storage holds container id (a rootfs).
func (e *fakeEnv) storageHas(id string) bool {
	e.t.Helper()
	_, err := e.images.Store().Container(id)
	if errors.Is(err, storage.ErrContainerUnknown) {
		return false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return true
}

func pathExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// subscribe opens a GetContainerEvents stream and returns its receiver,
// once the server has subscribed it (which happens after the client's call
// returns). An event that does not come within 20 s fails the test.
func (e *fakeEnv) subscribe() func() *runtimeapi.ContainerEventResponse {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	e.t.Cleanup(cancel)
	e.s.events.mu.Lock()
	before := len(e.s.events.subs)
	e.s.events.mu.Unlock()
	stream, err := e.client.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	for {
		e.s.events.mu.Lock()
		n := len(e.s.events.subs)
		e.s.events.mu.Unlock()
		if n > before {
			break
		}
		if ctx.Err() != nil {
			e.t.Fatal("the event stream was never subscribed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return func() *runtimeapi.ContainerEventResponse {
		e.t.Helper()
		ev, err := stream.Recv()
		if err != nil {
			e.t.Fatalf("receiving an event: %v", err)
		}
		return ev
	}
}

// world is what RunPodSandbox's steps have made for sandbox id, looked at
// from any goroutine.
type world struct {
	Intent, PodDir, NetNS, PauseRootfs bool
	CNIRuns                            int
}

func (e *fakeEnv) look(id string) world {
	_, ierr := e.st.PendingSandboxes.Get(id)
	_, serr := e.images.Store().Container(id)
	b, _ := os.ReadFile(e.cniLog)
	return world{
		Intent:      ierr == nil,
		PodDir:      pathExists(filepath.Join(e.podsDir, id)),
		NetNS:       pathExists(netns.PathIn(e.netnsDir, "crivm-"+id[:32])),
		PauseRootfs: serr == nil,
		CNIRuns:     strings.Count(string(b), "\n"),
	}
}
