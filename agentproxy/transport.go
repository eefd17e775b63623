// Package agentproxy is the host<->guest agent protocol: the ttrpc API in
// api/, the transports that carry it (vsock, or yamux over virtio-serial
// where vsock is missing), the host client, and the guest listeners that
// crivm-agent serves on.
package agentproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// SerialPortName is the virtserialport name QEMU gives the agent's channel
// (-device virtserialport,name=...). The guest finds the port by it.
const SerialPortName = "crivm.agent"

// VsockPort is the vsock port the agent listens on.
const VsockPort = 1024

// Kernel command-line keys through which the host configures the agent.
const (
	// KernelParamTransport selects the agent's channel: "serial" (the
	// default) or "vsock". Pair "vsock" with MachineConfig.VsockCID.
	KernelParamTransport = "crivm.agent_transport"
	// KernelParamDebug turns on the agent's debug logging.
	KernelParamDebug = "crivm.debug"
)

// Values of KernelParamTransport.
const (
	TransportSerial = "serial"
	TransportVsock  = "vsock"
)

// Dialer connects the host to one VM's agent.
type Dialer interface {
	// Dial returns a new session to the agent. The caller closes it.
	Dial(ctx context.Context) (Session, error)
}

// Session is one connection to the agent over which streams are opened.
// Closing it closes every stream opened on it.
type Session interface {
	// Open returns a new bidirectional stream to the agent's server.
	Open(ctx context.Context) (net.Conn, error)
	// Done is closed when the session ends, by Close or because the
	// peer or the transport went away.
	Done() <-chan struct{}
	Close() error
}

// The virtio-serial byte stream has no connection boundaries of its own:
// bytes of a previous host connection (a daemon that died mid-write, or a
// guest reply queued while the host was away) can still be in flight when a
// new host connects. Before yamux starts, the two ends therefore agree on a
// fresh nonce, and each side drops everything that came before:
//
//	host  -> guest  "\ncrivm-hello NONCE\n"   (resent with a new nonce until answered)
//	guest -> host   "\ncrivm-ready NONCE\n"   (for every hello; the guest remembers the last)
//	host  -> guest  "\ncrivm-start NONCE\n"   (once ready matches the host's newest nonce)
//
// after which the host runs the yamux client and the guest the yamux server
// over the rest of the stream. The leading newline makes a hello that lands
// in a stale guest yamux session a protocol error (yamux's version byte is
// 0), which ends that session so the guest goes back to waiting for hello.
const (
	helloPrefix = "crivm-hello "
	readyPrefix = "crivm-ready "
	startPrefix = "crivm-start "
	// maxSyncLine bounds a handshake line; longer lines are stale data.
	maxSyncLine = 128
)

// The host repeats its hello while the guest has not answered (it is still
// booting, or a stale guest session swallowed the hello), first after
// firstHelloInterval, then twice as long each time up to
// DefaultHelloInterval.
const (
	firstHelloInterval   = 25 * time.Millisecond
	DefaultHelloInterval = 500 * time.Millisecond
)

func newNonce() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// readSyncLine returns the next newline-terminated line of at most
// maxSyncLine bytes, without the newline, skipping longer runs.
func readSyncLine(br *bufio.Reader) (string, error) {
	var line []byte
	for {
		b, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		if b == '\n' {
			if len(line) <= maxSyncLine {
				return string(line), nil
			}
			line = line[:0]
			continue
		}
		if len(line) <= maxSyncLine {
			line = append(line, b)
		}
	}
}

// bufferedConn reads through the handshake's bufio.Reader so that bytes it
// buffered past the handshake reach yamux.
type bufferedConn struct {
	io.ReadWriteCloser
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// hostHandshake runs the host's side of the sync on conn and returns the
// stream yamux must use. ctx bounds the whole exchange; on failure conn is
// left open for the caller to close.
func hostHandshake(ctx context.Context, conn net.Conn, interval time.Duration) (io.ReadWriteCloser, error) {
	if interval <= 0 {
		interval = DefaultHelloInterval
	}
	// A cancelled ctx unblocks the reader and any write in progress.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	br := bufio.NewReaderSize(conn, 4096)
	// mu orders the reader's match against hello's nonce change: once the
	// reader has matched, no further hello is sent (its ready would reach
	// yamux); once a new nonce is stored, an older ready cannot match.
	var (
		mu      sync.Mutex
		latest  string
		matched bool
	)
	matchedCh := make(chan struct{})
	readErr := make(chan error, 1)
	// The reader stops right after the matching ready, so it never consumes
	// a byte that belongs to yamux.
	go func() {
		for {
			line, err := readSyncLine(br)
			if err != nil {
				readErr <- err
				return
			}
			nonce, ok := cutPrefix(line, readyPrefix)
			if !ok {
				continue
			}
			mu.Lock()
			if nonce == latest {
				matched = true
				mu.Unlock()
				close(matchedCh)
				return
			}
			mu.Unlock()
		}
	}()
	hello := func() error {
		mu.Lock()
		defer mu.Unlock()
		if matched {
			return nil
		}
		latest = newNonce()
		_, err := conn.Write([]byte("\n" + helloPrefix + latest + "\n"))
		return err
	}
	// On an early return the reader must not outlive the call: expire the
	// read deadline to unblock it.
	abort := func(err error) (io.ReadWriteCloser, error) {
		conn.SetReadDeadline(time.Unix(1, 0))
		return nil, err
	}
	if err := hello(); err != nil {
		return abort(fmt.Errorf("sending hello: %w", err))
	}
	wait := min(firstHelloInterval, interval)
	tick := time.NewTimer(wait)
	defer tick.Stop()
	for {
		select {
		case <-matchedCh:
			mu.Lock()
			n := latest
			mu.Unlock()
			if _, err := conn.Write([]byte("\n" + startPrefix + n + "\n")); err != nil {
				return nil, fmt.Errorf("sending start: %w", err)
			}
			if !stop() {
				return nil, fmt.Errorf("syncing with the agent: %w", ctx.Err())
			}
			return &bufferedConn{ReadWriteCloser: conn, r: br}, nil
		case err := <-readErr:
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return abort(fmt.Errorf("waiting for the agent's ready: %w", err))
		case <-tick.C:
			if err := hello(); err != nil {
				return abort(fmt.Errorf("sending hello: %w", err))
			}
			wait = min(2*wait, interval)
			tick.Reset(wait)
		case <-ctx.Done():
			return abort(fmt.Errorf("waiting for the agent's ready: %w", ctx.Err()))
		}
	}
}

// guestHandshake runs the guest's side of the sync on rw: it answers every
// hello and returns once the host starts the nonce last answered. Any other
// input is stale and dropped.
func guestHandshake(rw io.ReadWriteCloser) (io.ReadWriteCloser, error) {
	br := bufio.NewReaderSize(rw, 4096)
	current := ""
	for {
		line, err := readSyncLine(br)
		if err != nil {
			return nil, err
		}
		if n, ok := cutPrefix(line, helloPrefix); ok {
			current = n
			if _, err := rw.Write([]byte("\n" + readyPrefix + n + "\n")); err != nil {
				return nil, fmt.Errorf("sending ready: %w", err)
			}
			continue
		}
		if n, ok := cutPrefix(line, startPrefix); ok && current != "" && n == current {
			return &bufferedConn{ReadWriteCloser: rw, r: br}, nil
		}
	}
}

// cutPrefix returns the nonce after prefix, ignoring bytes before the
// prefix on the line (the tail of stale data without a newline).
func cutPrefix(line, prefix string) (string, bool) {
	i := bytes.LastIndex([]byte(line), []byte(prefix))
	if i < 0 {
		return "", false
	}
	n := line[i+len(prefix):]
	if len(n) != 16 {
		return "", false
	}
	if _, err := hex.DecodeString(n); err != nil {
		return "", false
	}
	return n, true
}

// yamuxConfig is shared by both ends. Keepalives detect a peer that
// vanished without closing (a frozen guest); under TCG a guest can stall
// for seconds, so the interval and write timeout are generous.
func yamuxConfig(l *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.KeepAliveInterval = 15 * time.Second
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = 30 * time.Second
	c.LogOutput = nil
	c.Logger = slogLogger{l}
	return c
}

// slogLogger adapts slog to yamux.Logger.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Print(v ...any) { s.l.Debug("yamux: " + fmt.Sprint(v...)) }
func (s slogLogger) Printf(format string, v ...any) {
	s.l.Debug("yamux: " + fmt.Sprintf(format, v...))
}
func (s slogLogger) Println(v ...any) { s.l.Debug("yamux: " + fmt.Sprint(v...)) }

// yamuxSession adapts a yamux session to Session.
type yamuxSession struct {
	s *yamux.Session
}

var _ Session = (*yamuxSession)(nil)

func (y *yamuxSession) Open(ctx context.Context) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := y.s.OpenStream()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("opening agent stream: %w", r.err)
		}
		return r.c, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("opening agent stream: %w", ctx.Err())
	}
}

func (y *yamuxSession) Done() <-chan struct{} { return y.s.CloseChan() }

func (y *yamuxSession) Close() error {
	err := y.s.Close()
	if errors.Is(err, yamux.ErrSessionShutdown) {
		return nil
	}
	return err
}
