package vm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/hashicorp/yamux"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/vmm"
)

// fakeAgent is a guest agent without a guest. It is an agentproxy.Dialer:
// each Dial serves the agent API (ttrpc over yamux, as the serial
// transport carries it) on one end of a net.Pipe and returns a session on
// the other, from which agentproxy.Connect makes the client the handler
// uses. Its state (the containers' output and exits) outlives
// connections, as the real agent's does. A test scripts it (write,
// endOutput, exit), breaks the current connection (breakConn), and wedges
// calls or dials (wedge).
//
// It answers only what the handler calls over a connection; every other
// method is Unimplemented, as it is for an agent that does not know it.
type fakeAgent struct {
	unimplementedAgent

	// mu guards everything below.
	mu    sync.Mutex
	ctrs  map[string]*fakeContainer
	conns []*fakeConn // every connection, in dial order: conns[n-1] is connection n
	calls []fakeCall
	reads []fakeRead
	w     *fakeWedge // nil: nothing is wedged
	// closed: close ran; no more dials.
	closed bool
}

// fakeConn is one connection: the guest end of its pipe with its server,
// and the host's session (whose end is the handler's client's).
type fakeConn struct {
	guest net.Conn
	srv   *ttrpc.Server
	host  *yamux.Session
}

// fakeCall is a call the agent answered (or is answering): its method and
// the connection (1-based) it came on.
type fakeCall struct {
	conn   int
	method string
}

// fakeRead is a ReadOutput request.
type fakeRead struct {
	conn   int
	id     string
	stream api.Stream
	offset uint64
}

type fakeContainer struct {
	out    [2]*fakeStream // by api.Stream
	exited chan struct{}  // closed by exit
	code   int32
	// startError: the init's exec failed (WaitProcess start_error).
	startError string
}

// fakeStream keeps every byte a stream had since offset 0: the agent
// drops acknowledged output, but an acknowledgement can be lost with the
// connection, and then the same offset must give the same bytes; keeping
// everything lets a resume at a wrong offset show as duplicated output.
type fakeStream struct {
	data    []byte
	closed  bool
	changed chan struct{} // closed and replaced on every change
}

// fakeWedge blocks the calls of one method ("dial" for dials; "": every
// call and every dial) until released or until the call's context ends.
type fakeWedge struct {
	method  string
	release chan struct{}
	entered chan string // a value per blocked call, dropped when full
}

// newFakeAgent makes an agent; its owner closes it.
func newFakeAgent() *fakeAgent {
	return &fakeAgent{ctrs: map[string]*fakeContainer{}}
}

var _ agentproxy.Dialer = (*fakeAgent)(nil)

// Dial serves a new connection, as a guest whose agent takes the
// handshake would.
func (f *fakeAgent) Dial(ctx context.Context) (agentproxy.Session, error) {
	if err := f.gate(ctx, "dial"); err != nil {
		return nil, fmt.Errorf("syncing with the fake agent: %w", err)
	}
	host, guest := net.Pipe()
	gs, err := yamux.Server(guest, fakeYamuxConfig())
	if err != nil {
		return nil, fmt.Errorf("starting yamux server: %w", err)
	}
	hs, err := yamux.Client(host, fakeYamuxConfig())
	if err != nil {
		gs.Close()
		return nil, fmt.Errorf("starting yamux client: %w", err)
	}
	f.mu.Lock()
	n := len(f.conns) + 1
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(f.intercept(n)))
	if err == nil && f.closed {
		err = errdefs.Newf(errdefs.ErrUnavailable, "the fake agent is closed")
	}
	if err != nil {
		f.mu.Unlock()
		hs.Close()
		gs.Close()
		return nil, fmt.Errorf("creating ttrpc server: %w", err)
	}
	f.conns = append(f.conns, &fakeConn{guest: guest, srv: srv, host: hs})
	f.mu.Unlock()
	api.RegisterAgentService(srv, f)
	go srv.Serve(context.WithoutCancel(ctx), gs)
	return fakeSession{hs}, nil
}

func fakeYamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	return c
}

// fakeSession is a yamux session as agentproxy.Session.
type fakeSession struct{ s *yamux.Session }

func (s fakeSession) Open(context.Context) (net.Conn, error) { return s.s.OpenStream() }
func (s fakeSession) Done() <-chan struct{}                  { return s.s.CloseChan() }
func (s fakeSession) Close() error                           { return s.s.Close() }

// intercept records each call of connection n, holds it at the wedge, and
// turns errors into status errors as the real agent's interceptor does.
func (f *fakeAgent) intercept(n int) ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, um ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
		method := path.Base(info.FullMethod)
		f.mu.Lock()
		f.calls = append(f.calls, fakeCall{conn: n, method: method})
		f.mu.Unlock()
		if err := f.gate(ctx, method); err != nil {
			return nil, errdefs.ToGRPC(err)
		}
		r, err := m(context.WithValue(ctx, fakeConnKey{}, n), um)
		return r, errdefs.ToGRPC(err)
	}
}

type fakeConnKey struct{}

func (f *fakeAgent) gate(ctx context.Context, method string) error {
	f.mu.Lock()
	w := f.w
	f.mu.Unlock()
	if w == nil || (w.method != "" && w.method != method) {
		return nil
	}
	select {
	case w.entered <- method:
	default:
	}
	select {
	case <-w.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wedge blocks every later call of method ("dial": dials; "": every call
// and dial) until release. entered receives the method of each call that
// blocked.
func (f *fakeAgent) wedge(method string) (entered <-chan string, release func()) {
	w := &fakeWedge{method: method, release: make(chan struct{}), entered: make(chan string, 64)}
	f.mu.Lock()
	f.w = w
	f.mu.Unlock()
	var once sync.Once
	return w.entered, func() {
		once.Do(func() {
			f.mu.Lock()
			if f.w == w {
				f.w = nil
			}
			f.mu.Unlock()
			close(w.release)
		})
	}
}

// breakConn breaks the newest connection as a transport fault would: the
// guest's end of the pipe goes, and the host's session sees it end. It
// returns once the host's session has ended.
func (f *fakeAgent) breakConn(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	c := f.conns[len(f.conns)-1]
	f.mu.Unlock()
	c.guest.Close()
	c.srv.Close()
	select {
	case <-c.host.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the host's session did not end after the pipe broke")
	}
}

// close breaks every connection and refuses later dials.
func (f *fakeAgent) close() {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.mu.Unlock()
	for _, c := range conns {
		c.guest.Close()
		c.srv.Close()
		c.host.Close()
	}
}

// dials is how many connections were made.
func (f *fakeAgent) dials() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

// servedOn returns the connections that carried method's calls, in order.
func (f *fakeAgent) servedOn(method string) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var on []int
	for _, c := range f.calls {
		if c.method == method {
			on = append(on, c.conn)
		}
	}
	return on
}

// firstReads returns the offset of the first ReadOutput request for each
// stream of container id on connection n, and whether there was one.
func (f *fakeAgent) firstReads(n int, id string) (off [2]uint64, seen [2]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reads {
		if r.conn == n && r.id == id && !seen[r.stream] {
			off[r.stream], seen[r.stream] = r.offset, true
		}
	}
	return off, seen
}

// addContainer makes a running container id, with no output yet.
func (f *fakeAgent) addContainer(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := &fakeContainer{exited: make(chan struct{})}
	for i := range c.out {
		c.out[i] = &fakeStream{changed: make(chan struct{})}
	}
	f.ctrs[id] = c
}

// changedLocked wakes the readers of s; f.mu is held.
func (s *fakeStream) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// write appends data to container id's stream.
func (f *fakeAgent) write(id string, st api.Stream, data string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.ctrs[id].out[st]
	s.data = append(s.data, data...)
	s.changedLocked()
}

// endOutput ends both streams of container id (its process exited and
// its pipes drained).
func (f *fakeAgent) endOutput(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.ctrs[id].out {
		s.closed = true
		s.changedLocked()
	}
}

// exit makes container id exit with code.
func (f *fakeAgent) exit(id string, code int32) { f.exitStart(id, code, "") }

// exitStart makes container id exit with code, its exec failed for
// startError when not empty.
func (f *fakeAgent) exitStart(id string, code int32, startError string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.ctrs[id]
	c.code, c.startError = code, startError
	close(c.exited)
}

func (f *fakeAgent) container(id string) (*fakeContainer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	if !ok {
		return nil, errdefs.NotFound("container %s not found", id)
	}
	return c, nil
}

// fakeMemoryUsage is what StatsContainer reports.
const fakeMemoryUsage = 12345

func (f *fakeAgent) Health(context.Context, *api.HealthRequest) (*api.HealthResponse, error) {
	return &api.HealthResponse{Status: api.HealthResponse_SERVING, KernelRelease: "6.1.0-fake"}, nil
}

func (f *fakeAgent) StartContainer(_ context.Context, req *api.StartContainerRequest) (*api.StartContainerResponse, error) {
	if _, err := f.container(req.ContainerId); err != nil {
		return nil, err
	}
	return &api.StartContainerResponse{Pid: 2}, nil
}

func (f *fakeAgent) StatsContainer(_ context.Context, req *api.StatsContainerRequest) (*api.StatsContainerResponse, error) {
	if _, err := f.container(req.ContainerId); err != nil {
		return nil, err
	}
	return &api.StatsContainerResponse{TimestampUnixNano: time.Now().UnixNano(), MemoryUsageBytes: fakeMemoryUsage}, nil
}

// ExecProcess echoes its args and the connection it came on.
func (f *fakeAgent) ExecProcess(ctx context.Context, req *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	if _, err := f.container(req.ContainerId); err != nil {
		return nil, err
	}
	return &api.ExecProcessResponse{Stdout: fmt.Appendf(nil, "%s on %d", strings.Join(req.Args, " "), ctx.Value(fakeConnKey{}))}, nil
}

func (f *fakeAgent) WaitProcess(ctx context.Context, req *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	c, err := f.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	select {
	case <-c.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &api.WaitProcessResponse{ExitCode: c.code, ExitedAtUnixNano: time.Now().UnixNano(), StartError: c.startError}, nil
}

// ReadOutput follows the agent's offset protocol (agent.proto), without
// dropping acknowledged bytes (see fakeStream).
func (f *fakeAgent) ReadOutput(ctx context.Context, req *api.ReadOutputRequest) (*api.ReadOutputResponse, error) {
	c, err := f.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if req.Stream != api.Stream_STDOUT && req.Stream != api.Stream_STDERR {
		return nil, errdefs.InvalidArgument("reading output: unknown stream %v", req.Stream)
	}
	f.mu.Lock()
	n, _ := ctx.Value(fakeConnKey{}).(int)
	f.reads = append(f.reads, fakeRead{conn: n, id: req.ContainerId, stream: req.Stream, offset: req.Offset})
	f.mu.Unlock()
	var timeout <-chan time.Time
	if req.WaitMs > 0 {
		t := time.NewTimer(time.Duration(req.WaitMs) * time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	s := c.out[req.Stream]
	for {
		f.mu.Lock()
		end := uint64(len(s.data))
		if req.Offset > end {
			f.mu.Unlock()
			return nil, errdefs.InvalidArgument("reading output: offset %d is past the end of the stream (%d)", req.Offset, end)
		}
		r := &api.ReadOutputResponse{Offset: req.Offset, Data: bytes.Clone(s.data[req.Offset:min(end, req.Offset+64<<10)])}
		r.Eof = s.closed && req.Offset+uint64(len(r.Data)) == end
		changed := s.changed
		f.mu.Unlock()
		if len(r.Data) > 0 || r.Eof {
			return r, nil
		}
		select {
		case <-changed:
		case <-timeout:
			return r, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// GetOOMEvent reports no OOM kill: it blocks like an agent whose guest
// kills nothing.
func (f *fakeAgent) GetOOMEvent(ctx context.Context, _ *api.GetOOMEventRequest) (*api.GetOOMEventResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// unimplementedAgent answers every method Unimplemented.
type unimplementedAgent struct{}

var _ api.AgentService = unimplementedAgent{}

func unimplemented(method string) error { return errdefs.Unimplemented("fake agent: %s", method) }

func (unimplementedAgent) Health(context.Context, *api.HealthRequest) (*api.HealthResponse, error) {
	return nil, unimplemented("Health")
}

func (unimplementedAgent) Resume(context.Context, *api.ResumeRequest) (*api.ResumeResponse, error) {
	return nil, unimplemented("Resume")
}

func (unimplementedAgent) CreateSandbox(context.Context, *api.CreateSandboxRequest) (*api.CreateSandboxResponse, error) {
	return nil, unimplemented("CreateSandbox")
}

func (unimplementedAgent) DestroySandbox(context.Context, *api.DestroySandboxRequest) (*api.DestroySandboxResponse, error) {
	return nil, unimplemented("DestroySandbox")
}

func (unimplementedAgent) CreateContainer(context.Context, *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	return nil, unimplemented("CreateContainer")
}

func (unimplementedAgent) StartContainer(context.Context, *api.StartContainerRequest) (*api.StartContainerResponse, error) {
	return nil, unimplemented("StartContainer")
}

func (unimplementedAgent) DeleteContainer(context.Context, *api.DeleteContainerRequest) (*api.DeleteContainerResponse, error) {
	return nil, unimplemented("DeleteContainer")
}

func (unimplementedAgent) UpdateContainer(context.Context, *api.UpdateContainerRequest) (*api.UpdateContainerResponse, error) {
	return nil, unimplemented("UpdateContainer")
}

func (unimplementedAgent) StatsContainer(context.Context, *api.StatsContainerRequest) (*api.StatsContainerResponse, error) {
	return nil, unimplemented("StatsContainer")
}

func (unimplementedAgent) StartProcess(context.Context, *api.StartProcessRequest) (*api.StartProcessResponse, error) {
	return nil, unimplemented("StartProcess")
}

func (unimplementedAgent) DeleteProcess(context.Context, *api.DeleteProcessRequest) (*api.DeleteProcessResponse, error) {
	return nil, unimplemented("DeleteProcess")
}

func (unimplementedAgent) WaitProcess(context.Context, *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	return nil, unimplemented("WaitProcess")
}

func (unimplementedAgent) SignalProcess(context.Context, *api.SignalProcessRequest) (*api.SignalProcessResponse, error) {
	return nil, unimplemented("SignalProcess")
}

func (unimplementedAgent) ReadOutput(context.Context, *api.ReadOutputRequest) (*api.ReadOutputResponse, error) {
	return nil, unimplemented("ReadOutput")
}

func (unimplementedAgent) WriteStdin(context.Context, *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	return nil, unimplemented("WriteStdin")
}

func (unimplementedAgent) CloseStdin(context.Context, *api.CloseStdinRequest) (*api.CloseStdinResponse, error) {
	return nil, unimplemented("CloseStdin")
}

func (unimplementedAgent) ResizeTerminal(context.Context, *api.ResizeTerminalRequest) (*api.ResizeTerminalResponse, error) {
	return nil, unimplemented("ResizeTerminal")
}

func (unimplementedAgent) ExecProcess(context.Context, *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	return nil, unimplemented("ExecProcess")
}

func (unimplementedAgent) GetOOMEvent(context.Context, *api.GetOOMEventRequest) (*api.GetOOMEventResponse, error) {
	return nil, unimplemented("GetOOMEvent")
}

// fakePods is a Handler whose sandboxes' VMs are fake agents: no QEMU, no
// share, no hypervisor binary.
type fakePods struct {
	t *testing.T
	h *Handler

	mu     sync.Mutex
	agents map[*vmm.VM]*fakeAgent
}

// newFakePods makes a Handler as New does, minus the hypervisor check,
// reaching each VM's agent through its fake. reconnect bounds a
// reconnect.
func newFakePods(t *testing.T, reconnect time.Duration) *fakePods {
	p := &fakePods{t: t, agents: map[*vmm.VM]*fakeAgent{}}
	p.h = &Handler{name: "vm", dir: t.TempDir(), vms: map[string]*sandboxVM{}, pendingIDs: map[string]uint32{}, reconnectTimeout: reconnect}
	p.h.dialer = func(vm *vmm.VM) agentproxy.Dialer {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.agents[vm]
	}
	t.Cleanup(p.close)
	return p
}

// sandboxID makes a sandbox id (vmDir takes its first 32 bytes).
func sandboxID(name string) string {
	return name + strings.Repeat("0", 64-len(name))
}

// startSandbox makes sandbox id's VM (one that never exits) and its
// agent, and connects to it as StartSandbox does once the VM booted.
func (p *fakePods) startSandbox(id string) *fakeAgent {
	p.t.Helper()
	f := newFakeAgent()
	vm := &vmm.VM{} // its Exited channel is nil: it runs for ever
	p.mu.Lock()
	p.agents[vm] = f
	p.mu.Unlock()
	ctx := p.t.Context()
	client, err := agentproxy.Connect(ctx, f)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := client.WaitHealthy(ctx, time.Second); err != nil {
		p.t.Fatal(err)
	}
	s := p.h.sandbox(id)
	s.mu.Lock()
	s.adopt(context.WithoutCancel(ctx), p.h, &conn{vm: vm, client: client})
	s.mu.Unlock()
	return f
}

// createContainer makes container id in sandbox sbID, running, and
// collects its output and exit as CreateContainer does once the agent
// made it.
func (p *fakePods) createContainer(f *fakeAgent, sbID, id string) *store.Container {
	p.t.Helper()
	f.addContainer(id)
	c := &store.Container{ID: id, SandboxID: sbID, State: store.ContainerRunning, StartedAt: time.Now(),
		LogPath: filepath.Join(p.t.TempDir(), id+".log")}
	if err := os.MkdirAll(filepath.Dir(p.h.exitPath(id)), 0o700); err != nil {
		p.t.Fatal(err)
	}
	p.h.logs.Store(id, newLogWriter(c.LogPath))
	p.h.sandbox(sbID).add(context.WithoutCancel(p.t.Context()), p.h, id)
	return c
}

// close stops every sandbox as StopSandbox does (without a VM to stop),
// waits for the collectors of their last connections, then closes the
// agents (after the sandboxes: a broken connection would be redialled).
func (p *fakePods) close() {
	p.h.mu.Lock()
	all := p.h.vms
	p.h.vms = map[string]*sandboxVM{}
	p.h.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		c := s.cur
		s.mu.Unlock()
		s.close()
		if c != nil {
			c.watchers.Wait()
		}
	}
	p.h.logs.Range(func(_, lw any) bool {
		lw.(*logWriter).close()
		return true
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.agents {
		f.close()
	}
}

// eventually polls cond until it holds, failing after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
	}
}

// logEntries returns the CRI log's entries at path by stream, without
// timestamps: "F line" or "P part".
func logEntries(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 {
			t.Fatalf("log line %q is not \"<time> <stream> <tag> <line>\"", l)
		}
		got[f[1]] = append(got[f[1]], f[2])
	}
	return got
}
