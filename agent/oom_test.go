package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOOMWatcher: a growing oom_kill count in a watched memory.events is
// one event, in order; a write that does not grow it is none; a removed
// container's changes are none.
func TestOOMWatcher(t *testing.T) {
	w, err := newOOMWatcher()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	dirs := map[string]string{"a": t.TempDir(), "b": t.TempDir()}
	events := func(dir string, kills int) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "memory.events"), []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill "+string(rune('0'+kills))+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for id, dir := range dirs {
		events(dir, 0)
		if err := w.add(id, dir, 0); err != nil {
			t.Fatal(err)
		}
	}
	next := func(timeout time.Duration) (oomEvent, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return w.next(ctx)
	}

	events(dirs["a"], 1)
	events(dirs["b"], 2)
	for _, want := range []oomEvent{{"a", 1}, {"b", 2}} {
		if got, err := next(5 * time.Second); err != nil || got != want {
			t.Fatalf("event %+v, %v; want %+v", got, err, want)
		}
	}
	events(dirs["a"], 1) // rewritten, not grown
	if got, err := next(300 * time.Millisecond); err == nil {
		t.Errorf("event %+v for an unchanged count", got)
	}
	w.remove("b")
	events(dirs["b"], 5)
	if got, err := next(300 * time.Millisecond); err == nil {
		t.Errorf("event %+v for a removed container", got)
	}
}
