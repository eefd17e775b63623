package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/crivm/crivm/test/framework"
)

// containerd is Debian's containerd on a private socket, root and state,
// with the CRI plugin, the runc v2 shim, a CNI bridge of its own, and the
// loopback registry as a plain-http mirror.
type containerd struct {
	dir, sock string
	cmd       *exec.Cmd
}

func startContainerd(t *framework.MainTB, registryHost, pauseRef, bridge, subnet string) *containerd {
	dir := t.TempDir()
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock")}
	netDir := filepath.Join(dir, "net.d")
	os.MkdirAll(netDir, 0o755)
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"peer","plugins":[{"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":false,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
		bridge, subnet, filepath.Join(dir, "ipam"))
	os.WriteFile(filepath.Join(netDir, "10-peer.conflist"), []byte(conflist), 0o644)
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors.%q]
    endpoint = ["http://%s"]
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, pauseRef, netDir, registryHost, registryHost)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, _ := os.Create(filepath.Join(dir, "containerd.log"))
	c.cmd = exec.Command("containerd", "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting containerd: %v", err)
	}
	t.Cleanup(c.stop)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(c.sock); err == nil {
			return c
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
	t.Fatalf("containerd did not start:\n%s", b)
	return nil
}

func (c *containerd) endpoint() string { return "unix://" + c.sock }

// stop ends containerd and any shim left behind, and unmounts its state.
func (c *containerd) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	exec.Command("pkill", "-KILL", "-f", "containerd-shim-runc-v2 -namespace k8s.io .*-address "+c.sock).Run()
	exec.Command("sh", "-c", "grep -o '"+c.dir+"[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l").Run()
}
