package vm

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/store"
)

// The agent connection of a VM sandbox (sandboxVM) against a fake agent:
// reconnects after a broken connection, resumes the containers' output
// and exit waits on the new one, and keeps a wedged guest to itself.

const (
	stdout = api.Stream_STDOUT
	stderr = api.Stream_STDERR
)

// TestReconnectOnNextCall: once the connection broke, the next call that
// needs the agent gets a new connection (one new dial) and succeeds on it.
func TestReconnectOnNextCall(t *testing.T) {
	for _, tt := range []struct {
		name   string
		method string // the agent method the call makes
		call   func(context.Context, *Handler, *store.Container) error
	}{
		{"Stats", "StatsContainer", func(ctx context.Context, h *Handler, c *store.Container) error {
			st, err := h.Stats(ctx, c)
			if err == nil && st.MemoryUsageBytes != fakeMemoryUsage {
				err = fmt.Errorf("memory usage %d, want %d", st.MemoryUsageBytes, fakeMemoryUsage)
			}
			return err
		}},
		{"ExecSync", "ExecProcess", func(ctx context.Context, h *Handler, c *store.Container) error {
			r, err := h.ExecSync(ctx, c, handlers.ExecRequest{Cmd: []string{"true"}})
			if err == nil && !strings.HasPrefix(string(r.Stdout), "true on ") {
				err = fmt.Errorf("stdout %q, want the fake's echo of the command", r.Stdout)
			}
			return err
		}},
		{"StartContainer", "StartContainer", func(ctx context.Context, h *Handler, c *store.Container) error {
			st, err := h.StartContainer(ctx, &store.Sandbox{ID: c.SandboxID}, c)
			if err == nil && st.State != store.ContainerRunning {
				err = fmt.Errorf("state %s, want %s", st.State, store.ContainerRunning)
			}
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakePods(t, 5*time.Second)
			sb := sandboxID("reconnect")
			f := p.startSandbox(sb)
			c := p.createContainer(f, sb, "ctr")
			ctx := t.Context()
			if err := tt.call(ctx, p.h, c); err != nil {
				t.Fatalf("before the break: %v", err)
			}
			f.breakConn(t)
			if err := tt.call(ctx, p.h, c); err != nil {
				t.Fatalf("after the break: %v", err)
			}
			if got := f.dials(); got != 2 {
				t.Errorf("%d dials, want 2 (the first and one reconnect)", got)
			}
			if got, want := f.servedOn(tt.method), []int{1, 2}; !slices.Equal(got, want) {
				t.Errorf("%s served on connections %v, want %v", tt.method, got, want)
			}
		})
	}
}

// TestOutputAndExitAfterReconnect: a tracked container's output and exit
// keep reaching the host across a broken connection, without a caller
// needing the agent: the output resumes where the CRI log got (nothing
// logged twice, nothing lost), and the exit is recorded and reported,
// whether it happens after the reconnect or while the host is away.
func TestOutputAndExitAfterReconnect(t *testing.T) {
	for _, tt := range []struct {
		name      string
		whileDown bool
	}{
		{"after the reconnect", false},
		{"while disconnected", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakePods(t, 5*time.Second)
			exits := make(chan string, 4)
			if err := p.h.WatchExits(t.Context(), func(id string) { exits <- id }); err != nil {
				t.Fatal(err)
			}
			sb := sandboxID("logs")
			f := p.startSandbox(sb)
			c := p.createContainer(f, sb, "ctr")

			f.write(c.ID, stdout, "one\n")
			f.write(c.ID, stderr, "err one\n")
			eventually(t, 10*time.Second, "the first lines' offsets persisted", func() bool {
				return p.h.readOffsets(c.ID) == [2]uint64{4, 8}
			})

			more := func() {
				f.write(c.ID, stdout, "two\n")
				f.write(c.ID, stderr, "err two\n")
				f.endOutput(c.ID)
				f.exit(c.ID, 3)
			}
			if tt.whileDown {
				entered, release := f.wedge("dial")
				defer release()
				f.breakConn(t)
				select {
				case <-entered:
				case <-time.After(10 * time.Second):
					t.Fatal("nobody redialled the broken connection")
				}
				more()
				release()
			} else {
				f.breakConn(t)
				eventually(t, 10*time.Second, "reconnected", func() bool { return f.dials() == 2 })
				more()
			}

			select {
			case id := <-exits:
				if id != c.ID {
					t.Errorf("WatchExits reported %q, want %q", id, c.ID)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("WatchExits reported no exit")
			}
			st, err := p.h.ContainerState(t.Context(), c)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != store.ContainerExited || st.ExitCode != 3 || st.Reason != "Error" {
				t.Errorf("state %s, exit code %d, reason %q; want %s, 3, Error", st.State, st.ExitCode, st.Reason, store.ContainerExited)
			}

			lw, _ := p.h.logs.Load(c.ID)
			eventually(t, 10*time.Second, "the output ended", func() bool { return outputEnded(lw.(*logWriter)) })
			want := map[string][]string{"stdout": {"F one", "F two"}, "stderr": {"F err one", "F err two"}}
			if got := logEntries(t, c.LogPath); !reflect.DeepEqual(got, want) {
				t.Errorf("CRI log %q, want %q", got, want)
			}
			if off, seen := f.firstReads(2, c.ID); off != [2]uint64{4, 8} || seen != [2]bool{true, true} {
				t.Errorf("connection 2 resumed stdout and stderr at %v (asked: %v), want [4 8]", off, seen)
			}
			if got := f.dials(); got != 2 {
				t.Errorf("%d dials, want 2", got)
			}
		})
	}
}

// TestOffsetsPerStream: each stream resumes at its own offset; a stream
// the container never wrote to resumes at zero, and a line cut by the
// break is logged once, whole.
func TestOffsetsPerStream(t *testing.T) {
	for _, tt := range []struct {
		name          string
		before, after [2]string // output by stream, before and after the break
		persisted     [2]uint64 // the offsets on disk before the break
		resume        [2]uint64 // where the new connection reads from
		want          map[string][]string
	}{
		{
			name:   "stdout only",
			before: [2]string{"a\nb\n", ""}, after: [2]string{"c\n", ""},
			persisted: [2]uint64{4, 0}, resume: [2]uint64{4, 0},
			want: map[string][]string{"stdout": {"F a", "F b", "F c"}},
		},
		{
			name:   "stderr only",
			before: [2]string{"", "x\n"}, after: [2]string{"", "y\n"},
			persisted: [2]uint64{0, 2}, resume: [2]uint64{0, 2},
			want: map[string][]string{"stderr": {"F x", "F y"}},
		},
		{
			// On disk, the offset stops before the line still waiting for
			// its newline (a restarted daemon reads it again); in the
			// daemon, that line is still in the log writer, so the new
			// connection reads on after it.
			name:   "stdout only, a line cut by the break",
			before: [2]string{"a\nb", ""}, after: [2]string{"c\n", ""},
			persisted: [2]uint64{2, 0}, resume: [2]uint64{3, 0},
			want: map[string][]string{"stdout": {"F a", "F bc"}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakePods(t, 5*time.Second)
			sb := sandboxID("offsets")
			f := p.startSandbox(sb)
			c := p.createContainer(f, sb, "ctr")
			for st, s := range tt.before {
				if s != "" {
					f.write(c.ID, api.Stream(st), s)
				}
			}
			eventually(t, 10*time.Second, fmt.Sprintf("offsets %v persisted", tt.persisted), func() bool {
				return p.h.readOffsets(c.ID) == tt.persisted
			})
			f.breakConn(t)
			eventually(t, 10*time.Second, "both streams read on the new connection", func() bool {
				_, seen := f.firstReads(2, c.ID)
				return seen == [2]bool{true, true}
			})
			if off, _ := f.firstReads(2, c.ID); off != tt.resume {
				t.Errorf("resumed at %v, want %v", off, tt.resume)
			}
			for st, s := range tt.after {
				if s != "" {
					f.write(c.ID, api.Stream(st), s)
				}
			}
			f.endOutput(c.ID)
			lw, _ := p.h.logs.Load(c.ID)
			eventually(t, 10*time.Second, "the output ended", func() bool { return outputEnded(lw.(*logWriter)) })
			if got := logEntries(t, c.LogPath); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CRI log %q, want %q", got, tt.want)
			}
		})
	}
}

// TestWedgedCall: a call the guest never answers holds up only itself:
// not another sandbox's calls, not other calls to the same guest, not
// ContainerState.
func TestWedgedCall(t *testing.T) {
	p := newFakePods(t, 5*time.Second)
	a, b := sandboxID("a"), sandboxID("b")
	fa, fb := p.startSandbox(a), p.startSandbox(b)
	ca, cb := p.createContainer(fa, a, "ctr-a"), p.createContainer(fb, b, "ctr-b")
	ctx := t.Context()

	entered, release := fa.wedge("StatsContainer")
	defer release()
	wedged := make(chan error, 1)
	go func() {
		_, err := p.h.Stats(ctx, ca)
		wedged <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Stats did not reach the guest")
	}
	for _, tt := range otherCalls(t.Context(), p.h, ca, cb) {
		within(t, 10*time.Second, tt.name, tt.call)
	}
	returnsOnlyAfter(t, wedged, release, "the wedged Stats")
}

// returnsOnlyAfter asserts that the call reporting on done has not
// returned, then releases the guest and asserts that it returns, without
// error.
func returnsOnlyAfter(t *testing.T, done <-chan error, release func(), what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned (%v) before the guest answered", what, err)
	default:
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s, once the guest answered: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return once the guest answered", what)
	}
}

// TestWedgedReconnect: a reconnect to a guest that does not answer holds
// up only its own sandbox (its owner's lock is held across the dial),
// not another sandbox and not ContainerState.
func TestWedgedReconnect(t *testing.T) {
	// No reconnect gives up during the test: a call blocked behind the
	// wedged dial stays blocked, and within() sees it.
	p := newFakePods(t, time.Hour)
	a, b := sandboxID("a"), sandboxID("b")
	fa, fb := p.startSandbox(a), p.startSandbox(b)
	ca, cb := p.createContainer(fa, a, "ctr-a"), p.createContainer(fb, b, "ctr-b")

	entered, release := fa.wedge("dial")
	defer release()
	fa.breakConn(t)
	select {
	case <-entered: // the reconnect, with a's lock held
	case <-time.After(10 * time.Second):
		t.Fatal("nobody redialled the broken connection")
	}
	// A caller waits behind that reconnect, holding only what it must.
	behind := make(chan error, 1)
	go func() {
		_, err := p.h.Stats(t.Context(), ca)
		behind <- err
	}()
	time.Sleep(100 * time.Millisecond) // let it reach a's lock
	for _, tt := range otherCalls(t.Context(), p.h, ca, cb) {
		if tt.sameConn {
			continue // behind the reconnect, by design
		}
		within(t, 10*time.Second, tt.name, tt.call)
	}
	returnsOnlyAfter(t, behind, release, "Stats behind the reconnect")
	if got := fa.dials(); got != 2 {
		t.Errorf("%d dials, want 2", got)
	}
}

// TestReconnectGivesUp: a reconnect to a wedged guest fails after
// reconnectTimeout, whatever the caller's deadline; the sandbox keeps
// trying on its own and recovers once the guest answers, its output
// flowing again without a caller.
func TestReconnectGivesUp(t *testing.T) {
	const timeout = 300 * time.Millisecond
	p := newFakePods(t, timeout)
	sb := sandboxID("gives-up")
	f := p.startSandbox(sb)
	c := p.createContainer(f, sb, "ctr")

	entered, release := f.wedge("dial")
	defer release()
	f.breakConn(t)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("nobody redialled the broken connection")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// At most a reconnect already under way, then the call's own.
	limit := 2*timeout + 5*time.Second
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := p.h.Stats(ctx, c)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(limit):
		t.Fatalf("Stats with the guest wedged still blocked after %v", limit)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("Stats gave up after %v, before the reconnect timeout (%v)", took, timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stats with the guest wedged: %v, want a deadline exceeded", err)
	}
	// Let a few reconnects fail, then answer again.
	time.Sleep(3 * timeout)
	if got := f.dials(); got != 1 {
		t.Fatalf("%d dials while the guest was wedged, want 1", got)
	}
	release()
	eventually(t, 15*time.Second, "reconnected without a caller", func() bool { return f.dials() == 2 })
	f.write(c.ID, stdout, "back\n")
	eventually(t, 10*time.Second, "output after the recovery logged", func() bool {
		return slices.Equal(logEntries(t, c.LogPath)["stdout"], []string{"F back"})
	})
}

// otherCalls are calls that must not wait for sandbox a's guest: those of
// sandbox b and those that do no guest I/O. sameConn marks the ones that
// need a's connection (fine beside a wedged call, not beside a wedged
// reconnect).
func otherCalls(ctx context.Context, h *Handler, ca, cb *store.Container) []struct {
	name     string
	sameConn bool
	call     func() error
} {
	return []struct {
		name     string
		sameConn bool
		call     func() error
	}{
		{"Stats of another sandbox", false, func() error {
			_, err := h.Stats(ctx, cb)
			return err
		}},
		{"ExecSync in the same sandbox", true, func() error {
			_, err := h.ExecSync(ctx, ca, handlers.ExecRequest{Cmd: []string{"true"}})
			return err
		}},
		{"ContainerState in the wedged sandbox", false, func() error {
			st, err := h.ContainerState(ctx, ca)
			if err == nil && st.State != store.ContainerRunning {
				err = fmt.Errorf("state %s (%s), want %s", st.State, st.Reason, store.ContainerRunning)
			}
			return err
		}},
		{"ContainerState in another sandbox", false, func() error {
			_, err := h.ContainerState(ctx, cb)
			return err
		}},
	}
}

// within fails t when call fails or has not returned after d.
func within(t *testing.T, d time.Duration, name string, call func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	case <-time.After(d):
		t.Errorf("%s: still blocked after %v", name, d)
	}
}

// outputEnded reports whether lw's output is complete (both streams
// reached their end).
func outputEnded(lw *logWriter) bool {
	a := lw.subscribe()
	if a == nil {
		return true
	}
	lw.unsubscribe(a)
	return false
}

// TestLastLineOffset: a stream that ends on a line without a newline logs
// it once, and its persisted offset moves past it, so a reconnect or a
// restarted daemon does not log it again.
func TestLastLineOffset(t *testing.T) {
	p := newFakePods(t, 5*time.Second)
	sb := sandboxID("lastline")
	f := p.startSandbox(sb)
	c := p.createContainer(f, sb, "ctr")
	f.write(c.ID, api.Stream(0), "a\nb")
	f.endOutput(c.ID)
	lw, _ := p.h.logs.Load(c.ID)
	eventually(t, 10*time.Second, "the output ended", func() bool { return outputEnded(lw.(*logWriter)) })
	if got, want := p.h.readOffsets(c.ID), [2]uint64{3, 0}; got != want {
		t.Errorf("offsets after the end %v, want %v (past the last line)", got, want)
	}
	if got, want := logEntries(t, c.LogPath), map[string][]string{"stdout": {"F a", "F b"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("CRI log %q, want %q", got, want)
	}
}
