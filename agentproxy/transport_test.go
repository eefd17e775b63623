package agentproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/hashicorp/yamux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// fakeAgent answers Health and refuses the rest like a real agent would.
type fakeAgent struct {
	api.AgentService // nil: unexported methods panic if called
}

func (fakeAgent) Health(context.Context, *api.HealthRequest) (*api.HealthResponse, error) {
	return &api.HealthResponse{Status: api.HealthResponse_SERVING, KernelRelease: "6.1.0-test"}, nil
}

func (fakeAgent) CreateContainer(context.Context, *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	return nil, status.Error(codes.Unimplemented, "not yet")
}

// guestEnd emulates the guest side of the serial transport on one end of
// a pipe: it runs the handshake and a yamux server with a ttrpc server,
// repeatedly, the way SerialListener does.
func guestEnd(t *testing.T, rw io.ReadWriteCloser) (done <-chan struct{}, stop func()) {
	t.Helper()
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		conn, err := guestHandshake(rw)
		if err != nil {
			return
		}
		s, err := yamux.Server(conn, yamuxConfig(log.G(context.Background())))
		if err != nil {
			return
		}
		srv, _ := ttrpc.NewServer()
		api.RegisterAgentService(srv, fakeAgent{})
		srv.Serve(context.Background(), s)
		s.Close()
	}()
	return ch, func() { rw.Close(); <-ch }
}

func TestHandshakeSkipsStaleData(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	// The guest's stream starts with bytes of an older host session.
	stale := io.MultiReader(strings.NewReader("\x00\x01\x00\x00\x00\x00\x00\x05garbage\ncrivm-start 0123456789abcdef\n"), guest)
	_, stop := guestEnd(t, struct {
		io.Reader
		io.WriteCloser
	}{stale, guest})
	defer stop()

	// The host's side sees stale guest output before the ready.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rw, err := hostHandshake(ctx, host, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	s, err := yamux.Client(rw, yamuxConfig(log.G(ctx)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := &Client{sess: &yamuxSession{s: s}}
	conn, err := c.sess.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.tc = ttrpc.NewClient(conn)
	c.AgentService = api.NewAgentClient(c.tc)
	h, err := c.WaitHealthy(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if h.KernelRelease != "6.1.0-test" {
		t.Fatalf("health = %+v", h)
	}
	_, err = c.CreateContainer(ctx, &api.CreateContainerRequest{})
	if errdefs.Code(err) != codes.Unimplemented {
		t.Fatalf("CreateContainer = %v, want Unimplemented", err)
	}
}

func TestHostHandshakeIgnoresOldNonces(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	defer guest.Close()
	// A scripted guest: answer the first hello with a wrong nonce, ignore
	// the second, answer the third properly, then expect start.
	result := make(chan error, 1)
	go func() {
		br := bufio.NewReader(guest)
		hellos := 0
		for {
			line, err := readSyncLine(br)
			if err != nil {
				result <- err
				return
			}
			if n, ok := cutPrefix(line, helloPrefix); ok {
				hellos++
				switch hellos {
				case 1:
					guest.Write([]byte("\n" + readyPrefix + "ffffffffffffffff\n"))
				case 3:
					guest.Write([]byte("junk\n" + readyPrefix + n + "\n"))
				}
				continue
			}
			if _, ok := cutPrefix(line, startPrefix); ok {
				if hellos < 3 {
					result <- errors.New("start before the matching ready")
					return
				}
				result <- nil
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := hostHandshake(ctx, host, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := <-result; err != nil {
		t.Fatal(err)
	}
}

func TestHostHandshakeTimesOut(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	go io.Copy(io.Discard, guest) // a guest that never answers
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := hostHandshake(ctx, host, 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
}

func TestReadSyncLine(t *testing.T) {
	long := strings.Repeat("x", 1000)
	br := bufio.NewReader(strings.NewReader(long + "\nshort\n\n" + long + "tail"))
	for _, want := range []string{"short", ""} {
		got, err := readSyncLine(br)
		if err != nil || got != want {
			t.Fatalf("readSyncLine = %q, %v; want %q", got, err, want)
		}
	}
	if _, err := readSyncLine(br); !errors.Is(err, io.EOF) {
		t.Fatalf("unterminated line: %v, want EOF", err)
	}
	for line, want := range map[string]string{
		"crivm-hello 0123456789abcdef":               "0123456789abcdef",
		"\x00\x01stale crivm-hello 0123456789abcdef": "0123456789abcdef",
		"crivm-hello 0123":                           "",
		"crivm-hello 0123456789abcdeg":               "",
	} {
		if got, _ := cutPrefix(line, helloPrefix); got != want {
			t.Errorf("cutPrefix(%q) = %q, want %q", line, got, want)
		}
	}
}

// TestSerialDialerOverUnixSocket plays QEMU's chardev: a unix socket whose
// accepted connection is the guest's byte stream. The host disconnects and
// reconnects; the guest side starts a new session each time.
func TestSerialDialerOverUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "agentproxy")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The session ends when the host closes.
				done, stop := guestEnd(t, c)
				<-done
				stop()
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &SerialDialer{Path: sock}
	for i := range 3 {
		c, err := Connect(ctx, d)
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		if _, err := c.WaitHealthy(ctx, time.Second); err != nil {
			t.Fatalf("health %d: %v", i, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
		select {
		case <-c.Done():
		case <-time.After(time.Second):
			t.Fatal("Done not closed after Close")
		}
	}
}

func TestFindSerialPort(t *testing.T) {
	sys := t.TempDir()
	for port, name := range map[string]string{"vport0p1": "org.qemu.guest_agent.0", "vport1p1": "crivm.agent"} {
		os.MkdirAll(filepath.Join(sys, port), 0o755)
		os.WriteFile(filepath.Join(sys, port, "name"), []byte(name+"\n"), 0o644)
	}
	os.MkdirAll(filepath.Join(sys, "vport0p0"), 0o755) // a console port has no name
	got, err := findSerialPort(sys, "/dev", SerialPortName)
	if err != nil || got != "/dev/vport1p1" {
		t.Fatalf("findSerialPort = %q, %v", got, err)
	}
	if _, err := findSerialPort(sys, "/dev", "missing"); err == nil {
		t.Fatal("found a missing port")
	}
}

// TestVsockSession runs the vsock session logic over unix sockets (there
// is no /dev/vhost-vsock here): the dialer retries until the agent
// listens, and Close closes every stream.
func TestVsockSession(t *testing.T) {
	dir, err := os.MkdirTemp("", "vsock")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	dials := 0
	old := vsockDial
	vsockDial = func(cid, port uint32) (net.Conn, error) {
		if cid != 42 || port != VsockPort {
			t.Errorf("dial %d:%d, want 42:%d", cid, port, VsockPort)
		}
		dials++
		return net.Dial("unix", sock)
	}
	defer func() { vsockDial = old }()

	// The agent starts listening a little after the first dial.
	go func() {
		time.Sleep(150 * time.Millisecond)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Error(err)
			return
		}
		srv, _ := ttrpc.NewServer()
		api.RegisterAgentService(srv, fakeAgent{})
		go srv.Serve(context.Background(), l)
		t.Cleanup(func() { srv.Close() })
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Connect(ctx, &VsockDialer{CID: 42})
	if err != nil {
		t.Fatal(err)
	}
	if dials < 2 {
		t.Errorf("dialed %d times, want retries until the agent listened", dials)
	}
	if _, err := c.WaitHealthy(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	extra, err := c.sess.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := extra.Write([]byte("x")); err == nil {
		t.Error("a stream survived its session's Close")
	}
	if _, err := c.sess.Open(ctx); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Open after Close = %v, want ErrClosed", err)
	}
}
