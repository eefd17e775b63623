package agent

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/crivm/crivm/internal/errdefs"
)

// Output buffering of container streams.
const (
	// OutputBufferSize is how much of a stream the agent keeps that the
	// host has not acknowledged; older bytes are dropped and counted.
	OutputBufferSize = 1 << 20
	// MaxOutputChunk caps one ReadOutput reply.
	MaxOutputChunk = 64 << 10
)

// outputBuffer holds the unacknowledged tail of one output stream,
// addressed by absolute stream offsets: it holds bytes [start, start+len(buf)).
type outputBuffer struct {
	mu    sync.Mutex
	buf   []byte
	start uint64
	// closed: the writer is done; no byte past start+len(buf) will come.
	closed bool
	// changed is closed and replaced whenever bytes arrive or closed is set.
	changed chan struct{}
	limit   int
}

func newOutputBuffer(limit int) *outputBuffer {
	return &outputBuffer{changed: make(chan struct{}), limit: limit}
}

// Write appends p, dropping the oldest bytes beyond the limit. It never
// fails, so a copy from the process's pipe never stalls the process.
func (b *outputBuffer) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.start += uint64(over)
		b.buf = append(b.buf[:0:0], b.buf[over:]...)
	}
	b.notify()
	return len(p), nil
}

// Close marks the end of the stream.
func (b *outputBuffer) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		b.notify()
	}
}

func (b *outputBuffer) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// outputChunk is one ReadOutput answer.
type outputChunk struct {
	data    []byte
	offset  uint64
	dropped uint64
	eof     bool
}

// Read acknowledges everything before off (drops it) and returns up to limit
// bytes from off on, waiting up to wait (zero: until ctx ends) for data or
// the end of the stream. An offset past what was written is
// InvalidArgument.
func (b *outputBuffer) Read(ctx context.Context, off uint64, limit int, wait time.Duration) (outputChunk, error) {
	if limit <= 0 || limit > MaxOutputChunk {
		limit = MaxOutputChunk
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		b.mu.Lock()
		end := b.start + uint64(len(b.buf))
		if off > end {
			b.mu.Unlock()
			return outputChunk{}, errdefs.InvalidArgument("reading output: offset %d is past the end of the stream (%d)", off, end)
		}
		if off > b.start {
			// Acknowledged: the host has these bytes.
			b.buf = append(b.buf[:0:0], b.buf[off-b.start:]...)
			b.start = off
		}
		c := outputChunk{offset: max(off, b.start)}
		c.dropped = c.offset - off
		if n := min(len(b.buf), limit); n > 0 {
			c.data = append([]byte(nil), b.buf[:n]...)
		}
		c.eof = b.closed && c.offset+uint64(len(c.data)) == end
		changed := b.changed
		b.mu.Unlock()
		if len(c.data) > 0 || c.eof || c.dropped > 0 {
			return c, nil
		}
		select {
		case <-changed:
		case <-timeout:
			return c, nil
		case <-ctx.Done():
			return outputChunk{}, ctx.Err()
		}
	}
}

// pump copies r into b until r ends, then closes both. A pty master
// reports the end of its slave side as EIO.
func pump(r *os.File, b *outputBuffer) {
	defer b.Close()
	defer r.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			b.Write(buf[:n])
		}
		if err != nil {
			// io.EOF, or EIO from a pty master: the writers are gone.
			return
		}
	}
}
