package netns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/test/framework"
)

// tapTopo is a pod namespace whose eth0 is one end of a veth pair; the other
// end is in a second test namespace that plays the host. The test process's
// own namespace is never touched.
type tapTopo struct {
	tag        string
	pod, host  string // namespace paths
	hostVeth   string // the host end's name, in host
	hostMAC    net.HardwareAddr
	podIP, gw  net.IP // 10.236.X.2, 10.236.X.1
	podNet     *net.IPNet
	podNet6    *net.IPNet // fd36:236:X::2/64; nil when IPv6 is off in the namespace
	gw6        net.IP     // fd36:236:X::1
	mtu        int
	removePods func()
}

const (
	testTapMTU   = 1400 // not the default, so that copying it is visible
	testEthType  = 0x88b5
	testTap      = "tap0"
	testPodIf    = "eth0"
	waitForFrame = 5 * time.Second
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// inNSOrFatal runs fn in the namespace at path and fails t on error.
func inNSOrFatal(t *testing.T, path string, fn func() error) {
	t.Helper()
	if err := Do(path, fn); err != nil {
		t.Fatalf("in %s: %v", path, err)
	}
}

// newTapTopo builds the pod and host namespaces and the veth between them.
func newTapTopo(t *testing.T) *tapTopo {
	t.Helper()
	tag := uniqueTag(t)
	x := 1 + int(tag[len(tag)-1])%200 // 10.236.X.0/24; namespaces are private anyway
	tp := &tapTopo{
		tag:      tag,
		hostVeth: tag + "h",
		podIP:    net.IPv4(10, 236, byte(x), 2).To4(),
		gw:       net.IPv4(10, 236, byte(x), 1).To4(),
		podNet:   &net.IPNet{IP: net.IPv4(10, 236, byte(x), 2).To4(), Mask: net.CIDRMask(24, 32)},
		mtu:      testTapMTU,
	}
	pod, err := New("", tag+"p")
	if err != nil {
		t.Fatalf("creating the pod namespace: %v", err)
	}
	host, err := New("", tag+"h")
	if err != nil {
		_ = pod.Remove()
		t.Fatalf("creating the host namespace: %v", err)
	}
	tp.pod, tp.host = pod.Path(), host.Path()
	tp.removePods = func() {
		if err := pod.Remove(); err != nil {
			t.Errorf("removing %s: %v", pod.Path(), err)
		}
		if err := host.Remove(); err != nil {
			t.Errorf("removing %s: %v", host.Path(), err)
		}
	}
	t.Cleanup(tp.removePods)

	podFile, err := os.Open(tp.pod)
	if err != nil {
		t.Fatal(err)
	}
	defer podFile.Close()
	inNSOrFatal(t, tp.host, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: tp.hostVeth, MTU: tp.mtu}, PeerName: testPodIf}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("adding veth pair: %w", err)
		}
		peer, err := netlink.LinkByName(testPodIf)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(podFile.Fd())); err != nil {
			return fmt.Errorf("moving %s into the pod: %w", testPodIf, err)
		}
		hl, err := netlink.LinkByName(tp.hostVeth)
		if err != nil {
			return err
		}
		tp.hostMAC = hl.Attrs().HardwareAddr
		if err := netlink.LinkSetMTU(hl, tp.mtu); err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: tp.gw, Mask: net.CIDRMask(24, 32)}}
		if err := netlink.AddrAdd(hl, addr); err != nil {
			return fmt.Errorf("adding %s: %w", addr, err)
		}
		return netlink.LinkSetUp(hl)
	})
	inNSOrFatal(t, tp.pod, func() error {
		l, err := netlink.LinkByName(testPodIf)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMTU(l, tp.mtu); err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: tp.podNet}); err != nil {
			return fmt.Errorf("adding %s: %w", tp.podNet, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: tp.gw}); err != nil {
			return fmt.Errorf("adding the default route: %w", err)
		}
		// IPv6 too, when the namespace has it.
		n6 := &net.IPNet{IP: net.ParseIP(fmt.Sprintf("fd36:236:%x::2", x)), Mask: net.CIDRMask(64, 128)}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: n6, Flags: unix.IFA_F_NODAD}); err != nil {
			t.Logf("no IPv6 in the pod namespace: adding %s: %v", n6, err)
			return nil
		}
		gw6 := net.ParseIP(fmt.Sprintf("fd36:236:%x::1", x))
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw6}); err != nil {
			return fmt.Errorf("adding the IPv6 default route: %w", err)
		}
		tp.podNet6, tp.gw6 = n6, gw6
		return nil
	})
	return tp
}

// podLink looks up name in the pod namespace; nil when it does not exist.
func (tp *tapTopo) podLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	var l netlink.Link
	inNSOrFatal(t, tp.pod, func() error {
		var err error
		l, err = netlink.LinkByName(name)
		if isLinkNotFound(err) {
			l, err = nil, nil
		}
		return err
	})
	return l
}

// ingressQdiscs counts the ingress qdiscs of name in the pod namespace.
func (tp *tapTopo) ingressQdiscs(t *testing.T, name string) int {
	t.Helper()
	n := 0
	inNSOrFatal(t, tp.pod, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		qs, err := netlink.QdiscList(l)
		if err != nil {
			return err
		}
		for _, q := range qs {
			if _, ok := q.(*netlink.Ingress); ok {
				n++
			}
		}
		return nil
	})
	return n
}

// readFrame reads frames from the tap until match accepts one or the wait
// runs out. It returns the number of frames it skipped.
func readFrame(t *testing.T, f *os.File, match func([]byte) bool) ([]byte, int) {
	t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(waitForFrame)); err != nil {
		t.Fatalf("setting a read deadline on the tap: %v", err)
	}
	buf := make([]byte, 65536)
	skipped := 0
	for {
		n, err := f.Read(buf)
		if err != nil {
			t.Fatalf("reading from the tap (after %d other frames): %v", skipped, err)
		}
		if match(buf[:n]) {
			return append([]byte(nil), buf[:n]...), skipped
		}
		skipped++
	}
}

// arpOrUDPTo matches an ARP request for ip or an IPv4 UDP datagram to ip.
func arpOrUDPTo(ip net.IP) func([]byte) bool {
	return func(fr []byte) bool {
		if len(fr) < 42 {
			return false
		}
		switch binary.BigEndian.Uint16(fr[12:14]) {
		case unix.ETH_P_ARP:
			return binary.BigEndian.Uint16(fr[20:22]) == 1 && net.IP(fr[38:42]).Equal(ip)
		case unix.ETH_P_IP:
			return fr[23] == unix.IPPROTO_UDP && net.IP(fr[30:34]).Equal(ip)
		}
		return false
	}
}

func TestMirrorTap(t *testing.T) {
	requireRoot(t)
	before, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	tp := newTapTopo(t)
	eth0 := tp.podLink(t, testPodIf)

	gn, err := MirrorTap(tp.pod, testPodIf, testTap)
	if err != nil {
		t.Fatalf("MirrorTap: %v", err)
	}
	t.Logf("guest network: %+v", gn)

	// What the guest must configure.
	if gn.Tap != testTap {
		t.Errorf("Tap = %q, want %q", gn.Tap, testTap)
	}
	if !bytes.Equal(gn.MAC, eth0.Attrs().HardwareAddr) {
		t.Errorf("MAC = %s, want eth0's %s", gn.MAC, eth0.Attrs().HardwareAddr)
	}
	if gn.MTU != tp.mtu {
		t.Errorf("MTU = %d, want %d", gn.MTU, tp.mtu)
	}
	foundAddr, foundAddr6 := false, tp.podNet6 == nil
	for _, a := range gn.Addrs {
		if a.String() == tp.podNet.String() {
			foundAddr = true
		}
		if tp.podNet6 != nil && a.String() == tp.podNet6.String() {
			foundAddr6 = true
		}
		if a.IP.IsLinkLocalUnicast() {
			t.Errorf("Addrs has the link-local %s", a)
		}
	}
	if !foundAddr || !foundAddr6 {
		t.Errorf("Addrs = %v, want %s and %v among them", gn.Addrs, tp.podNet, tp.podNet6)
	}
	foundDefault, foundDefault6 := false, tp.gw6 == nil
	for _, r := range gn.Routes {
		if r.Dst == nil && r.Gw.Equal(tp.gw) {
			foundDefault = true
		}
		if r.Dst == nil && tp.gw6 != nil && r.Gw.Equal(tp.gw6) {
			foundDefault6 = true
		}
		if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() {
			t.Errorf("Routes has the kernel's link-local route %s", r.Dst)
		}
		if r.Dst != nil && r.Dst.Contains(tp.podIP) && r.Gw == nil {
			t.Errorf("Routes has the kernel's connected route %s", r.Dst)
		}
	}
	if !foundDefault || !foundDefault6 {
		t.Errorf("Routes = %+v, want the defaults via %s and %v", gn.Routes, tp.gw, tp.gw6)
	}

	// The tap: a persistent, up tap with the veth's MTU; eth0 keeps its IP
	// and has the ingress qdisc, as does the tap.
	tl := tp.podLink(t, testTap)
	if tl == nil {
		t.Fatal("no tap after MirrorTap")
	}
	if tt, ok := tl.(*netlink.Tuntap); !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
		t.Errorf("%s is a %s, want a tap", testTap, tl.Type())
	}
	if tl.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s is down", testTap)
	}
	if tl.Attrs().MTU != tp.mtu {
		t.Errorf("%s MTU = %d, want %d", testTap, tl.Attrs().MTU, tp.mtu)
	}
	if n := tp.ingressQdiscs(t, testPodIf); n != 1 {
		t.Errorf("%s has %d ingress qdiscs, want 1", testPodIf, n)
	}
	if n := tp.ingressQdiscs(t, testTap); n != 1 {
		t.Errorf("%s has %d ingress qdiscs, want 1", testTap, n)
	}
	var kept bool
	inNSOrFatal(t, tp.pod, func() error {
		addrs, err := netlink.AddrList(eth0, netlink.FAMILY_V4)
		for _, a := range addrs {
			kept = kept || a.IPNet.String() == tp.podNet.String()
		}
		return err
	})
	if !kept {
		t.Errorf("%s lost %s", testPodIf, tp.podNet)
	}

	f, err := OpenTap(tp.pod, testTap, false)
	if err != nil {
		t.Fatalf("OpenTap: %v", err)
	}
	defer func() { f.Close() }()

	// A single-queue tap takes one fd: a second OpenTap waits for the
	// first to close (a forked child's copy closes at its exec), and
	// fails once tapBusyWait has passed.
	start := time.Now()
	if f2, err := OpenTap(tp.pod, testTap, false); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		if f2 != nil {
			f2.Close()
		}
		t.Errorf("second OpenTap: %v, want FailedPrecondition", err)
	}
	if waited := time.Since(start); waited < tapBusyWait {
		t.Errorf("second OpenTap failed after %v, want after tapBusyWait (%v)", waited, tapBusyWait)
	}
	first := f
	time.AfterFunc(100*time.Millisecond, func() { first.Close() })
	f, err = OpenTap(tp.pod, testTap, false)
	if err != nil {
		t.Fatalf("OpenTap while the first fd closes: %v", err)
	}

	// host -> pod: the host resolves the pod IP with an ARP request, which
	// eth0's filter sends out of the tap instead of to the pod's stack.
	var conn net.Conn
	inNSOrFatal(t, tp.host, func() error {
		var err error
		conn, err = net.Dial("udp", net.JoinHostPort(tp.podIP.String(), "9"))
		if err != nil {
			return err
		}
		_, err = conn.Write([]byte("crivm-udp-" + tp.tag))
		return err
	})
	defer conn.Close()
	fr, skipped := readFrame(t, f, arpOrUDPTo(tp.podIP))
	if !bytes.Equal(fr[6:12], tp.hostMAC) {
		t.Errorf("frame from %s, want the host veth %s", net.HardwareAddr(fr[6:12]), tp.hostMAC)
	}
	t.Logf("tap got a %d-byte frame of type %#04x for %s (skipped %d others)", len(fr), binary.BigEndian.Uint16(fr[12:14]), tp.podIP, skipped)

	// guest -> host: a frame written to the tap leaves through eth0 and
	// arrives on the host end.
	var hostIdx int
	var sock int
	inNSOrFatal(t, tp.host, func() error {
		hl, err := netlink.LinkByName(tp.hostVeth)
		if err != nil {
			return err
		}
		hostIdx = hl.Attrs().Index
		sock, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(testEthType)))
		if err != nil {
			return fmt.Errorf("opening a packet socket: %w", err)
		}
		return unix.Bind(sock, &unix.SockaddrLinklayer{Protocol: htons(testEthType), Ifindex: hostIdx})
	})
	defer unix.Close(sock)
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	marker := []byte("crivm-tap-marker-" + tp.tag)
	out := make([]byte, 0, 64)
	out = append(out, tp.hostMAC...)
	out = append(out, gn.MAC...)
	out = binary.BigEndian.AppendUint16(out, testEthType)
	out = append(out, marker...)
	for len(out) < 60 {
		out = append(out, 0)
	}
	if _, err := f.Write(out); err != nil {
		t.Fatalf("writing to the tap: %v", err)
	}
	buf := make([]byte, 2048)
	got := false
	for deadline := time.Now().Add(waitForFrame); !got && time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(sock, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("receiving on %s: %v", tp.hostVeth, err)
		}
		got = bytes.Contains(buf[:n], marker) && bytes.Equal(buf[6:12], gn.MAC)
	}
	if !got {
		t.Errorf("the frame written to the tap did not arrive on the host veth %s", tp.hostVeth)
	}

	// vnet header on request.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	fv, err := OpenTap(tp.pod, testTap, true)
	if err != nil {
		t.Fatalf("OpenTap with vnet header: %v", err)
	}
	var flags uint16
	rc, err := fv.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			ierr = err
			return
		}
		ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr)
		flags = ifr.Uint16()
	}); err != nil || ierr != nil {
		t.Fatalf("TUNGETIFF: %v %v", err, ierr)
	}
	if want := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR); flags&want != want {
		t.Errorf("tap flags %#x, want %#x set", flags, want)
	}
	fv.Close()

	// RemoveTap: no tap, no qdisc, and the pod's stack gets frames again.
	if err := RemoveTap(tp.pod, testPodIf, testTap); err != nil {
		t.Fatalf("RemoveTap: %v", err)
	}
	if tp.podLink(t, testTap) != nil {
		t.Errorf("%s still exists after RemoveTap", testTap)
	}
	if n := tp.ingressQdiscs(t, testPodIf); n != 0 {
		t.Errorf("%s still has %d ingress qdiscs after RemoveTap", testPodIf, n)
	}
	if err := RemoveTap(tp.pod, testPodIf, testTap); err != nil {
		t.Errorf("second RemoveTap: %v", err)
	}
	var pc net.PacketConn
	inNSOrFatal(t, tp.pod, func() error {
		var err error
		pc, err = net.ListenPacket("udp", net.JoinHostPort(tp.podIP.String(), "9999"))
		return err
	})
	defer pc.Close()
	inNSOrFatal(t, tp.host, func() error {
		c, err := net.Dial("udp", net.JoinHostPort(tp.podIP.String(), "9999"))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("back"))
		return err
	})
	_ = pc.SetReadDeadline(time.Now().Add(waitForFrame))
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "back" {
		t.Errorf("after RemoveTap, the pod's stack did not receive a datagram from the host: %v", err)
	}
	pc.Close()
	conn.Close()

	tp.removePods()
	if err := RemoveTap(tp.pod, testPodIf, testTap); err != nil {
		t.Errorf("RemoveTap after the namespace is gone: %v", err)
	}
	checkNoLeaks(t, before, tp.tag)
}

func TestMirrorTapMissing(t *testing.T) {
	requireRoot(t)
	before, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	tp := newTapTopo(t)

	_, err = MirrorTap(tp.pod, "nope0", "tap1")
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "nope0") {
		t.Errorf("MirrorTap on a missing veth: %v, want NotFound naming nope0", err)
	}
	if tp.podLink(t, "tap1") != nil {
		t.Error("a failed MirrorTap left tap1")
	}
	if _, err := MirrorTap(tp.pod+"-missing", testPodIf, "tap1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("MirrorTap in a missing namespace: %v, want NotFound", err)
	}
	if _, err := OpenTap(tp.pod, "tap1", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("OpenTap of a missing tap: %v, want NotFound", err)
	}
	if tp.podLink(t, "tap1") != nil {
		t.Error("OpenTap of a missing tap created it")
	}
	if _, err := OpenTap(tp.pod, testPodIf, false); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("OpenTap of a veth: %v, want FailedPrecondition", err)
	}
	if err := RemoveTap(tp.pod, "nope0", "tap1"); err != nil {
		t.Errorf("RemoveTap of what never existed: %v", err)
	}
	if err := RemoveTap(tp.pod, "tap1", testPodIf); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("RemoveTap naming the veth as the tap: %v, want FailedPrecondition", err)
	}
	if tp.podLink(t, testPodIf) == nil {
		t.Errorf("RemoveTap deleted %s", testPodIf)
	}
	tp.removePods()
	checkNoLeaks(t, before, tp.tag)
}

// TestCreateTapThenMirror: the tap a VMM opens before CNI ran is created up
// and unmirrored; a second one is refused; mirroring a missing veth fails
// and leaves the tap alone; once the veth exists, MirrorExistingTap gives the
// tap its MTU and both ingress qdiscs, and RemoveTap takes all of it away.
func TestCreateTapThenMirror(t *testing.T) {
	requireRoot(t)
	before, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	tp := newTapTopo(t)

	// 1. Before CNI: a tap, up, with no qdisc.
	if err := CreateTap(tp.pod, "tap1"); err != nil {
		t.Fatal(err)
	}
	tl := tp.podLink(t, "tap1")
	if tl == nil || tl.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("tap1 after CreateTap: %+v", tl)
	}
	if n := tp.ingressQdiscs(t, "tap1"); n != 0 {
		t.Errorf("tap1 has %d ingress qdiscs before mirroring", n)
	}
	if err := CreateTap(tp.pod, "tap1"); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("a second CreateTap: %v, want AlreadyExists", err)
	}

	// 2. Mirroring a veth that does not exist fails; the tap stays as it was.
	if _, err := MirrorExistingTap(tp.pod, "nope0", "tap1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("MirrorExistingTap on a missing veth: %v, want NotFound", err)
	}
	if tp.podLink(t, "tap1") == nil || tp.ingressQdiscs(t, "tap1") != 0 {
		t.Error("a failed MirrorExistingTap changed tap1")
	}

	// 3. With the veth: the guest's network, the tap's MTU, both qdiscs.
	gn, err := MirrorExistingTap(tp.pod, testPodIf, "tap1")
	if err != nil {
		t.Fatal(err)
	}
	if gn.MTU != tp.mtu || len(gn.Addrs) == 0 || !gn.Addrs[0].IP.Equal(tp.podIP) {
		t.Errorf("guest network %+v, want MTU %d and %s", gn, tp.mtu, tp.podIP)
	}
	if got := tp.podLink(t, "tap1").Attrs().MTU; got != tp.mtu {
		t.Errorf("tap1 MTU %d, want the veth's %d", got, tp.mtu)
	}
	if tp.ingressQdiscs(t, "tap1") != 1 || tp.ingressQdiscs(t, testPodIf) != 1 {
		t.Error("the mirror lacks an ingress qdisc")
	}

	// 4. RemoveTap undoes both.
	if err := RemoveTap(tp.pod, testPodIf, "tap1"); err != nil {
		t.Fatal(err)
	}
	if tp.podLink(t, "tap1") != nil || tp.ingressQdiscs(t, testPodIf) != 0 {
		t.Error("RemoveTap left the tap or the veth's qdisc")
	}
	tp.removePods()
	checkNoLeaks(t, before, tp.tag)
}

func TestMirrorTapFailureLeavesNothing(t *testing.T) {
	requireRoot(t)
	before, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	tp := newTapTopo(t)

	// eth0 has an ingress qdisc already: the tap is made, then undone.
	inNSOrFatal(t, tp.pod, func() error {
		l, err := netlink.LinkByName(testPodIf)
		if err != nil {
			return err
		}
		return addIngressQdisc(l)
	})
	_, err = MirrorTap(tp.pod, testPodIf, testTap)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("MirrorTap on a veth with an ingress qdisc: %v, want FailedPrecondition", err)
	}
	t.Logf("error: %v", err)
	if tp.podLink(t, testTap) != nil {
		t.Errorf("a failed MirrorTap left %s", testTap)
	}
	if n := tp.ingressQdiscs(t, testPodIf); n != 1 {
		t.Errorf("%s has %d ingress qdiscs, want its own 1 untouched", testPodIf, n)
	}
	inNSOrFatal(t, tp.pod, func() error {
		l, err := netlink.LinkByName(testPodIf)
		if err != nil {
			return err
		}
		return delIngressQdisc(l)
	})

	// An interface named like the tap exists: not ours, left alone. (A veth:
	// the dummy driver may be missing.)
	inNSOrFatal(t, tp.pod, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: testTap}, PeerName: testTap + "peer"})
	})
	if _, err := MirrorTap(tp.pod, testPodIf, testTap); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("MirrorTap over an existing %s: %v, want AlreadyExists", testTap, err)
	}
	if l := tp.podLink(t, testTap); l == nil || l.Type() != "veth" {
		t.Errorf("MirrorTap touched the existing %s: %v", testTap, l)
	}
	if n := tp.ingressQdiscs(t, testPodIf); n != 0 {
		t.Errorf("a failed MirrorTap left %d ingress qdiscs on %s", n, testPodIf)
	}
	if err := RemoveTap(tp.pod, testPodIf, testTap); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("RemoveTap of a veth named like the tap: %v, want FailedPrecondition", err)
	}
	tp.removePods()
	checkNoLeaks(t, before, tp.tag)
}

func TestTapInvalidArguments(t *testing.T) {
	const p = "/var/run/netns/does-not-matter"
	cases := []struct{ ns, veth, tap string }{
		{"", "eth0", "tap0"},
		{p, "", "tap0"},
		{p, "eth0", ""},
		{p, "eth0", "eth0"},
		{p, "eth0", "tap%d"},
		{p, "eth0", "a-name-longer-than-15"},
		{p, "eth/0", "tap0"},
	}
	for _, c := range cases {
		if _, err := MirrorTap(c.ns, c.veth, c.tap); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("MirrorTap(%q, %q, %q): %v, want InvalidArgument", c.ns, c.veth, c.tap, err)
		}
		if err := RemoveTap(c.ns, c.veth, c.tap); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("RemoveTap(%q, %q, %q): %v, want InvalidArgument", c.ns, c.veth, c.tap, err)
		}
	}
	for _, c := range []struct{ ns, tap string }{{"", "tap0"}, {p, ""}, {p, "tap%d"}} {
		if _, err := OpenTap(c.ns, c.tap, false); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("OpenTap(%q, %q): %v, want InvalidArgument", c.ns, c.tap, err)
		}
	}
}
