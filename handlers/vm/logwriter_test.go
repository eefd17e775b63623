package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLogWriterLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctr.log")
	lw := newLogWriter(path)
	lw.write("stdout", []byte("one\ntw"))
	lw.write("stderr", []byte("err\n"))
	lw.write("stdout", []byte("o\nthree"))
	lw.flush("stdout")
	lw.close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, " ", 2)
		got = append(got, f[1])
	}
	want := []string{"stdout F one", "stderr F err", "stdout F two", "stdout F three"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("log entries %q, want %q", got, want)
	}
}

// TestLogWriterAttach: an attacher sees only output written after it
// subscribed, in order and by stream; one that falls behind is cut off and
// told so; the end of the output ends every feed, and nobody can attach
// after it.
func TestLogWriterAttach(t *testing.T) {
	lw := newLogWriter("")
	lw.write("stdout", []byte("before\n"))
	a := lw.subscribe()
	lw.write("stdout", []byte("after\n"))
	lw.write("stderr", []byte("oops\n"))
	var got []string
	for range 2 {
		c := <-a.ch
		got = append(got, c.stream+":"+string(c.data))
	}
	if want := []string{"stdout:after\n", "stderr:oops\n"}; strings.Join(got, "") != strings.Join(want, "") {
		t.Errorf("attacher got %q, want %q (no replay of earlier output)", got, want)
	}

	lw.unsubscribe(a)
	if _, open := <-a.ch; open || a.lagged {
		t.Errorf("after unsubscribe: feed open %v, lagged %v", open, a.lagged)
	}

	slow := lw.subscribe()
	for range attachQueue + 1 {
		lw.write("stdout", []byte("x"))
	}
	n := 0
	for range slow.ch {
		n++
	}
	if !slow.lagged || n != attachQueue {
		t.Errorf("slow attacher: lagged %v after %d chunks, want cut off after %d", slow.lagged, n, attachQueue)
	}

	last := lw.subscribe()
	lw.write("stdout", []byte("bye\n"))
	lw.endOutput()
	var tail []string
	for c := range last.ch {
		tail = append(tail, string(c.data))
	}
	if last.lagged || strings.Join(tail, "") != "bye\n" {
		t.Errorf("at the end of the output: got %q, lagged %v; want bye and a closed feed", tail, last.lagged)
	}
	if lw.subscribe() != nil {
		t.Error("subscribed after the output ended")
	}
	lw.unsubscribe(last) // idempotent after the end
}
