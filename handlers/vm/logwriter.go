package vm

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"time"
)

// logWriter writes a container's output in the CRI log format
// ("<RFC3339Nano> <stream> <F|P> <line>"), as conmon does for runc pods.
// Lines longer than maxLine are split into partial (P) entries.
//
// It also fans the raw output out to live attach sessions: an attacher
// sees what arrives after it subscribed, never a replay.
type logWriter struct {
	mu      sync.Mutex // guards f, partial, subs and ended
	path    string
	f       *os.File
	partial map[string][]byte
	subs    map[*attacher]struct{}
	// ended: the output ended (the process exited, or the log closed); no
	// new attacher is taken.
	ended bool
}

// attacher is one attach session's feed. ch is closed when the output
// ends or the session fell behind (lagged is then set first).
type attacher struct {
	ch     chan outputChunk
	lagged bool
}

type outputChunk struct {
	stream string
	data   []byte
}

// attachQueue bounds the chunks queued for a slow attach client; past it
// the client is cut off rather than slowing the log.
const attachQueue = 256

const maxLine = 16 << 10

func newLogWriter(path string) *logWriter {
	lw := &logWriter{path: path, partial: map[string][]byte{}, subs: map[*attacher]struct{}{}}
	if path != "" {
		lw.f, _ = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	}
	return lw
}

func (l *logWriter) write(stream string, data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	buf := append(l.partial[stream], data...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		l.emit(stream, "F", buf[:i])
		buf = buf[i+1:]
	}
	for len(buf) >= maxLine {
		l.emit(stream, "P", buf[:maxLine])
		buf = buf[maxLine:]
	}
	l.partial[stream] = append([]byte(nil), buf...)
	for a := range l.subs {
		select {
		case a.ch <- outputChunk{stream: stream, data: append([]byte(nil), data...)}:
		default:
			a.lagged = true
			l.detachLocked(a)
		}
	}
}

// subscribe returns a feed of the output from now on, or nil when the
// output has ended.
func (l *logWriter) subscribe() *attacher {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return nil
	}
	a := &attacher{ch: make(chan outputChunk, attachQueue)}
	l.subs[a] = struct{}{}
	return a
}

// unsubscribe ends a's feed. Idempotent.
func (l *logWriter) unsubscribe(a *attacher) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.detachLocked(a)
}

// detachLocked closes a's feed once; the caller holds mu.
func (l *logWriter) detachLocked(a *attacher) {
	if _, ok := l.subs[a]; ok {
		delete(l.subs, a)
		close(a.ch)
	}
}

// endOutput ends every attach feed: the output is complete.
func (l *logWriter) endOutput() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = true
	for a := range l.subs {
		l.detachLocked(a)
	}
}

// partialLen is how many bytes of stream wait for their newline (not in
// the log yet).
func (l *logWriter) partialLen(stream string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.partial[stream])
}

// flush writes a final unterminated line.
func (l *logWriter) flush(stream string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial[stream]) > 0 {
		l.emit(stream, "F", l.partial[stream])
		l.partial[stream] = nil
	}
}

// emit writes one entry; the caller holds mu.
func (l *logWriter) emit(stream, tag string, line []byte) {
	if l.f == nil {
		return
	}
	fmt.Fprintf(l.f, "%s %s %s %s\n", time.Now().Format(time.RFC3339Nano), stream, tag, line)
}

// reopen starts a new file at the path (after the kubelet rotated it).
func (l *logWriter) reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("reopening log: %w", err)
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f = f
	return nil
}

func (l *logWriter) close() {
	l.endOutput()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
