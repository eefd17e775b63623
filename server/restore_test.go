package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/crivm/crivm/internal/mountfs/mountfstest"
	"github.com/crivm/crivm/internal/podns"
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

// TestReconcilePinned: a sandbox without a process (a runc pod without an
// infra container) stays Ready after a restart while its netns and every
// pin its record names exist, and becomes NotReady when one is gone.
func TestReconcilePinned(t *testing.T) {
	dir := mountfstest.PrivateDir(t)
	pins := podns.IPCUTS{IPC: filepath.Join(dir, "ipc.ns"), UTS: filepath.Join(dir, "uts.ns"), Hostname: "p"}
	if err := podns.PinIPCUTS(pins); err != nil {
		t.Fatal(err)
	}
	netnsPin := filepath.Join(dir, "net.ns") // any namespace stands in
	if err := podns.PinIPCUTS(podns.IPCUTS{IPC: netnsPin}); err != nil {
		t.Fatal(err)
	}
	unpinned := filepath.Join(dir, "unpinned.ns") // a pin file whose mount is gone
	if err := os.WriteFile(unpinned, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	extra := func(ipc, uts string) map[string]string {
		return map[string]string{"infra": "none", podns.ExtraIPCPin: ipc, podns.ExtraUTSPin: uts}
	}
	sandboxes := []struct {
		name  string
		netns string
		extra map[string]string
		want  store.SandboxState
	}{
		{"pinned", netnsPin, extra(pins.IPC, pins.UTS), store.SandboxReady},
		{"ipc pin gone", netnsPin, extra(unpinned, pins.UTS), store.SandboxNotReady},
		{"uts pin file gone", netnsPin, extra(pins.IPC, filepath.Join(dir, "missing.ns")), store.SandboxNotReady},
		{"netns gone", unpinned, extra(pins.IPC, pins.UTS), store.SandboxNotReady},
		{"host network and ipc: nothing pinned", "", map[string]string{"infra": "none"}, store.SandboxReady},
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, s := range sandboxes {
		if err := st.Sandboxes.Add(&store.Sandbox{ID: store.NewID(), Name: s.name, State: store.SandboxReady, NetNSPath: s.netns, Extra: s.extra}); err != nil {
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
}
