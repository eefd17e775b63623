package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
)

func inputEvent(typ, code uint16, value int32) []byte {
	b := make([]byte, inputEventSize)
	binary.LittleEndian.PutUint16(b[16:], typ)
	binary.LittleEndian.PutUint16(b[18:], code)
	binary.LittleEndian.PutUint32(b[20:], uint32(value))
	return b
}

func TestReadPowerKey(t *testing.T) {
	var events bytes.Buffer
	events.Write(inputEvent(evKey, 30, 1))       // KEY_A down
	events.Write(inputEvent(0, 0, 0))            // SYN
	events.Write(inputEvent(evKey, keyPower, 0)) // release without a press
	if readPowerKey(bytes.NewReader(events.Bytes())) {
		t.Fatal("reported a press without KEY_POWER down")
	}
	events.Write(inputEvent(evKey, keyPower, 1))
	if !readPowerKey(bytes.NewReader(events.Bytes())) {
		t.Fatal("missed KEY_POWER down")
	}
}

func TestPowerButtonNodes(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	for ev, name := range map[string]string{"event0": "Power Button", "event1": "AT Translated Set 2 keyboard", "event2": "Power Button"} {
		os.MkdirAll(filepath.Join(sys, ev, "device"), 0o755)
		os.WriteFile(filepath.Join(sys, ev, "device", "name"), []byte(name+"\n"), 0o644)
	}
	os.WriteFile(filepath.Join(dev, "event0"), nil, 0o644)
	os.WriteFile(filepath.Join(dev, "event1"), nil, 0o644)
	// event2 has no node yet: devtmpfs has not created it.
	got := powerButtonNodes(sys, dev)
	if len(got) != 1 || got[0] != filepath.Join(dev, "event0") {
		t.Fatalf("powerButtonNodes = %v", got)
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		ws   unix.WaitStatus
		want int32
	}{
		{unix.WaitStatus(3 << 8), 3},
		{unix.WaitStatus(0), 0},
		{unix.WaitStatus(9), 137},
		{unix.WaitStatus(15), 143},
	} {
		if got := exitCode(tc.ws); got != tc.want {
			t.Errorf("exitCode(%#x) = %d, want %d", uint32(tc.ws), got, tc.want)
		}
	}
}

func TestCappedBuffer(t *testing.T) {
	var c cappedBuffer
	chunk := bytes.Repeat([]byte("a"), MaxExecOutput/2+1)
	c.Write(chunk)
	if c.dropped {
		t.Fatal("dropped below the cap")
	}
	if n, _ := c.Write(chunk); n != len(chunk) {
		t.Fatal("Write must report the whole chunk consumed")
	}
	if !c.dropped || c.b.Len() != MaxExecOutput {
		t.Fatalf("len %d dropped %v, want %d true", c.b.Len(), c.dropped, MaxExecOutput)
	}
}

// TestExecProcessOnHost runs the exec path on the host: the reaper's
// wait4(-1) is safe here because this test binary starts no other children
// meanwhile.
func TestExecProcessOnHost(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	r := NewReaper()
	stop := make(chan struct{})
	defer close(stop)
	go r.Run(stop)
	s := NewService(r)
	s.guestExec = true
	ctx := context.Background()

	resp, err := s.ExecProcess(ctx, &api.ExecProcessRequest{
		Args:  []string{"sh", "-c", "cat; echo err >&2; exit 7"},
		Stdin: []byte("from stdin\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ExitCode != 7 || string(resp.Stdout) != "from stdin\n" || string(resp.Stderr) != "err\n" {
		t.Fatalf("resp = %+v", resp)
	}

	// A command that exits at once (the reaper must not lose it).
	for range 20 {
		resp, err := s.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"true"}})
		if err != nil || resp.ExitCode != 0 {
			t.Fatalf("true: %+v, %v", resp, err)
		}
	}

	start := time.Now()
	resp, err = s.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"sh", "-c", "sleep 30 & sleep 30"}, TimeoutMs: 200})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.TimedOut || resp.ExitCode != 137 {
		t.Fatalf("timeout: %+v", resp)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timed-out exec took %v", d)
	}

	big, err := s.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"sh", "-c", "head -c 1100000 /dev/zero"}})
	if err != nil {
		t.Fatal(err)
	}
	if !big.StdoutTruncated || len(big.Stdout) != MaxExecOutput {
		t.Fatalf("big output: %d bytes, truncated %v", len(big.Stdout), big.StdoutTruncated)
	}

	if _, err := s.ExecProcess(ctx, &api.ExecProcessRequest{}); !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty args: %v", err)
	}
	if _, err := s.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"no-such-command-crivm"}}); !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
		t.Errorf("missing command: %v", err)
	}
	// A test build runs GuestRootExec's command outside the container
	// named.
	if r, err := s.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "none", Args: []string{GuestRootExec, "sh", "-c", "exit 3"}}); err != nil || r.ExitCode != 3 {
		t.Errorf("guest-root exec in a test build: %+v, %v; want exit 3", r, err)
	}

	// The release agent (no crivm_guestroot tag) runs nothing outside a
	// container.
	s.guestExec = false
	if _, err := s.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"true"}}); !errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("guest-root exec in a release agent: %v, want FailedPrecondition", err)
	}
	if _, err := s.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "none", Args: []string{GuestRootExec, "true"}}); !errdefs.IsClass(err, errdefs.ErrNotFound) {
		t.Errorf("the guest-root marker in a release agent: %v, want the container's NotFound", err)
	}
	if _, err := s.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "none"}); !errdefs.IsClass(err, errdefs.ErrNotFound) {
		t.Errorf("StartContainer of an unknown container: %v, want NotFound", err)
	}
	if _, err := s.DeleteContainer(ctx, &api.DeleteContainerRequest{ContainerId: "none"}); err != nil {
		t.Errorf("DeleteContainer of an unknown container: %v, want success", err)
	}
	if _, err := s.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "../x", OciSpec: []byte("{}")}); !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
		t.Errorf("CreateContainer with a bad id: %v, want InvalidArgument", err)
	}
}

func TestCreateSandboxValidation(t *testing.T) {
	s := NewService(NewReaper())
	s.etcDir = t.TempDir()
	ctx := context.Background()
	for _, req := range []*api.CreateSandboxRequest{
		{},
		{SandboxId: "a", Mounts: []*api.SharedMount{{Tag: "", MountPoint: "/x"}}},
		{SandboxId: "a", Mounts: []*api.SharedMount{{Tag: "t", MountPoint: "rel"}}},
		{SandboxId: "a", Mounts: []*api.SharedMount{{Tag: "t", MountPoint: "/"}}},
		{SandboxId: "a", Mounts: []*api.SharedMount{{Tag: "t", MountPoint: "/x", FsType: "nfs"}}},
	} {
		if _, err := s.CreateSandbox(ctx, req); !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
			t.Errorf("CreateSandbox(%v) = %v, want InvalidArgument", req, err)
		}
	}
	// Without mounts and hostname it only writes /etc files.
	req := &api.CreateSandboxRequest{SandboxId: "a", Dns: &api.DNSConfig{Servers: []string{"1.1.1.1"}, Searches: []string{"svc"}, Options: []string{"ndots:5"}}}
	if _, err := s.CreateSandbox(ctx, req); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(s.etcDir, "resolv.conf"))
	if string(b) != "nameserver 1.1.1.1\nsearch svc\noptions ndots:5\n" {
		t.Errorf("resolv.conf = %q", b)
	}
	if _, err := s.CreateSandbox(ctx, req); !errdefs.IsClass(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second CreateSandbox: %v, want AlreadyExists", err)
	}
	for range 2 {
		if _, err := s.DestroySandbox(ctx, &api.DestroySandboxRequest{SandboxId: "a"}); err != nil {
			t.Fatalf("DestroySandbox: %v", err)
		}
	}
	if _, err := s.CreateSandbox(ctx, req); err != nil {
		t.Fatalf("CreateSandbox after Destroy: %v", err)
	}
}

func TestKernelParamParsing(t *testing.T) {
	// KernelParam reads /proc/cmdline; on the host it must simply not find
	// crivm's keys.
	if v, ok := KernelParam("crivm.no-such-key"); ok {
		t.Fatalf("found %q", v)
	}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			k, v, _ := strings.Cut(f[0], "=")
			if got, ok := KernelParam(k); !ok || got != v {
				t.Errorf("KernelParam(%q) = %q, %v; want %q", k, got, ok, v)
			}
		}
	}
}
