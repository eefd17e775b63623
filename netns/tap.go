package netns

// The vm handler's pod networking, after Kata Containers' "tcfilter" model.
//
// CNI gives the pod a veth-like interface (eth0) in its namespace, with the
// pod's addresses and routes. The guest cannot use that interface directly,
// so MirrorTap puts a tap device next to it and cross-connects the two with
// tc:
//
//   - every frame that arrives on the veth (sent by the host side towards the
//     pod) is redirected, before the namespace's IP stack sees it, out of the
//     tap, i.e. to the VMM and the guest NIC;
//   - every frame that arrives on the tap (sent by the guest NIC) is
//     redirected out of the veth, to the host side.
//
// Both redirects are u32 match-all filters (protocol ETH_P_ALL) on an ingress
// qdisc, with a mirred egress-redirect action that steals the frame. The
// namespace is a wire between the veth and the guest: the veth keeps its
// addresses and routes (Kata leaves them as well, and so the pod's CNI state
// stays as the plugins wrote it), but its stack never receives a frame from
// the host side. What the namespace's own stack sends still leaves through
// the veth (egress is not redirected), and what it sends out of the tap goes
// into the guest.
//
// The guest NIC must use the veth's MAC address. Frames are forwarded as they
// are, without any rewriting: the host side resolved the pod's IPs to the
// veth's MAC (ARP, neighbour discovery, and plugins such as bridge with
// macspoofchk pin it), so frames towards the pod carry that MAC as their
// destination, and the guest only accepts them, and its replies are only
// accepted by the host side, when the guest NIC has that MAC. The tap's own
// MAC is never seen on the wire.
//
// A VM can boot while CNI runs: CreateTap makes the tap first, the guest NIC
// boots with a placeholder MAC, MirrorExistingTap connects the tap once the
// veth exists, and the guest agent then gives its NIC the veth's MAC before
// any address is configured.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
)

// tunDevice is the tun/tap clone device.
const tunDevice = "/dev/net/tun"

// ingressHandle is the handle of an ingress qdisc, ffff:.
var ingressHandle = netlink.MakeHandle(0xffff, 0)

// GuestNetwork is what the guest needs to take over the pod's interface.
type GuestNetwork struct {
	Tap    string           // tap device name in the pod netns
	MAC    net.HardwareAddr // the CNI veth's MAC: the guest NIC must use it
	MTU    int
	Addrs  []*net.IPNet // the veth's global addresses (v4 and v6)
	Routes []Route      // the veth's routes: Dst (nil = default), Gw, Src
}

// Route is one of the veth's routes, for the guest to add on its NIC. A
// route without Gw is a link route: its destination is on the link itself
// (Calico's 169.254.1.1/32, for instance, which its default route uses as
// the gateway). Routes the kernel derives from an address (proto kernel,
// such as 10.0.0.0/24 for 10.0.0.5/24, and fe80::/64) are left out: the
// guest kernel creates them when it adds Addrs.
type Route struct {
	Dst *net.IPNet // nil: the default route of the family of Gw (or Src)
	Gw  net.IP     // nil: a link route
	Src net.IP     // the preferred source address, nil when unset
}

// MirrorTap creates tap `tap` in the netns at nsPath, and with tc ingress
// qdiscs plus u32 match-all filters with mirred egress-redirect actions sends
// every frame arriving on `veth` out of the tap and every frame arriving on
// the tap out of the veth. Returns what the guest must configure. On failure
// it leaves nothing (no tap, no qdisc).
//
// The tap is persistent (it outlives every fd, so a VMM opens it later with
// OpenTap), up, and has the veth's MTU. Until a VMM has it open it has no
// carrier, and frames redirected to it are dropped.
//
// MirrorTap fails with ErrNotFound when the namespace or veth does not
// exist, with ErrAlreadyExists when an interface named tap exists, and with
// ErrFailedPrecondition when the veth already has an ingress qdisc (which
// MirrorTap would otherwise have to share and RemoveTap would delete).
func MirrorTap(nsPath, veth, tap string) (*GuestNetwork, error) {
	if err := checkTapArgs(nsPath, veth, tap); err != nil {
		return nil, err
	}
	var gn *GuestNetwork
	err := inNS(nsPath, func() error {
		var err error
		gn, err = mirrorTap(veth, tap)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mirroring %s to tap %s in %s: %w", veth, tap, nsPath, err)
	}
	return gn, nil
}

// mirrorTap does MirrorTap's work in the calling thread's namespace.
func mirrorTap(veth, tap string) (*GuestNetwork, error) {
	if _, err := lookupVeth(veth); err != nil {
		return nil, err
	}
	if err := createTap(tap); err != nil {
		return nil, err
	}
	gn, err := mirrorExisting(veth, tap)
	if err != nil {
		return nil, errors.Join(err, delTapByName(tap))
	}
	return gn, nil
}

// CreateTap creates the persistent tap `tap`, up, in the netns at nsPath,
// for a VMM to open before the pod's network exists; MirrorExistingTap
// connects it once CNI made the veth. It fails with ErrAlreadyExists when
// an interface named tap exists, and leaves nothing on failure.
func CreateTap(nsPath, tap string) error {
	if nsPath == "" {
		return errdefs.InvalidArgument("network namespace path is empty")
	}
	if err := checkIfName("tap", tap); err != nil {
		return err
	}
	if err := inNS(nsPath, func() error { return createTap(tap) }); err != nil {
		return fmt.Errorf("creating tap %s in %s: %w", tap, nsPath, err)
	}
	return nil
}

// MirrorExistingTap is MirrorTap for a tap CreateTap made: it gives the tap
// the veth's MTU and cross-connects the two. On failure the tap stays and
// the veth has no qdisc of ours.
func MirrorExistingTap(nsPath, veth, tap string) (*GuestNetwork, error) {
	if err := checkTapArgs(nsPath, veth, tap); err != nil {
		return nil, err
	}
	var gn *GuestNetwork
	err := inNS(nsPath, func() error {
		var err error
		gn, err = mirrorExisting(veth, tap)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mirroring %s to tap %s in %s: %w", veth, tap, nsPath, err)
	}
	return gn, nil
}

func lookupVeth(veth string) (netlink.Link, error) {
	vl, err := netlink.LinkByName(veth)
	if err != nil {
		if isLinkNotFound(err) {
			return nil, errdefs.NotFound("interface %s not found", veth)
		}
		return nil, fmt.Errorf("looking up %s: %w", veth, err)
	}
	if len(vl.Attrs().HardwareAddr) != 6 {
		return nil, errdefs.FailedPrecondition("interface %s has no Ethernet address (type %s)", veth, vl.Type())
	}
	return vl, nil
}

// createTap creates the persistent tap, up, in the calling thread's
// namespace.
func createTap(tap string) error {
	if _, err := netlink.LinkByName(tap); err == nil {
		return errdefs.AlreadyExists("interface %s already exists", tap)
	} else if !isLinkNotFound(err) {
		return fmt.Errorf("looking up %s: %w", tap, err)
	}
	// TUN_EXCL: fail rather than attach to a tap that appeared since the
	// check above (one that is not ours to set up or delete).
	tt := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: tap},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_TUN_EXCL,
		Queues:    1,
	}
	if err := netlink.LinkAdd(tt); err != nil {
		return fmt.Errorf("creating tap %s: %w", tap, err)
	}
	// The tap is persistent by now; the fds that created it are not needed.
	for _, f := range tt.Fds {
		_ = f.Close()
	}
	tl, err := netlink.LinkByName(tap)
	if err != nil {
		return errors.Join(fmt.Errorf("looking up the new tap %s: %w", tap, err), delTapByName(tap))
	}
	if err := netlink.LinkSetUp(tl); err != nil {
		return errors.Join(fmt.Errorf("bringing %s up: %w", tap, err), delTapByName(tap))
	}
	return nil
}

// mirrorExisting cross-connects veth and the existing tap in the calling
// thread's namespace and returns what the guest must configure. On failure
// the veth has no qdisc of ours.
func mirrorExisting(veth, tap string) (gn *GuestNetwork, err error) {
	vl, err := lookupVeth(veth)
	if err != nil {
		return nil, err
	}
	tl, err := netlink.LinkByName(tap)
	if err != nil {
		if isLinkNotFound(err) {
			return nil, errdefs.NotFound("tap %s not found", tap)
		}
		return nil, fmt.Errorf("looking up %s: %w", tap, err)
	}
	if gn, err = guestNetwork(vl); err != nil {
		return nil, err
	}
	gn.Tap = tap
	if err := netlink.LinkSetMTU(tl, gn.MTU); err != nil {
		return nil, fmt.Errorf("setting the MTU of %s to %d: %w", tap, gn.MTU, err)
	}
	// guest -> host first, so that no frame towards the guest is redirected
	// before the way back exists. The tap's qdisc and filter go with the tap.
	if err := addIngressQdisc(tl); err != nil {
		return nil, fmt.Errorf("adding ingress qdisc on %s: %w", tap, err)
	}
	if err := addRedirect(tl, vl); err != nil {
		return nil, errors.Join(fmt.Errorf("adding redirect filter from %s to %s: %w", tap, veth, err), delIngressQdisc(tl))
	}
	if err := addIngressQdisc(vl); err != nil {
		err = errors.Join(err, delIngressQdisc(tl))
		if errors.Is(err, unix.EEXIST) {
			return nil, errdefs.Newf(errdefs.ErrFailedPrecondition, "adding ingress qdisc on %s: %w (it already has an ingress or clsact qdisc)", veth, err)
		}
		return nil, fmt.Errorf("adding ingress qdisc on %s: %w", veth, err)
	}
	if err := addRedirect(vl, tl); err != nil {
		return nil, errors.Join(fmt.Errorf("adding redirect filter from %s to %s: %w", veth, tap, err), delIngressQdisc(vl), delIngressQdisc(tl))
	}
	return gn, nil
}

// guestNetwork reads the MAC, MTU, global addresses and routes of l.
func guestNetwork(l netlink.Link) (*GuestNetwork, error) {
	a := l.Attrs()
	gn := &GuestNetwork{
		MAC: append(net.HardwareAddr(nil), a.HardwareAddr...),
		MTU: a.MTU,
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("listing the addresses of %s: %w", a.Name, err)
	}
	for _, ad := range addrs {
		if ad.Scope != unix.RT_SCOPE_UNIVERSE || ad.IPNet == nil {
			continue
		}
		gn.Addrs = append(gn.Addrs, &net.IPNet{IP: append(net.IP(nil), ad.IP...), Mask: append(net.IPMask(nil), ad.Mask...)})
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return netlink.RouteList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("listing the routes of %s: %w", a.Name, err)
	}
	for _, r := range routes {
		// RouteList returns the main table only.
		if r.Type != unix.RTN_UNICAST || r.Protocol == unix.RTPROT_KERNEL {
			continue
		}
		gr := Route{Dst: r.Dst, Gw: r.Gw, Src: r.Src}
		if gr.Dst != nil {
			if ones, _ := gr.Dst.Mask.Size(); ones == 0 {
				gr.Dst = nil
			}
		}
		gn.Routes = append(gn.Routes, gr)
	}
	return gn, nil
}

// addIngressQdisc adds the ingress qdisc, ffff:, to l. It fails with EEXIST
// when l has an ingress or clsact qdisc.
func addIngressQdisc(l netlink.Link) error {
	return netlink.QdiscAdd(&netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index,
		Handle:    ingressHandle,
		Parent:    netlink.HANDLE_INGRESS,
	}})
}

// delIngressQdisc deletes l's ingress qdisc, with its filters, when there is
// one. A clsact qdisc is left alone.
func delIngressQdisc(l netlink.Link) error {
	qs, err := retryDump(func() ([]netlink.Qdisc, error) { return netlink.QdiscList(l) })
	if err != nil {
		if isLinkNotFound(err) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("listing qdiscs: %w", err)
	}
	for _, q := range qs {
		if _, ok := q.(*netlink.Ingress); !ok {
			continue
		}
		if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
			return err
		}
	}
	return nil
}

// addRedirect adds to from's ingress qdisc a u32 filter that matches every
// frame (protocol ETH_P_ALL, the match-all selector) and redirects it to
// to's egress, stealing it from from's stack.
func addRedirect(from, to netlink.Link) error {
	return netlink.FilterAdd(&netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    ingressHandle,
			Protocol:  unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR,
			Ifindex:      to.Attrs().Index,
		}},
	})
}

// OpenTap opens the existing tap in the netns for a VMM and returns the fd
// (TUNSETIFF with IFF_TAP|IFF_NO_PI, and IFF_VNET_HDR when vnetHdr), to pass to QEMU as `-netdev tap,fd=N`.
//
// The tap must exist: OpenTap fails with ErrNotFound rather than let
// TUNSETIFF create a new, unmirrored tap, and with ErrFailedPrecondition when
// the interface is not a tap or another fd has it open (a single-queue tap
// takes one) for longer than tapBusyWait. Closing the file detaches it; the
// tap stays.
//
// The file is in non-blocking mode and registered with Go's poller, so its
// Read and Write honour deadlines. Handing it to a child through
// exec.Cmd.ExtraFiles switches it to blocking mode (os.File.Fd does);
// QEMU sets the mode it wants itself.
func OpenTap(nsPath, tap string, vnetHdr bool) (*os.File, error) {
	if nsPath == "" {
		return nil, errdefs.InvalidArgument("network namespace path is empty")
	}
	if err := checkIfName("tap", tap); err != nil {
		return nil, err
	}
	var f *os.File
	deadline := time.Now().Add(tapBusyWait)
	for {
		err := inNS(nsPath, func() error {
			var err error
			f, err = openTap(tap, vnetHdr)
			return err
		})
		if errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("opening tap %s in %s: %w", tap, nsPath, err)
		}
		return f, nil
	}
}

// tapBusyWait bounds OpenTap's wait for a tap another descriptor holds: a
// child the daemon forks (QEMU, a shim, a CNI plugin) holds copies of the
// daemon's descriptors until its exec closes them, so the descriptor that
// created a tap (CreateTap) can keep it attached a moment after the daemon
// closed it.
const tapBusyWait = time.Second

// openTap does OpenTap's work in the calling thread's namespace.
func openTap(tap string, vnetHdr bool) (*os.File, error) {
	l, err := netlink.LinkByName(tap)
	if err != nil {
		if isLinkNotFound(err) {
			return nil, errdefs.NotFound("tap %s not found", tap)
		}
		return nil, fmt.Errorf("looking up %s: %w", tap, err)
	}
	if tt, ok := l.(*netlink.Tuntap); !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
		return nil, errdefs.FailedPrecondition("interface %s is not a tap device (type %s)", tap, l.Type())
	}
	// The clone device binds to the opening thread's namespace, which is
	// where TUNSETIFF looks the name up.
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", tunDevice, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = unix.Close(fd)
		}
	}()
	ifr, err := unix.NewIfreq(tap)
	if err != nil {
		return nil, errdefs.InvalidArgument("tap name %q: %v", tap, err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if vnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, errdefs.Newf(errdefs.ErrFailedPrecondition, "attaching to %s: %w (another fd has it open)", tap, err)
		}
		return nil, fmt.Errorf("attaching to %s (TUNSETIFF): %w", tap, err)
	}
	// Between the lookup and TUNSETIFF the tap may have gone and TUNSETIFF
	// made a new one in its place, which closing fd destroys again.
	if l2, err := netlink.LinkByName(tap); err != nil || l2.Attrs().Index != l.Attrs().Index {
		return nil, errdefs.NotFound("tap %s disappeared while it was being opened", tap)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("setting %s non-blocking: %w", tap, err)
	}
	ok = true
	return os.NewFile(uintptr(fd), tunDevice+":"+tap), nil
}

// RemoveTap deletes the tap (its filters go with it) and the veth's ingress qdisc. Idempotent.
//
// A missing namespace, veth, tap or qdisc is not an error. RemoveTap refuses
// (ErrFailedPrecondition) to delete an interface named tap that is not a
// tun/tap device. The veth's redirect goes first, so frames from the host
// side reach the namespace's stack again rather than a dying tap.
func RemoveTap(nsPath, veth, tap string) error {
	if err := checkTapArgs(nsPath, veth, tap); err != nil {
		return err
	}
	err := inNS(nsPath, func() error {
		var errs []error
		if vl, err := netlink.LinkByName(veth); err == nil {
			if err := delIngressQdisc(vl); err != nil {
				errs = append(errs, fmt.Errorf("deleting ingress qdisc on %s: %w", veth, err))
			}
		} else if !isLinkNotFound(err) {
			errs = append(errs, fmt.Errorf("looking up %s: %w", veth, err))
		}
		if err := delTapByName(tap); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if errors.As(err, new(ns.NSPathNotExistErr)) {
		return nil // the namespace, and all in it, is gone
	}
	if err != nil {
		return fmt.Errorf("removing tap %s in %s: %w", tap, nsPath, err)
	}
	return nil
}

// delTapByName deletes the tun/tap device named tap, if there is one.
func delTapByName(tap string) error {
	l, err := netlink.LinkByName(tap)
	if err != nil {
		if isLinkNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up %s: %w", tap, err)
	}
	if _, ok := l.(*netlink.Tuntap); !ok {
		return errdefs.FailedPrecondition("interface %s is not a tun/tap device (type %s); not deleting it", tap, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil && !isLinkNotFound(err) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting tap %s: %w", tap, err)
	}
	return nil
}

// inNS runs fn in the namespace at nsPath (see Do). A path that does not
// exist or is not a network namespace is an ErrNotFound.
func inNS(nsPath string, fn func() error) error {
	if err := ns.IsNSorErr(nsPath); err != nil {
		if errors.As(err, new(ns.NSPathNotExistErr)) {
			return errdefs.Newf(errdefs.ErrNotFound, "network namespace %s: %w", nsPath, err)
		}
		return errdefs.InvalidArgument("network namespace %s: %v", nsPath, err)
	}
	return Do(nsPath, fn)
}

// checkTapArgs validates the arguments common to MirrorTap and RemoveTap.
func checkTapArgs(nsPath, veth, tap string) error {
	if nsPath == "" {
		return errdefs.InvalidArgument("network namespace path is empty")
	}
	if err := checkIfName("veth", veth); err != nil {
		return err
	}
	if err := checkIfName("tap", tap); err != nil {
		return err
	}
	if veth == tap {
		return errdefs.InvalidArgument("the tap and the veth are both named %q", tap)
	}
	return nil
}

// checkIfName validates an interface name. '%' is refused too: the kernel
// would expand it as a name template and create some other name.
func checkIfName(what, name string) error {
	if e := utils.ValidateInterfaceName(name); e != nil {
		return errdefs.InvalidArgument("%s name %q: %s", what, name, e.Msg)
	}
	if strings.ContainsRune(name, '%') {
		return errdefs.InvalidArgument("%s name %q: contains '%%'", what, name)
	}
	return nil
}

func isLinkNotFound(err error) bool {
	return errors.As(err, new(netlink.LinkNotFoundError))
}

// retryDump runs a netlink dump again, a few times, when the kernel reports
// that the dump was interrupted by a concurrent change.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		v, err := dump()
		if err != nil && errors.Is(err, netlink.ErrDumpInterrupted) && i < 5 {
			continue
		}
		return v, err
	}
}
