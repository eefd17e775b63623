package agentproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/crivm/crivm/internal/log"
)

// SerialDialer is the host end of the virtio-serial transport. It connects
// to the unix socket of QEMU's agent chardev (vmm.VM.AgentSocket), syncs
// with the guest (see hostHandshake) and runs a yamux client over the
// stream. QEMU accepts one client at a time: a second Dial while a session
// is open waits until that session is closed.
type SerialDialer struct {
	// Path is the chardev's unix socket.
	Path string
	// HelloInterval is how often the hello is repeated; zero:
	// DefaultHelloInterval.
	HelloInterval time.Duration
}

var _ Dialer = (*SerialDialer)(nil)

// Dial connects and syncs. ctx bounds the connect and the handshake, so
// it must allow for the guest to boot when called right after the VM starts.
func (d *SerialDialer) Dial(ctx context.Context) (Session, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", d.Path)
	if err != nil {
		return nil, fmt.Errorf("connecting to agent socket: %w", err)
	}
	rw, err := hostHandshake(ctx, conn, d.HelloInterval)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("syncing with the agent over %s: %w", d.Path, err)
	}
	s, err := yamux.Client(rw, yamuxConfig(log.G(ctx).With("side", "host")))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("starting yamux client: %w", err)
	}
	return &yamuxSession{s: s}, nil
}

// sysVirtioPorts lists the guest's virtio-serial ports with their names.
const sysVirtioPorts = "/sys/class/virtio-ports"

// FindSerialPort returns the /dev/vportNpM of the port QEMU named name,
// from /sys/class/virtio-ports/*/name.
func FindSerialPort(name string) (string, error) {
	return findSerialPort(sysVirtioPorts, "/dev", name)
}

func findSerialPort(sysDir, devDir, name string) (string, error) {
	entries, err := os.ReadDir(sysDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("listing virtio ports: %w", err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "name"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			return filepath.Join(devDir, e.Name()), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q in %s", name, sysDir)
}

// WaitSerialPort polls FindSerialPort until the port and its device node
// exist: the names arrive from QEMU after virtio_console probes, and the
// node is created by devtmpfs asynchronously.
func WaitSerialPort(ctx context.Context, name string) (string, error) {
	for {
		p, err := FindSerialPort(name)
		if err == nil {
			if _, serr := os.Stat(p); serr == nil {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%s did not appear", p)
			}
			return "", fmt.Errorf("waiting for virtio-serial port %q: %w (%w)", name, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// SerialListener is the guest end of the virtio-serial transport. It is a
// net.Listener of the yamux streams the host opens, and it outlives host
// connections: when the host goes away (daemon restart) the session ends,
// the port is reopened and the next host's handshake starts a new session.
type SerialListener struct {
	path string
	log  *slog.Logger

	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{} // closed when the session loop has exited

	// mu guards port, the currently open device, so Close can interrupt
	// a blocked read.
	mu   sync.Mutex
	port *os.File
}

var _ net.Listener = (*SerialListener)(nil)

// ListenSerial serves host sessions on the virtio-serial device at path.
func ListenSerial(ctx context.Context, path string) (*SerialListener, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("listening on virtio-serial port: %w", err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &SerialListener{
		path:   path,
		log:    log.G(ctx).With("port", path),
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go l.loop(ctx)
	return l, nil
}

// retryDelay paces reopening the port and polling for a host: while no
// host is connected, a read on the port returns EOF at once.
const retryDelay = 50 * time.Millisecond

func (l *SerialListener) loop(ctx context.Context) {
	defer close(l.done)
	for ctx.Err() == nil {
		f, err := l.open()
		if err != nil {
			l.log.Warn("opening virtio-serial port", "error", err)
			l.sleep(ctx, time.Second)
			continue
		}
		l.serveSession(ctx, f)
		l.mu.Lock()
		l.port = nil
		l.mu.Unlock()
		f.Close() // yamux may have closed it already; a second Close is harmless
	}
}

// open opens the port, retrying while a previous descriptor's close is
// still in flight (the port admits one opener: EBUSY).
func (l *SerialListener) open() (*os.File, error) {
	for i := 0; ; i++ {
		f, err := os.OpenFile(l.path, os.O_RDWR|syscall.O_CLOEXEC, 0)
		if err == nil {
			l.mu.Lock()
			defer l.mu.Unlock()
			select {
			case <-l.closed:
				f.Close()
				return nil, net.ErrClosed
			default:
			}
			l.port = f
			return f, nil
		}
		if !errors.Is(err, syscall.EBUSY) || i >= 100 {
			return nil, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serveSession waits for a host, syncs and serves one yamux session until
// it ends.
func (l *SerialListener) serveSession(ctx context.Context, f *os.File) {
	var rw io.ReadWriteCloser
	for {
		var err error
		rw, err = guestHandshake(f)
		if err == nil {
			break
		}
		if !errors.Is(err, io.EOF) || ctx.Err() != nil {
			if ctx.Err() == nil {
				l.log.Warn("agent channel handshake failed", "error", err)
			}
			return
		}
		// EOF: no host is connected. Poll until one is.
		if !l.sleep(ctx, retryDelay) {
			return
		}
	}
	s, err := yamux.Server(rw, yamuxConfig(l.log))
	if err != nil {
		l.log.Warn("starting yamux server", "error", err)
		return
	}
	l.log.Info("host connected to the agent channel")
	defer s.Close()
	for {
		c, err := s.Accept()
		if err != nil {
			l.log.Info("host session ended", "reason", err)
			return
		}
		select {
		case l.conns <- c:
		case <-ctx.Done():
			c.Close()
			return
		}
	}
}

func (l *SerialListener) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// Accept returns the next stream the host opened, from any session.
func (l *SerialListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops serving and closes the port; streams already accepted stay
// with their owners but die with the session.
func (l *SerialListener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		close(l.closed)
		l.cancel()
		if l.port != nil {
			l.port.Close()
		}
		l.mu.Unlock()
		<-l.done
	})
	return nil
}

func (l *SerialListener) Addr() net.Addr { return serialAddr(l.path) }

type serialAddr string

func (a serialAddr) Network() string { return "virtio-serial" }
func (a serialAddr) String() string  { return string(a) }
