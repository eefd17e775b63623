package server

import (
	"bytes"
	"context"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/store"
)

// newTestService is a RuntimeService over a fresh store with the given
// handler registered as "fake".
func newTestService(t *testing.T, h handlers.Handler) (*RuntimeService, *store.Store) {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := handlers.Registry{"fake": {Name: "fake", Type: "oci", Handler: h}}
	return NewRuntimeService(Deps{Store: st, Handlers: reg}), st
}

// logCapture is a context whose logger writes text lines into a buffer.
func logCapture() (context.Context, *bytes.Buffer) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return log.WithLogger(context.Background(), l), &buf
}

// exitRacingHandler stops a sandbox the way the real handlers do: its
// process ends, and the handler's exit watch reports that at once, while
// StopPodSandbox has not recorded the stop yet. Only StopSandbox is
// implemented.
type exitRacingHandler struct {
	handlers.Handler
	cmd    *exec.Cmd
	onExit func(id string)
}

func (h *exitRacingHandler) StopSandbox(ctx context.Context, sb *store.Sandbox) error {
	h.cmd.Process.Kill()
	h.cmd.Wait()
	h.onExit(sb.ID)
	return nil
}

// TestStopPodSandbox: a stop is idempotent, an unknown ID is a success,
// and the stop's own ending of the sandbox process is not reported as a
// dead sandbox; a process that dies on its own still is.
func TestStopPodSandbox(t *testing.T) {
	h := &exitRacingHandler{}
	s, st := newTestService(t, h)
	ctx, logs := logCapture()
	h.onExit = func(id string) { s.onExit(ctx, id) }

	addSandbox := func(name string) (*store.Sandbox, *exec.Cmd) {
		t.Helper()
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		p := &store.Process{Pid: cmd.Process.Pid, BootID: proc.BootID()}
		p.StartTime, _ = proc.StartTime(cmd.Process.Pid)
		cfg, _ := proto.Marshal(&runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "ns", Uid: name}})
		sb := &store.Sandbox{ID: store.NewID(), Name: name, Handler: "fake", State: store.SandboxReady, Process: p, Config: cfg}
		if err := st.Sandboxes.Add(sb); err != nil {
			t.Fatal(err)
		}
		return sb, cmd
	}

	// 1. Unknown IDs: success, as containerd and CRI-O answer.
	if _, err := s.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: strings.Repeat("ab", 32)}); err != nil {
		t.Errorf("stopping an unknown sandbox: %v, want success", err)
	}

	// 2. A stop whose exit report arrives before the stop records it:
	//    NotReady, and no warning about a dead sandbox.
	sb, cmd := addSandbox("stopped")
	h.cmd = cmd
	for i := 0; i < 2; i++ {
		if _, err := s.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.ID}); err != nil {
			t.Fatalf("stop %d: %v", i+1, err)
		}
	}
	if got, _ := st.Sandboxes.Get(sb.ID); got.State != store.SandboxNotReady {
		t.Errorf("after stop: %v, want NotReady", got.State)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("a normal stop logged a warning:\n%s", logs)
	}

	// 3. A sandbox whose process dies without a stop is reported, once.
	died, cmd := addSandbox("died")
	cmd.Process.Kill()
	cmd.Wait()
	logs.Reset()
	s.onExit(ctx, died.ID)
	s.onExit(ctx, died.ID)
	if got, _ := st.Sandboxes.Get(died.ID); got.State != store.SandboxNotReady {
		t.Errorf("after its process died: %v, want NotReady", got.State)
	}
	if n := strings.Count(logs.String(), "sandbox process is gone"); n != 1 {
		t.Errorf("warnings about the dead sandbox: %d, want 1:\n%s", n, logs)
	}
}
