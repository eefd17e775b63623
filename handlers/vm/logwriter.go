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
type logWriter struct {
	mu      sync.Mutex // guards f and partial
	path    string
	f       *os.File
	partial map[string][]byte
}

const maxLine = 16 << 10

func newLogWriter(path string) *logWriter {
	lw := &logWriter{path: path, partial: map[string][]byte{}}
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
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
