package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
)

func TestOutputBuffer(t *testing.T) {
	ctx := context.Background()
	b := newOutputBuffer(8)
	b.Write([]byte("hello"))
	c, err := b.Read(ctx, 0, 0, 0)
	if err != nil || string(c.data) != "hello" || c.offset != 0 || c.eof {
		t.Fatalf("first read: %+v, %v", c, err)
	}
	// Not acknowledged yet: the same offset returns the same bytes.
	if c, _ := b.Read(ctx, 0, 2, 0); string(c.data) != "he" {
		t.Fatalf("re-read: %+v", c)
	}
	// Acknowledge 5, then overflow: 12 bytes into an 8-byte buffer.
	if c, _ := b.Read(ctx, 5, 0, time.Millisecond); len(c.data) != 0 || c.eof {
		t.Fatalf("read at the end: %+v", c)
	}
	b.Write([]byte("0123456789ab"))
	c, _ = b.Read(ctx, 5, 0, 0)
	if string(c.data) != "456789ab" || c.offset != 9 || c.dropped != 4 {
		t.Fatalf("after overflow: %+v", c)
	}
	if _, err := b.Read(ctx, 100, 0, 0); !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("offset past the end: %v", err)
	}
	// A blocked read wakes on data, then on close.
	got := make(chan outputChunk, 2)
	go func() {
		c, _ := b.Read(ctx, 17, 0, 0)
		got <- c
		c, _ = b.Read(ctx, 17+uint64(len(c.data)), 0, 0)
		got <- c
	}()
	time.Sleep(20 * time.Millisecond)
	b.Write([]byte("z"))
	if c := <-got; string(c.data) != "z" || c.eof {
		t.Fatalf("woken read: %+v", c)
	}
	b.Close()
	if c := <-got; len(c.data) != 0 || !c.eof {
		t.Fatalf("read after close: %+v", c)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	b2 := newOutputBuffer(8)
	if _, err := b2.Read(cctx, 0, 0, 0); err == nil {
		t.Fatal("a read with a cancelled context returned")
	}
}

// TestReaper: a process started through the reaper gets its status; one
// started outside it (an orphan, as far as the reaper knows) is reaped
// all the same and leaves no zombie.
func TestReaper(t *testing.T) {
	r := NewReaper()
	stop := make(chan struct{})
	defer close(stop)
	// The test binary is not PID 1, so only its own children are reaped.
	orphan := exec.Command("sh", "-c", "exit 3")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	go r.Run(stop)
	ch, err := r.Start(exec.Command("sh", "-c", "exit 7"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ws := <-ch:
		if exitCode(ws) != 7 {
			t.Fatalf("exit %d, want 7", exitCode(ws))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no status for a process started through the reaper")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", orphan.Process.Pid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the unwatched child was not reaped")
		}
	}
}

func TestParseNetConfig(t *testing.T) {
	bad := []struct {
		ifaces []*api.Interface
		routes []*api.Route
	}{
		{ifaces: []*api.Interface{{Mac: "nope"}}},
		{ifaces: []*api.Interface{{Mac: "02:00:00:00:00:01", BootMac: "nope"}}},
		{ifaces: []*api.Interface{{Mac: "02:00:00:00:00:01", Addresses: []string{"10.0.0.1"}}}},
		{ifaces: []*api.Interface{{Mac: "02:00:00:00:00:01"}, {Mac: "02:00:00:00:00:02"}}}, // both eth0
		{ifaces: []*api.Interface{{Name: "a-very-long-interface-name", Mac: "02:00:00:00:00:01"}}},
		{routes: []*api.Route{{Gateway: "10.0.0.1"}}}, // no interface
		{ifaces: []*api.Interface{{Mac: "02:00:00:00:00:01"}}, routes: []*api.Route{{Dest: "10.0.0.0/8"}, {}}},
		{ifaces: []*api.Interface{{Mac: "02:00:00:00:00:01"}}, routes: []*api.Route{{Gateway: "x"}}},
		{ifaces: []*api.Interface{{Mac: "02:00:00:00:00:01"}}, routes: []*api.Route{{Gateway: "10.0.0.1", Device: "eth9"}}},
	}
	for i, b := range bad {
		if _, err := parseNetConfig(b.ifaces, b.routes); !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
			t.Errorf("case %d: %v, want InvalidArgument", i, err)
		}
	}
}

// TestNetConfigApply configures a veth, found by its boot MAC and given
// the pod's, in a network namespace of its own: the path CreateSandbox takes
// with a virtio NIC.
func TestNetConfigApply(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	errc := make(chan error, 1)
	var addrs, routes string
	go func() {
		// The thread is left in the new namespace and never unlocked, so
		// the runtime discards it when the goroutine ends.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		mac, _ := net.ParseMAC("02:c0:ff:ee:00:42")
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth7", HardwareAddr: mac}, PeerName: "peer7"}
		if err := netlink.LinkAdd(veth); err != nil {
			errc <- err
			return
		}
		nc, err := parseNetConfig(
			[]*api.Interface{{Name: "eth0", Mac: "0a:58:0a:58:00:05", BootMac: mac.String(), Mtu: 1400, Addresses: []string{"10.88.0.5/16", "fd00::5/64"}}},
			[]*api.Route{{Gateway: "10.88.0.1"}, {Dest: "169.254.1.1/32"}, {Dest: "10.99.0.0/16", Gateway: "10.88.0.1", Src: "10.88.0.5"}},
		)
		if err != nil {
			errc <- err
			return
		}
		if err := nc.apply(context.Background()); err != nil {
			errc <- err
			return
		}
		out, _ := exec.Command("ip", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		addrs = string(out)
		out, _ = exec.Command("ip", "-o", "link", "show", "dev", "eth0").CombinedOutput()
		addrs += string(out)
		out, _ = exec.Command("ip", "route").CombinedOutput()
		routes = string(out)
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(addrs, "inet 10.88.0.5/16") || !strings.Contains(addrs, "inet6 fd00::5/64") || !strings.Contains(addrs, "link/ether 0a:58:0a:58:00:05") {
		t.Errorf("addresses:\n%s", addrs)
	}
	for _, want := range []string{"default via 10.88.0.1 dev eth0", "169.254.1.1 dev eth0 scope link", "10.99.0.0/16 via 10.88.0.1 dev eth0 src 10.88.0.5"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}
}
