package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/store"
)

// TestReconcile: after a restart, records whose host process is gone
// become NotReady or Exited (with the exit file's code when there is one);
// live ones and VM containers (no host process: the handler asks the
// guest) keep their state.
func TestReconcile(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	self := &store.Process{Pid: os.Getpid(), BootID: proc.BootID()}
	self.StartTime, _ = proc.StartTime(os.Getpid())
	gone := &store.Process{Pid: 1 << 30, BootID: proc.BootID()}
	exitFile := filepath.Join(t.TempDir(), "exit")
	os.WriteFile(exitFile, []byte("3"), 0o600)

	sandboxes := []struct {
		name string
		p    *store.Process
		want store.SandboxState
	}{
		{"alive", self, store.SandboxReady},
		{"gone", gone, store.SandboxNotReady},
	}
	for _, s := range sandboxes {
		if err := st.Sandboxes.Add(&store.Sandbox{ID: store.NewID(), Name: s.name, State: store.SandboxReady, Process: s.p}); err != nil {
			t.Fatal(err)
		}
	}
	containers := []struct {
		name     string
		p        *store.Process
		exitFile string
		want     store.ContainerState
		wantCode int32
	}{
		{"alive", self, "", store.ContainerRunning, 0},
		{"gone", gone, "", store.ContainerExited, exitCodeUnknown},
		{"gone-with-exit-file", gone, exitFile, store.ContainerExited, 3},
		{"in-a-vm", nil, "", store.ContainerRunning, 0},
	}
	for _, c := range containers {
		if err := st.Containers.Add(&store.Container{ID: store.NewID(), Name: c.name, State: store.ContainerRunning, Process: c.p, ExitFile: c.exitFile}); err != nil {
			t.Fatal(err)
		}
	}

	if err := Reconcile(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	for _, want := range sandboxes {
		got := st.Sandboxes.List(func(s *store.Sandbox) bool { return s.Name == want.name })[0]
		if got.State != want.want {
			t.Errorf("sandbox %s: %v, want %v", want.name, got.State, want.want)
		}
	}
	for _, want := range containers {
		got := st.Containers.List(func(c *store.Container) bool { return c.Name == want.name })[0]
		if got.State != want.want || got.ExitCode != want.wantCode {
			t.Errorf("container %s: %v exit %d, want %v exit %d", want.name, got.State, got.ExitCode, want.want, want.wantCode)
		}
	}
}
