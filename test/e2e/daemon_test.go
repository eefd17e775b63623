package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/testutil"
)

func condition(st *runtimeapi.StatusResponse, typ string) *runtimeapi.RuntimeCondition {
	for _, c := range st.GetStatus().GetConditions() {
		if c.Type == typ {
			return c
		}
	}
	return nil
}

// TestDaemonLifecycle: serve, answer Version/Status/RuntimeConfig, refuse
// RPCs that have not landed, stop on SIGTERM, and keep state across restarts.
func TestDaemonLifecycle(t *testing.T) {
	ctx := context.Background()
	netDir := t.TempDir()
	d := framework.NewDaemon(t, framework.DaemonOptions{Config: `
[crivm.network]
network_dir = "` + netDir + `"
cni_plugin_dirs = ["/usr/lib/cni"]
`})

	// 1. Start the real daemon on a temp socket with a temp root.
	d.Start(ctx)
	fi, err := os.Stat(d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o660); got != want {
		t.Errorf("socket mode: got %v, want %v", got, want)
	}

	// 2. Version and Status through the kubelet's client.
	rs := d.RuntimeService(ctx)
	v, err := rs.Version(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if v.RuntimeName != "crivm" || v.RuntimeApiVersion != "v1" || v.RuntimeVersion == "" {
		t.Errorf("Version: got %+v, want crivm/v1 with a version", v)
	}
	st, err := rs.Status(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	_, runcErr := os.Stat("/usr/sbin/runc")
	_, conmonErr := os.Stat("/usr/bin/conmon")
	if got, want := condition(st, runtimeapi.RuntimeReady).GetStatus(), runcErr == nil && conmonErr == nil; got != want {
		t.Errorf("RuntimeReady: got %v, want %v (%s)", got, want, condition(st, runtimeapi.RuntimeReady).GetMessage())
	}
	if nc := condition(st, runtimeapi.NetworkReady); nc.GetStatus() || !strings.Contains(nc.GetMessage(), netDir) {
		t.Errorf("NetworkReady with an empty network_dir: got %v %q, want false naming %s", nc.GetStatus(), nc.GetMessage(), netDir)
	}
	var cfg struct {
		Root    string `json:"root"`
		Runtime struct {
			DefaultRuntime string `json:"default_runtime"`
		} `json:"runtime"`
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["config"]), &cfg); err != nil {
		t.Fatalf("verbose info config: %v", err)
	}
	if cfg.Root != d.Root || cfg.Runtime.DefaultRuntime != "runc" {
		t.Errorf("verbose config: got root %q default %q, want %q runc", cfg.Root, cfg.Runtime.DefaultRuntime, d.Root)
	}
	rc, err := rs.RuntimeConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := rc.GetLinux().GetCgroupDriver(); got != runtimeapi.CgroupDriver_CGROUPFS {
		t.Errorf("cgroup driver: got %v, want CGROUPFS", got)
	}

	// 3. A CNI config whose plugins exist makes the network ready.
	testutil.RequiresBinary(t, "/usr/lib/cni/bridge")
	conflist := `{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"bridge"},{"type":"portmap"}]}`
	if err := os.WriteFile(filepath.Join(netDir, "10-t.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = rs.Status(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if nc := condition(st, runtimeapi.NetworkReady); !nc.GetStatus() {
		t.Errorf("NetworkReady with a bridge conflist: got false: %s", nc.GetMessage())
	}

	// 4. An RPC whose issue has not landed is Unimplemented, not a fake success.
	err = rs.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: "0123", Location: "/tmp/x.tar"})
	if got := status.Code(err); got != codes.Unimplemented {
		t.Errorf("CheckpointContainer: got %v, want Unimplemented", err)
	}

	// 5. SIGTERM: the daemon exits 0 and the socket is gone.
	if err := d.Stop(15 * time.Second); err != nil {
		t.Fatalf("stopping: %v", err)
	}
	if _, err := os.Stat(d.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after SIGTERM: %v, want gone", err)
	}

	// 6. Seed state as a handler would have left it: one pod whose process
	//    lives, one whose process died, and a container that exited with 7
	//    while the daemon was down.
	live := exec.Command("sleep", "300")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { live.Process.Kill(); live.Wait() }()
	liveStart, err := proc.StartTime(live.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	exitFile := filepath.Join(d.Dir, "exit")
	if err := os.WriteFile(exitFile, []byte("7"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(filepath.Join(d.Root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	meta := store.PodMetadata{Name: "web", Namespace: "default", UID: "uid-1"}
	liveSB := &store.Sandbox{ID: store.NewID(), Name: store.SandboxName(meta), Metadata: meta, Handler: "runc",
		State: store.SandboxReady, CreatedAt: time.Now(), Labels: map[string]string{"app": "web"},
		Process: &store.Process{Pid: live.Process.Pid, StartTime: liveStart, BootID: proc.BootID()}}
	meta2 := store.PodMetadata{Name: "gone", Namespace: "default", UID: "uid-2"}
	deadSB := &store.Sandbox{ID: store.NewID(), Name: store.SandboxName(meta2), Metadata: meta2, Handler: "runc",
		State: store.SandboxReady, CreatedAt: time.Now(), Process: &store.Process{Pid: dead.Process.Pid, StartTime: 1, BootID: proc.BootID()}}
	ctr := &store.Container{ID: store.NewID(), Name: "k8s_c_web_default_uid-1_0", SandboxID: liveSB.ID,
		Metadata: store.ContainerMetadata{Name: "c"}, Image: "busybox", State: store.ContainerRunning,
		CreatedAt: time.Now(), ExitFile: exitFile, Process: &store.Process{Pid: dead.Process.Pid, StartTime: 1, BootID: proc.BootID()}}
	for _, err := range []error{s.Sandboxes.Add(liveSB), s.Sandboxes.Add(deadSB), s.Containers.Add(ctr), s.Close()} {
		if err != nil {
			t.Fatal(err)
		}
	}

	// 7. Restart: the persisted pods and container are listed and reconciled
	//    with what really runs.
	for round := 1; round <= 2; round++ {
		d.Start(ctx)
		rs = d.RuntimeService(ctx)
		pods, err := rs.ListPodSandbox(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		states := map[string]runtimeapi.PodSandboxState{}
		for _, p := range pods {
			states[p.Id] = p.State
		}
		want := map[string]runtimeapi.PodSandboxState{
			liveSB.ID: runtimeapi.PodSandboxState_SANDBOX_READY,
			deadSB.ID: runtimeapi.PodSandboxState_SANDBOX_NOTREADY,
		}
		if len(states) != len(want) || states[liveSB.ID] != want[liveSB.ID] || states[deadSB.ID] != want[deadSB.ID] {
			t.Errorf("round %d: pod states: got %v, want %v", round, states, want)
		}
		filtered, err := rs.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "web"}})
		if err != nil || len(filtered) != 1 || filtered[0].Id != liveSB.ID {
			t.Errorf("round %d: label filter: got %v, %v; want only %s", round, filtered, err, liveSB.ID)
		}
		ctrs, err := rs.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: liveSB.ID[:12]})
		if err != nil {
			t.Fatal(err)
		}
		if len(ctrs) != 1 || ctrs[0].State != runtimeapi.ContainerState_CONTAINER_EXITED {
			t.Errorf("round %d: containers: got %v, want one EXITED", round, ctrs)
		}
		out, err := d.Crivmctl("pods", "--state", "ready")
		if err != nil || !strings.Contains(out, liveSB.ID[:13]) || strings.Contains(out, deadSB.ID[:13]) || !strings.Contains(out, "READY") {
			t.Errorf("round %d: crivmctl pods --state ready: %v\n%s", round, err, out)
		}
		if err := d.Stop(15 * time.Second); err != nil {
			t.Fatalf("round %d: stopping: %v", round, err)
		}
	}
	s, err = store.Open(filepath.Join(d.Root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Containers.Get(ctr.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ExitCode != 7 || got.Reason != "Error" {
		t.Errorf("reconciled container: exit %d reason %q, want 7 Error", got.ExitCode, got.Reason)
	}
	// Stopping the daemon never touched the live pod's process.
	if !proc.Alive(live.Process.Pid, liveStart, "") {
		t.Error("the daemon's restart killed a running pod process")
	}
}

// TestStartupRefusals: bad input stops start-up with a clear error and
// leaves nothing behind.
func TestStartupRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		config  string // appended to the main config
		dropIn  string // written as crivm.conf.d/50-bad.conf
		args    []string
		want    []string
		rootDir func(d *framework.Daemon) string
	}{
		{
			name:   "unknown key in drop-in",
			dropIn: "[crivm.runtime]\ndefault_runtim = \"runc\"\n",
			want:   []string{"50-bad.conf", "crivm.runtime.default_runtim", "unknown key"},
		},
		{
			name:   "unknown handler name",
			config: "[crivm.runtime]\ndefault_runtime = \"gvisor\"\n",
			want:   []string{"crivm.conf", "crivm.runtime.default_runtime", `handler "gvisor" is not configured`},
		},
		{
			name:   "malformed toml",
			dropIn: "[crivm.runtime\n",
			want:   []string{"50-bad.conf:2", "table name"},
		},
		{
			name: "socket in a missing directory",
			args: []string{"--listen", "/nonexistent-dir/crivm.sock"},
			want: []string{"/nonexistent-dir", "does not exist"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := framework.NewDaemon(t, framework.DaemonOptions{Config: tt.config})
			if tt.dropIn != "" {
				if err := os.WriteFile(filepath.Join(d.DropIn, "50-bad.conf"), []byte(tt.dropIn), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := d.TryStart(ctx, tt.args...)
			if err == nil {
				t.Fatal("daemon started")
			}
			log := d.Log()
			for _, w := range tt.want {
				if !strings.Contains(log, w) {
					t.Errorf("log lacks %q:\n%s", w, log)
				}
			}
			for _, p := range []string{d.Root, d.Runroot} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind after a failed start", p)
				}
			}
		})
	}
}

// TestStartupConflicts: a second daemon on the same root is refused; a stale
// socket is replaced; a read-only root is refused without leftovers.
func TestStartupConflicts(t *testing.T) {
	ctx := context.Background()

	// 1. A stale socket (no listener behind it) is replaced.
	d := framework.NewDaemon(t, framework.DaemonOptions{})
	if err := os.MkdirAll(d.Runroot, 0o711); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	d.Start(ctx)

	// 2. A second crivm on the same root is refused and leaves the first alone.
	second := d.Command("--listen", filepath.Join(d.Dir, "second.sock"))
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another crivm") {
		t.Errorf("second daemon: err %v, output %q; want refusal naming another crivm", err, out)
	}
	if _, err := d.RuntimeService(ctx).Version(ctx, "v1"); err != nil {
		t.Errorf("first daemon after refusal: %v", err)
	}
	if err := d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}

	// 3. A root on a read-only filesystem.
	testutil.RequiresRoot(t)
	ro := filepath.Join(d.Dir, "ro")
	if err := os.MkdirAll(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", ro, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
		t.Fatalf("mounting a read-only tmpfs: %v", err)
	}
	defer syscall.Unmount(ro, 0)
	d2 := framework.NewDaemon(t, framework.DaemonOptions{})
	err = d2.TryStart(ctx, "--root", filepath.Join(ro, "root"))
	if err == nil || !strings.Contains(d2.Log(), "read-only file system") {
		t.Errorf("read-only root: err %v; log:\n%s", err, d2.Log())
	}
	if _, err := os.Stat(d2.Runroot); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runroot %s left behind after a refused read-only root", d2.Runroot)
	}
}

// TestReload: SIGHUP applies log_level, names keys that need a restart, and
// keeps the running config when the new files are broken.
func TestReload(t *testing.T) {
	ctx := context.Background()
	d := framework.NewDaemon(t, framework.DaemonOptions{})
	d.Start(ctx)

	// 1. Change a reloadable key and a restart-only key, then SIGHUP.
	reload := "[crivm]\nlog_level = \"warn\"\n[crivm.image]\npause_image = \"example.com/pause:9\"\n"
	if err := os.WriteFile(filepath.Join(d.DropIn, "90-reload.conf"), []byte(reload), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitLog(10*time.Second, "key=crivm.log_level", `needs a restart" key=crivm.image.pause_image`); err != nil {
		t.Fatal(err)
	}
	st, err := d.RuntimeService(ctx).Status(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		LogLevel string `json:"log_level"`
		Image    struct {
			PauseImage string `json:"pause_image"`
		} `json:"image"`
	}
	json.Unmarshal([]byte(st.GetInfo()["config"]), &cfg)
	if cfg.LogLevel != "warn" || cfg.Image.PauseImage != "registry.k8s.io/pause:3.10" {
		t.Errorf("after reload: log_level %q pause_image %q; want warn and the unchanged default", cfg.LogLevel, cfg.Image.PauseImage)
	}

	// 2. A broken file at reload keeps the running config and says so.
	if err := os.WriteFile(filepath.Join(d.DropIn, "91-broken.conf"), []byte("[crivm]\nlog_levl = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitLog(10*time.Second, "keeping the running config", "crivm.log_levl"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RuntimeService(ctx).Version(ctx, "v1"); err != nil {
		t.Errorf("daemon after a broken reload: %v", err)
	}
}
