package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// nicWait bounds the wait for a NIC to show up: virtio_net probes
// asynchronously after its module loaded.
var nicWait = 10 * time.Second

// netConfig is a validated CreateSandbox network request.
type netConfig struct {
	ifaces []ifaceConfig
	routes []routeConfig
}

type ifaceConfig struct {
	name string
	mac  net.HardwareAddr
	// bootMAC, when set, finds the NIC (it is then given mac).
	bootMAC net.HardwareAddr
	mtu     int
	addrs   []*netlink.Addr
}

type routeConfig struct {
	dst    *net.IPNet // nil: default
	gw     net.IP
	src    net.IP
	device string
}

// parseNetConfig validates the request's interfaces and routes without
// touching the system.
func parseNetConfig(ifaces []*api.Interface, routes []*api.Route) (*netConfig, error) {
	nc := &netConfig{}
	names := map[string]bool{}
	for i, in := range ifaces {
		ic := ifaceConfig{name: in.Name, mtu: int(in.Mtu)}
		if ic.name == "" {
			ic.name = "eth0"
		}
		if len(ic.name) >= unix.IFNAMSIZ || strings.ContainsAny(ic.name, "/ \t") {
			return nil, errdefs.InvalidArgument("interface %d: bad name %q", i, ic.name)
		}
		if names[ic.name] {
			return nil, errdefs.InvalidArgument("interface %d: name %s given twice", i, ic.name)
		}
		names[ic.name] = true
		mac, err := net.ParseMAC(in.Mac)
		if err != nil {
			return nil, errdefs.InvalidArgument("interface %s: bad MAC %q: %w", ic.name, in.Mac, err)
		}
		ic.mac = mac
		if in.BootMac != "" {
			if ic.bootMAC, err = net.ParseMAC(in.BootMac); err != nil {
				return nil, errdefs.InvalidArgument("interface %s: bad boot MAC %q: %w", ic.name, in.BootMac, err)
			}
		}
		for _, a := range in.Addresses {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return nil, errdefs.InvalidArgument("interface %s: bad address %q (want CIDR): %w", ic.name, a, err)
			}
			ic.addrs = append(ic.addrs, addr)
		}
		nc.ifaces = append(nc.ifaces, ic)
	}
	for i, r := range routes {
		rc := routeConfig{device: r.Device}
		if r.Dest != "" {
			_, dst, err := net.ParseCIDR(r.Dest)
			if err != nil {
				return nil, errdefs.InvalidArgument("route %d: bad destination %q: %w", i, r.Dest, err)
			}
			rc.dst = dst
		}
		if r.Gateway != "" {
			if rc.gw = net.ParseIP(r.Gateway); rc.gw == nil {
				return nil, errdefs.InvalidArgument("route %d: bad gateway %q", i, r.Gateway)
			}
		}
		if r.Src != "" {
			if rc.src = net.ParseIP(r.Src); rc.src == nil {
				return nil, errdefs.InvalidArgument("route %d: bad source %q", i, r.Src)
			}
		}
		if rc.dst == nil && rc.gw == nil {
			return nil, errdefs.InvalidArgument("route %d: a default route needs a gateway", i)
		}
		if rc.device != "" && !names[rc.device] {
			return nil, errdefs.InvalidArgument("route %d: device %s is not among the interfaces", i, rc.device)
		}
		if rc.device == "" && len(nc.ifaces) == 0 {
			return nil, errdefs.InvalidArgument("route %d: no interface to route through", i)
		}
		nc.routes = append(nc.routes, rc)
	}
	return nc, nil
}

// apply configures the NICs (found by MAC, renamed, MTU, addresses, up),
// then the routes, in the calling thread's network namespace.
func (nc *netConfig) apply(ctx context.Context) error {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("setting lo up: %w", err)
		}
	}
	links := map[string]netlink.Link{}
	for _, ic := range nc.ifaces {
		find := ic.mac
		if ic.bootMAC != nil {
			find = ic.bootMAC
		}
		l, err := linkByMAC(ctx, find, nicWait)
		if err != nil {
			return err
		}
		if ic.bootMAC != nil && !bytes.Equal(ic.bootMAC, ic.mac) {
			// The host side knows the pod by the CNI interface's MAC.
			if err := netlink.LinkSetHardwareAddr(l, ic.mac); err != nil {
				return fmt.Errorf("giving %s the pod's MAC %s: %w", l.Attrs().Name, ic.mac, err)
			}
		}
		if l.Attrs().Name != ic.name {
			if err := netlink.LinkSetDown(l); err != nil {
				return fmt.Errorf("setting %s down: %w", l.Attrs().Name, err)
			}
			if err := netlink.LinkSetName(l, ic.name); err != nil {
				return fmt.Errorf("renaming %s to %s: %w", l.Attrs().Name, ic.name, err)
			}
		}
		if ic.mtu > 0 && l.Attrs().MTU != ic.mtu {
			if err := netlink.LinkSetMTU(l, ic.mtu); err != nil {
				return fmt.Errorf("setting the MTU of %s to %d: %w", ic.name, ic.mtu, err)
			}
		}
		for _, a := range ic.addrs {
			if err := netlink.AddrReplace(l, a); err != nil {
				return fmt.Errorf("adding %s to %s: %w", a.IPNet, ic.name, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting %s up: %w", ic.name, err)
		}
		links[ic.name] = l
	}
	for _, rc := range nc.routes {
		r := &netlink.Route{Dst: rc.dst, Gw: rc.gw, Src: rc.src}
		dev := rc.device
		if dev == "" {
			dev = nc.deviceFor(rc.gw)
		}
		r.LinkIndex = links[dev].Attrs().Index
		if rc.gw == nil {
			r.Scope = netlink.SCOPE_LINK
		}
		if r.Dst == nil {
			ip := rc.gw
			if ip.To4() != nil {
				r.Dst = &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
			} else {
				r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
			}
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("adding route %s via %s dev %s: %w", r.Dst, rc.gw, dev, err)
		}
	}
	log.G(ctx).Debug("network configured", "interfaces", len(nc.ifaces), "routes", len(nc.routes))
	return nil
}

// deviceFor returns the interface whose addresses hold gw, else the first.
func (nc *netConfig) deviceFor(gw net.IP) string {
	if gw != nil {
		for _, ic := range nc.ifaces {
			for _, a := range ic.addrs {
				if a.IPNet.Contains(gw) {
					return ic.name
				}
			}
		}
	}
	return nc.ifaces[0].name
}

// addresses returns the interfaces' IPs, for /etc/hosts.
func (nc *netConfig) addresses() []net.IP {
	var ips []net.IP
	for _, ic := range nc.ifaces {
		for _, a := range ic.addrs {
			ips = append(ips, a.IP)
		}
	}
	return ips
}

// linkByMAC waits up to wait for the link with address mac.
func linkByMAC(ctx context.Context, mac net.HardwareAddr, wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("listing links: %w", err)
		}
		for _, l := range links {
			if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac.String()) {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, errdefs.NotFound("no network interface with MAC %s (after %v)", mac, wait)
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(errdefs.NotFound("no network interface with MAC %s", mac), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
