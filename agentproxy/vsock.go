package agentproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/mdlayher/vsock"
)

// VsockDialer is the host end of the vsock transport: every stream is its
// own vsock connection to the guest's CID, so no multiplexer is needed.
type VsockDialer struct {
	CID  uint32
	Port uint32 // zero: VsockPort
}

var _ Dialer = (*VsockDialer)(nil)

// Dial retries until the agent accepts a connection or ctx ends, so it can
// be called while the guest boots. The first connection proves the agent
// listens; it becomes the session's first stream.
func (d *VsockDialer) Dial(ctx context.Context) (Session, error) {
	s := &vsockSession{cid: d.CID, port: d.Port, done: make(chan struct{})}
	if s.port == 0 {
		s.port = VsockPort
	}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.first = c
	s.conns = map[net.Conn]struct{}{c: {}}
	return s, nil
}

// vsockSession tracks its connections so that Close closes them all.
type vsockSession struct {
	cid, port uint32
	done      chan struct{}

	mu     sync.Mutex // guards the fields below
	first  net.Conn
	conns  map[net.Conn]struct{}
	closed bool
}

var _ Session = (*vsockSession)(nil)

func (s *vsockSession) dial(ctx context.Context) (net.Conn, error) {
	for {
		c, err := vsockDial(s.cid, s.port)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dialing agent at vsock %d:%d: %w (last error: %w)", s.cid, s.port, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// vsockDial is vsock.Dial; tests replace it.
var vsockDial = func(cid, port uint32) (net.Conn, error) { return vsock.Dial(cid, port, nil) }

func (s *vsockSession) Open(ctx context.Context) (net.Conn, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, net.ErrClosed
	}
	if c := s.first; c != nil {
		s.first = nil
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	s.conns[c] = struct{}{}
	return &trackedConn{Conn: c, s: s}, nil
}

func (s *vsockSession) Done() <-chan struct{} { return s.done }

func (s *vsockSession) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.done)
	var errs []error
	for c := range s.conns {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.conns = nil
	return errors.Join(errs...)
}

// trackedConn forgets itself in its session when closed.
type trackedConn struct {
	net.Conn
	s *vsockSession
}

func (t *trackedConn) Close() error {
	t.s.mu.Lock()
	delete(t.s.conns, t.Conn)
	t.s.mu.Unlock()
	return t.Conn.Close()
}

// ListenVsock is the guest end of the vsock transport: a listener on
// port (zero: VsockPort) of any local CID.
func ListenVsock(port uint32) (net.Listener, error) {
	if port == 0 {
		port = VsockPort
	}
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, fmt.Errorf("listening on vsock port %d: %w", port, err)
	}
	return l, nil
}
