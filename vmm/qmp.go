package vmm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// QMP is a client of one QEMU monitor (QMP) connection. QEMU serves one
// client per monitor socket at a time, so hold a QMP only for the duration
// of an operation. Methods are safe for concurrent use; commands are
// serialized.
type QMP struct {
	// mu serializes commands: QMP answers in order, and events in between
	// are skipped by the reader of the command that is waiting.
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	nextID uint64
	// Version is QEMU's version from the greeting, e.g. "7.2.22".
	Version string
}

// QMPError is an error QEMU answered a command with.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// DefaultQMPTimeout bounds a QMP operation when ctx has no deadline.
const DefaultQMPTimeout = 10 * time.Second

// maxQMPLine bounds one QMP message; query replies are a few KiB.
const maxQMPLine = 4 << 20

// DialQMP connects to the QMP socket at path, reads the greeting and
// leaves capability negotiation mode.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to qmp: %w", err)
	}
	q := &QMP{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	if err := q.handshake(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *QMP) handshake(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	defer q.deadline(ctx)()
	var greeting struct {
		QMP *struct {
			Version struct {
				QEMU struct {
					Major, Minor, Micro int
				} `json:"qemu"`
			} `json:"version"`
		} `json:"QMP"`
	}
	line, err := q.readLine()
	if err != nil {
		return fmt.Errorf("reading qmp greeting: %w", err)
	}
	if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil {
		return fmt.Errorf("reading qmp greeting: not a QMP greeting: %.200q", line)
	}
	v := greeting.QMP.Version.QEMU
	q.Version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	return q.execLocked("qmp_capabilities", nil, nil, nil)
}

// deadline applies ctx's deadline (or DefaultQMPTimeout) to the connection
// and returns the function that clears it. A cancelled ctx interrupts the
// pending read or write.
func (q *QMP) deadline(ctx context.Context) func() {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(DefaultQMPTimeout)
	}
	q.conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { q.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		q.conn.SetDeadline(time.Time{})
	}
}

func (q *QMP) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := q.r.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > maxQMPLine {
			return nil, errors.New("qmp message too long")
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// Execute runs command with args (nil for none) and decodes its "return"
// value into out (nil to ignore it).
func (q *QMP) Execute(ctx context.Context, command string, args, out any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	defer q.deadline(ctx)()
	return q.execLocked(command, args, out, nil)
}

// ExecuteWithFile runs command like Execute, passing f to QEMU with it
// (SCM_RIGHTS), as getfd takes its descriptor.
func (q *QMP) ExecuteWithFile(ctx context.Context, command string, args, out any, f *os.File) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	defer q.deadline(ctx)()
	return q.execLocked(command, args, out, f)
}

func (q *QMP) execLocked(command string, args, out any, f *os.File) error {
	q.nextID++
	id := fmt.Sprintf("crivm-%d", q.nextID)
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding qmp %s: %w", command, err)
	}
	if err := q.send(append(b, '\n'), f); err != nil {
		return fmt.Errorf("sending qmp %s: %w", command, err)
	}
	for {
		line, err := q.readLine()
		if err != nil {
			return fmt.Errorf("reading qmp %s reply: %w", command, err)
		}
		var resp struct {
			ID     string          `json:"id"`
			Event  string          `json:"event"`
			Return json.RawMessage `json:"return"`
			Error  *QMPError       `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return fmt.Errorf("decoding qmp %s reply: %w", command, err)
		}
		if resp.Event != "" || resp.ID != id {
			continue
		}
		if resp.Error != nil {
			resp.Error.Command = command
			return resp.Error
		}
		if out != nil && len(resp.Return) > 0 {
			if err := json.Unmarshal(resp.Return, out); err != nil {
				return fmt.Errorf("decoding qmp %s return: %w", command, err)
			}
		}
		return nil
	}
}

// send writes one message, with f's descriptor attached when f is set.
func (q *QMP) send(b []byte, f *os.File) error {
	if f == nil {
		_, err := q.conn.Write(b)
		return err
	}
	uc, ok := q.conn.(*net.UnixConn)
	if !ok {
		return errors.New("the monitor connection cannot pass descriptors")
	}
	n, _, err := uc.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
	if err == nil && n < len(b) {
		_, err = uc.Write(b[n:])
	}
	return err
}

// VMStatus is the answer to query-status.
type VMStatus struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // running, paused, shutdown, ...
}

// QueryStatus runs query-status.
func (q *QMP) QueryStatus(ctx context.Context) (VMStatus, error) {
	var s VMStatus
	err := q.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// SystemPowerdown presses the guest's ACPI power button.
func (q *QMP) SystemPowerdown(ctx context.Context) error {
	return q.Execute(ctx, "system_powerdown", nil, nil)
}

// Quit makes QEMU exit at once. QEMU may close the connection before its
// reply arrives; that counts as success.
func (q *QMP) Quit(ctx context.Context) error {
	err := q.Execute(ctx, "quit", nil, nil)
	if err != nil && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isConnReset(err)) {
		return nil
	}
	return err
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
