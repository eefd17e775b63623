package agentproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crivm/crivm/internal/errdefs"
)

// A port-forward stream is a transport stream the host opens next to the
// ttrpc ones. It starts with portForwardMagic, the port and a newline; the
// guest answers "ok\n" once it has connected to 127.0.0.1:port in the pod's
// network namespace (the guest's own), or "error <message>\n", and then
// relays bytes both ways. ttrpc streams never start with the magic: a ttrpc
// frame starts with a binary length header.
const portForwardMagic = "crivm-pf "

// DialPort opens a connection to port on the guest's loopback, through the
// agent, for CRI port-forward.
func (c *Client) DialPort(ctx context.Context, port int32) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, errdefs.InvalidArgument("port %d is out of range", port)
	}
	conn, err := c.sess.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening a stream to the agent: %w", err)
	}
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	if _, err := fmt.Fprintf(conn, "%s%d\n", portForwardMagic, port); err != nil {
		conn.Close()
		return nil, fmt.Errorf("asking the agent for port %d: %w", port, err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading the agent's answer for port %d: %w", port, err)
	}
	conn.SetDeadline(time.Time{})
	if line != "ok\n" {
		conn.Close()
		return nil, errdefs.Newf(errdefs.ErrUnavailable, "port %d in the guest: %s", port, strings.TrimSpace(strings.TrimPrefix(line, "error ")))
	}
	return &peekedConn{Conn: conn, r: br}, nil
}

// peekedConn reads through the reader that already holds bytes read
// past the handshake line.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *peekedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// PortForwardListener wraps the agent's listener: port-forward streams are
// served here, every other stream is passed on (to ttrpc) untouched.
type PortForwardListener struct {
	net.Listener
	log   *slog.Logger
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

// NewPortForwardListener starts sorting the streams of l.
func NewPortForwardListener(l net.Listener, log *slog.Logger) *PortForwardListener {
	p := &PortForwardListener{Listener: l, log: log, conns: make(chan net.Conn), done: make(chan struct{})}
	go p.sort()
	return p
}

func (p *PortForwardListener) sort() {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			p.once.Do(func() { close(p.done) })
			return
		}
		// Peeking waits for the host's first bytes: do it off the accept
		// loop, so one quiet stream cannot hold up the others.
		go func() {
			br := bufio.NewReader(c)
			head, err := br.Peek(len(portForwardMagic))
			if err == nil && string(head) == portForwardMagic {
				p.serve(c, br)
				return
			}
			select {
			case p.conns <- &peekedConn{Conn: c, r: br}:
			case <-p.done:
				c.Close()
			}
		}()
	}
}

// Accept returns the next stream that is not a port-forward.
func (p *PortForwardListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *PortForwardListener) serve(c net.Conn, br *bufio.Reader) {
	defer c.Close()
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	port, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, portForwardMagic)))
	if err != nil || port <= 0 || port > 65535 {
		fmt.Fprintf(c, "error bad port %q\n", strings.TrimSpace(line))
		return
	}
	target, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		fmt.Fprintf(c, "error %v\n", err)
		return
	}
	defer target.Close()
	if _, err := io.WriteString(c, "ok\n"); err != nil {
		return
	}
	p.log.Debug("port-forward", "port", port)
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(target, br)
		if tc, ok := target.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	})
	io.Copy(c, target)
	c.Close()
	wg.Wait()
}
