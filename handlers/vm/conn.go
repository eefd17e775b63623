package vm

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/vmm"
)

// defaultReconnectTimeout bounds a reconnect to a sandbox's agent,
// whatever the caller's deadline: a wedged guest costs its own callers
// that, and no one else anything.
const defaultReconnectTimeout = 10 * time.Second

// reconnectWithin is the bound of a reconnect (Handler.reconnectTimeout).
func (h *Handler) reconnectWithin() time.Duration {
	if h.reconnectTimeout > 0 {
		return h.reconnectTimeout
	}
	return defaultReconnectTimeout
}

// dialerFor is how to reach vm's agent (Handler.dialer).
func (h *Handler) dialerFor(vm *vmm.VM) agentproxy.Dialer {
	if h.dialer != nil {
		return h.dialer(vm)
	}
	return agentDialer(vm.Dir())
}

// conn is one connection to a sandbox's agent, with the goroutines that
// collect over it (the OOM watch, each container's output and exit).
type conn struct {
	vm       *vmm.VM
	client   *agentproxy.Client
	watchers sync.WaitGroup
}

// sandboxVM owns a VM sandbox's agent connection. Whoever needs the agent
// gets the current connection from it (get); when that connection broke,
// get makes a new one and restarts every watcher on it: the OOM watch,
// and for each tracked container its output pumps (from the persisted
// offsets) and, unless its exit is recorded, its exit wait. StartSandbox,
// Restore and a reconnect after a broken connection all go through this
// one routine.
type sandboxVM struct {
	id string
	// vm is the VM of cur, readable without mu (WatchExits).
	vm atomic.Pointer[vmm.VM]

	// mu guards cur and ctrs. It is held across a reconnect, which is
	// I/O to this sandbox's VM only, bounded by reconnectWithin.
	mu     sync.Mutex
	cur    *conn
	ctrs   map[string]bool // the containers whose output and exit are collected
	closed bool            // by close: no more reconnects
}

// sandbox returns the owner of sandbox id's connection, making it.
func (h *Handler) sandbox(id string) *sandboxVM {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.vms[id]
	if s == nil {
		s = &sandboxVM{id: id, ctrs: map[string]bool{}}
		h.vms[id] = s
	}
	return s
}

// connection returns a live connection to sb's agent (see sandboxVM).
func (h *Handler) connection(ctx context.Context, sb *store.Sandbox) (*conn, error) {
	return h.sandbox(sb.ID).get(ctx, h)
}

func (s *sandboxVM) get(ctx context.Context, h *Handler) (*conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errdefs.FailedPrecondition("sandbox %s is stopping", s.id)
	}
	var vm *vmm.VM
	if old := s.cur; old != nil {
		select {
		case <-old.client.Done():
		default:
			return old, nil
		}
		// The old watchers end with their client; the new ones resume
		// from what the old ones persisted. Its session is over: closing
		// the client releases its transport and goroutines.
		old.watchers.Wait()
		old.client.Close()
		select {
		case <-old.vm.Exited():
			s.cur = nil
		default:
			// old stays current until a new connection replaces it, so
			// that a failed reconnect is retried (keep) on the same VM.
			vm = old.vm
		}
	}
	ctx, cancel := context.WithTimeout(ctx, h.reconnectWithin())
	defer cancel()
	if vm == nil {
		var err error
		if vm, err = vmm.Reconnect(ctx, h.vmDir(s.id)); err != nil {
			return nil, errdefs.FailedPrecondition("sandbox %s: its VM is gone: %w", s.id, err)
		}
	}
	client, err := agentproxy.Connect(ctx, h.dialerFor(vm))
	if err != nil {
		return nil, fmt.Errorf("reconnecting to the agent of %s: %w", s.id, err)
	}
	log.G(ctx).Debug("connected to the agent", "sandbox", s.id, "containers", len(s.ctrs))
	s.adopt(context.WithoutCancel(ctx), h, &conn{vm: vm, client: client})
	return s.cur, nil
}

// adopt makes c the current connection and starts its watchers, which
// log through ctx (not cancelled). s.mu is held.
func (s *sandboxVM) adopt(ctx context.Context, h *Handler, c *conn) {
	s.cur = c
	s.vm.Store(c.vm)
	c.watchers.Go(func() { h.watchOOM(ctx, s.id, c.client) })
	for id := range s.ctrs {
		h.watchContainer(ctx, c, id)
	}
	go s.keep(ctx, h, c)
}

// keep reconnects once c breaks while its VM runs, so that output and
// exits keep flowing without waiting for a caller to need the agent.
func (s *sandboxVM) keep(ctx context.Context, h *Handler, c *conn) {
	select {
	case <-c.client.Done():
	case <-c.vm.Exited():
		return
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		s.mu.Lock()
		current := s.cur == c && !s.closed
		s.mu.Unlock()
		if !current {
			return // someone reconnected, or the sandbox is going
		}
		_, err := s.get(ctx, h)
		if err == nil {
			return
		}
		log.G(ctx).Warn("reconnecting to the agent", "sandbox", s.id, "err", err)
		select {
		case <-c.vm.Exited():
			return
		case <-time.After(backoff):
		}
	}
}

// drop breaks the current connection, as a guest or a transport fault
// would (keep then reconnects): the test builds' OnDrop hook.
func (s *sandboxVM) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		s.cur.client.Close()
	}
}

// track starts collecting container id's output and exit over the
// current connection (if any; else from the next). s.mu is held.
func (s *sandboxVM) track(ctx context.Context, h *Handler, id string) {
	s.ctrs[id] = true
	if s.cur != nil {
		h.watchContainer(ctx, s.cur, id)
	}
}

// add tracks container id (see track).
func (s *sandboxVM) add(ctx context.Context, h *Handler, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.track(ctx, h, id)
}

// forget stops tracking container id; its watchers end with its output.
func (s *sandboxVM) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ctrs, id)
}

// forget stops tracking container id of sandbox sbID, if it has an owner.
func (h *Handler) forget(sbID, id string) {
	h.mu.Lock()
	s := h.vms[sbID]
	h.mu.Unlock()
	if s != nil {
		s.forget(id)
	}
}

// close drops the connection. The caller has removed s from h.vms.
func (s *sandboxVM) close() *vmm.VM {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.cur == nil {
		return nil
	}
	s.cur.client.Close()
	vm := s.cur.vm
	s.cur = nil
	return vm
}

// watchContainer starts container id's output pumps over c, from where
// its log got, and its exit wait unless its exit is recorded. The pumps
// of a previous connection have ended.
func (h *Handler) watchContainer(ctx context.Context, c *conn, id string) {
	v, ok := h.logs.Load(id)
	if !ok {
		return
	}
	lw := v.(*logWriter)
	// A persisted offset stops before the line still waiting for its
	// newline, which a restarted daemon reads again; this daemon's log
	// writer still holds that line, so its pumps go on after it.
	from := h.readOffsets(id)
	for i, st := range outputStreams {
		from[i] += uint64(lw.partialLen(st.name))
	}
	c.watchers.Go(func() { h.pumpOutput(ctx, c.client, id, lw, from) })
	if _, exited := h.readExit(id); !exited {
		c.watchers.Go(func() { h.awaitExit(ctx, c.client, id) })
	}
}

// vmRunning reports whether sandbox id's VM runs, from what the daemon
// knows (the VM it holds, else the pidfile and /proc), without I/O to the
// guest.
func (h *Handler) vmRunning(id string) bool {
	h.mu.Lock()
	s := h.vms[id]
	h.mu.Unlock()
	if s != nil {
		if vm := s.vm.Load(); vm != nil {
			select {
			case <-vm.Exited():
				return false
			default:
				return true
			}
		}
	}
	return vmm.Running(h.vmDir(id))
}

// dropConnections breaks every agent connection (test builds, on
// crashpoint.DropSignal).
func (h *Handler) dropConnections() {
	h.mu.Lock()
	all := make([]*sandboxVM, 0, len(h.vms))
	for _, s := range h.vms {
		all = append(all, s)
	}
	h.mu.Unlock()
	for _, s := range all {
		s.drop()
	}
	log.G(context.Background()).Info("dropped every agent connection (test hook)", "sandboxes", len(all))
}
