package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/test/framework"
)

// testNet is a bridge network private to one test: its own bridge, subnet,
// host-local network name, config dir and result cache.
type testNet struct {
	tag     string // bridge, network and name prefix of everything the test makes
	subnet  *net.IPNet
	gateway net.IP
	confDir string
	plugins []string
	m       *Manager
	before  framework.NetState
}

// freeSubnet picks 10.233.X.0/24 with an X no host interface uses.
func freeSubnet(t *testing.T) (*net.IPNet, net.IP) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	used := map[byte]bool{}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if v4 := ipn.IP.To4(); v4 != nil && v4[0] == 10 && v4[1] == 233 {
				used[v4[2]] = true
			}
		}
	}
	start := 100 + rand.IntN(150)
	for i := range 150 {
		x := byte(100 + (start-100+i)%150)
		if !used[x] {
			_, n, _ := net.ParseCIDR(fmt.Sprintf("10.233.%d.0/24", x))
			return n, net.IPv4(10, 233, x, 1).To4()
		}
	}
	t.Fatal("no free 10.233.X.0/24 subnet")
	return nil, nil
}

// newTestNet writes a bridge + portmap conflist (with extra plugins between
// them) and returns a Manager for it. Cleanup deletes the bridge and the
// host-local state directory and restores net.ipv4.ip_forward, which the
// bridge plugin turns on for a gateway.
func newTestNet(t *testing.T, pluginDirs []string, middle ...string) *testNet {
	t.Helper()
	requireRoot(t)
	requireCNI(t)
	tn := &testNet{tag: uniqueTag(t), confDir: t.TempDir()}
	tn.subnet, tn.gateway = freeSubnet(t)
	tn.plugins = slices.Concat(pluginDirs, []string{"/usr/lib/cni"})

	plugins := []string{fmt.Sprintf(`{
      "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]]}
    }`, tn.tag, tn.subnet.String())}
	for _, p := range middle {
		plugins = append(plugins, fmt.Sprintf(`{"type": %q}`, p))
	}
	plugins = append(plugins, `{"type": "portmap", "capabilities": {"portMappings": true}}`)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [%s]}`, tn.tag, strings.Join(plugins, ",\n"))
	writeFile(t, filepath.Join(tn.confDir, "10-test.conflist"), conf)

	fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", tn.tag).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "Cannot find device") {
			t.Errorf("deleting bridge %s: %v: %s", tn.tag, err, out)
		}
		_ = os.RemoveAll(filepath.Join(framework.HostLocalDir, tn.tag))
		_ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", fwd, 0o644)
	})

	tn.m = NewManager(Options{ConfDir: tn.confDir, PluginDirs: tn.plugins, CacheDir: t.TempDir()})
	if tn.before, err = framework.NetSnapshot(); err != nil {
		t.Fatal(err)
	}
	return tn
}

// pod is a namespace attached (or to be attached) to a testNet.
type pod struct {
	ns  *NetNS
	req SetupRequest
	res *Result
}

func (tn *testNet) newPod(t *testing.T, name string, pms ...PortMapping) *pod {
	t.Helper()
	id := tn.tag + "-" + name
	n, err := New("", id)
	if err != nil {
		t.Fatalf("New %s: %v", id, err)
	}
	t.Cleanup(func() { _ = n.Remove() })
	return &pod{ns: n, req: SetupRequest{
		ContainerID:  id,
		NetNSPath:    n.Path(),
		PodName:      name,
		PodNamespace: "crivm-test",
		PodUID:       "uid-" + id,
		PortMappings: pms,
	}}
}

// serve accepts TCP connections on ln, writes reply to each and closes it,
// until ln is closed.
func serve(ln net.Listener, reply string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, reply)
		_ = c.Close()
	}
}

// listenIn starts a TCP server inside the namespace at nsPath.
func listenIn(t *testing.T, nsPath, addr, reply string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := Do(nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go serve(ln, reply)
	return ln
}

// fetch dials addr, from the namespace at nsPath or from the host when
// nsPath is empty, and returns what the server sent.
func fetch(nsPath, addr string) (string, error) {
	var got string
	dial := func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	}
	if nsPath == "" {
		return got, dial()
	}
	return got, Do(nsPath, dial)
}

func freeHostPort(t *testing.T) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func TestBridgeSetupTeardown(t *testing.T) {
	tn := newTestNet(t, nil)
	ctx := context.Background()
	if err := tn.m.Status(ctx); err != nil {
		t.Fatalf("Status: %v", err)
	}

	hostPort := freeHostPort(t)
	a := tn.newPod(t, "a", PortMapping{Protocol: "tcp", ContainerPort: 8080, HostPort: hostPort})
	b := tn.newPod(t, "b")

	// Two pods at once: ADDs for different containers run concurrently.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, p := range []*pod{a, b} {
		wg.Go(func() { p.res, errs[i] = tn.m.Setup(ctx, p.req) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	for _, p := range []*pod{a, b} {
		if len(p.res.IPs) == 0 || !tn.subnet.Contains(p.res.IPs[0]) {
			t.Fatalf("pod %s IPs %v, want one in %s", p.req.PodName, p.res.IPs, tn.subnet)
		}
		if p.res.Raw.CNIVersion == "" || len(p.res.Interfaces) == 0 || len(p.res.Raw.IPs) == 0 {
			t.Errorf("pod %s raw result %+v", p.req.PodName, p.res.Raw)
		}
	}
	if a.res.IPs[0].Equal(b.res.IPs[0]) {
		t.Fatalf("both pods got %s", a.res.IPs[0])
	}
	t.Logf("pod a %v, pod b %v, gateway %s", a.res.IPs, b.res.IPs, tn.gateway)

	// The leak check sees what a live pod holds.
	during, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	diff := tn.before.Diff(during)
	for _, want := range []string{
		"netns file " + a.ns.Path(),
		"mount ",
		"interface veth",
		"master=" + tn.tag,
		fmt.Sprintf("ip allocation %s/%s container=%s ifname=eth0", tn.tag, a.res.IPs[0], a.req.ContainerID),
		"network=" + tn.tag + " container=" + a.req.ContainerID,
	} {
		if !slices.ContainsFunc(diff, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("Diff during the test lacks %q:\n  %s", want, strings.Join(diff, "\n  "))
		}
	}

	// ADD recorded the CNI_ARGS and port mappings DEL will reuse.
	atts, err := tn.m.cni.GetCachedAttachments(a.req.ContainerID)
	if err != nil || len(atts) != 1 {
		t.Fatalf("cached attachments of %s: %v, %v", a.req.ContainerID, atts, err)
	}
	if got := fmt.Sprint(atts[0].CniArgs); !strings.Contains(got, "[K8S_POD_NAME a]") || !strings.Contains(got, "[K8S_POD_UID uid-"+a.req.ContainerID+"]") {
		t.Errorf("cached CNI_ARGS %s", got)
	}
	if got := fmt.Sprint(atts[0].CapabilityArgs); !strings.Contains(got, "containerPort:8080") {
		t.Errorf("cached capability args %s", got)
	}

	// Pod to pod, both ways.
	listenIn(t, a.ns.Path(), net.JoinHostPort(a.res.IPs[0].String(), "8080"), "hello from a")
	listenIn(t, b.ns.Path(), net.JoinHostPort(b.res.IPs[0].String(), "9090"), "hello from b")
	if got, err := fetch(b.ns.Path(), net.JoinHostPort(a.res.IPs[0].String(), "8080")); err != nil || got != "hello from a" {
		t.Errorf("b -> a: %q, %v", got, err)
	}
	if got, err := fetch(a.ns.Path(), net.JoinHostPort(b.res.IPs[0].String(), "9090")); err != nil || got != "hello from b" {
		t.Errorf("a -> b: %q, %v", got, err)
	}

	// The host port reaches pod a through portmap's DNAT in the nat OUTPUT
	// chain, dialled at the bridge's address and at 127.0.0.1. The latter
	// works because portmap (snat on by default) masquerades localhost
	// sources and sets route_localnet on the bridge.
	hp := strconv.Itoa(int(hostPort))
	for _, host := range []string{tn.gateway.String(), "127.0.0.1"} {
		if got, err := fetch("", net.JoinHostPort(host, hp)); err != nil || got != "hello from a" {
			t.Errorf("host -> %s:%s: %q, %v", host, hp, got, err)
		}
	}

	for _, p := range []*pod{a, b} {
		if err := tn.m.Teardown(ctx, p.req); err != nil {
			t.Fatalf("Teardown %s: %v", p.req.ContainerID, err)
		}
		if err := tn.m.Teardown(ctx, p.req); err != nil {
			t.Errorf("second Teardown %s: %v", p.req.ContainerID, err)
		}
		if err := p.ns.Remove(); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := fetch("", net.JoinHostPort(tn.gateway.String(), hp)); err == nil {
		t.Errorf("host port still answers after Teardown: %q", got)
	}
	if atts, err := tn.m.cni.GetCachedAttachments(""); err != nil || len(atts) != 0 {
		t.Errorf("cached attachments after Teardown: %v, %v", atts, err)
	}
	checkNoLeaks(t, tn.before, tn.tag)
}

func TestBridgeLatency(t *testing.T) {
	tn := newTestNet(t, nil)
	ctx := context.Background()
	const n = 10
	for _, withPorts := range []bool{false, true} {
		var setup, teardown []time.Duration
		for i := range n {
			p := tn.newPod(t, fmt.Sprintf("%v%d", withPorts, i))
			if withPorts {
				p.req.PortMappings = []PortMapping{{ContainerPort: 80, HostPort: freeHostPort(t)}}
			}
			start := time.Now()
			if _, err := tn.m.Setup(ctx, p.req); err != nil {
				t.Fatalf("Setup: %v", err)
			}
			setup = append(setup, time.Since(start))
			start = time.Now()
			if err := tn.m.Teardown(ctx, p.req); err != nil {
				t.Fatalf("Teardown: %v", err)
			}
			teardown = append(teardown, time.Since(start))
			if err := p.ns.Remove(); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("bridge+portmap, %d pods, host port mapping %v: Setup median %v (min %v, max %v), Teardown median %v (min %v, max %v)",
			n, withPorts, median(setup), slices.Min(setup), slices.Max(setup), median(teardown), slices.Min(teardown), slices.Max(teardown))
	}
	checkNoLeaks(t, tn.before, tn.tag)
}

func TestTeardownMissingNetNS(t *testing.T) {
	tn := newTestNet(t, nil)
	ctx := context.Background()
	p := tn.newPod(t, "gone", PortMapping{ContainerPort: 80, HostPort: freeHostPort(t)})
	if _, err := tn.m.Setup(ctx, p.req); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	// The namespace disappears first, as after a host reboot or a crash
	// between the two steps; the IP allocation and port mapping remain.
	if err := p.ns.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := tn.m.Teardown(ctx, p.req); err != nil {
		t.Fatalf("Teardown without namespace: %v", err)
	}
	checkNoLeaks(t, tn.before, tn.tag)
}

func TestTeardownWithoutCache(t *testing.T) {
	tn := newTestNet(t, nil)
	ctx := context.Background()
	p := tn.newPod(t, "nocache", PortMapping{ContainerPort: 80, HostPort: freeHostPort(t)})
	if _, err := tn.m.Setup(ctx, p.req); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	// Without the cache, DEL falls back to the current config and the
	// request, whose port mappings portmap needs to find its rules.
	if err := os.RemoveAll(filepath.Join(tn.m.opts.CacheDir, "results")); err != nil {
		t.Fatal(err)
	}
	if err := tn.m.Teardown(ctx, p.req); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if err := p.ns.Remove(); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t, tn.before, tn.tag)
}

func TestSetupMissingPlugin(t *testing.T) {
	tn := newTestNet(t, nil, "crivm-no-such-plugin")
	ctx := context.Background()
	if err := tn.m.Status(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "crivm-no-such-plugin") {
		t.Errorf("Status: %v, want FailedPrecondition naming the plugin", err)
	}
	p := tn.newPod(t, "a", PortMapping{ContainerPort: 80, HostPort: freeHostPort(t)})
	_, err := tn.m.Setup(ctx, p.req)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Setup: %v, want FailedPrecondition", err)
	}
	t.Logf("Setup: %v", err)
	if err := p.ns.Remove(); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t, tn.before, tn.tag)
}

// failingPlugin writes a CNI plugin named name into dir that fails ADD and,
// when failDel is set, DEL too.
func failingPlugin(t *testing.T, dir, name string, failDel bool) {
	t.Helper()
	del := "exit 0"
	if failDel {
		del = `echo '{"cniVersion":"1.0.0","code":999,"msg":"` + name + `: refusing DEL"}'; exit 1`
	}
	script := `#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}' ;;
ADD) echo '{"cniVersion":"1.0.0","code":999,"msg":"` + name + `: refusing ADD"}'; exit 1 ;;
DEL) ` + del + ` ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// hangingPlugin writes a CNI plugin named name into dir whose ADD never
// returns.
func hangingPlugin(t *testing.T, dir, name string) {
	t.Helper()
	script := `#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}' ;;
ADD) exec sleep 3600 ;;
DEL) exit 0 ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// A plugin whose ADD hangs fails Setup after AddTimeout, with what ran
// before it undone.
func TestSetupHangingPluginTimesOut(t *testing.T) {
	dir := t.TempDir()
	hangingPlugin(t, dir, "crivm-hang")
	tn := newTestNet(t, []string{dir}, "crivm-hang")
	tn.m.opts.AddTimeout = time.Second
	ctx := context.Background()
	p := tn.newPod(t, "a", PortMapping{ContainerPort: 80, HostPort: freeHostPort(t)})
	start := time.Now()
	_, err := tn.m.Setup(ctx, p.req)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not finish within 1s") {
		t.Fatalf("Setup: %v, want a timeout naming AddTimeout", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Setup took %v with a 1s AddTimeout", d)
	}
	if err := p.ns.Remove(); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t, tn.before, tn.tag)
}

func TestSetupFailureCleansUp(t *testing.T) {
	for _, failDel := range []bool{false, true} {
		t.Run(fmt.Sprintf("failDel=%v", failDel), func(t *testing.T) {
			dir := t.TempDir()
			failingPlugin(t, dir, "crivm-fail", failDel)
			// bridge and host-local succeed before crivm-fail refuses ADD.
			tn := newTestNet(t, []string{dir}, "crivm-fail")
			ctx := context.Background()
			p := tn.newPod(t, "a", PortMapping{ContainerPort: 80, HostPort: freeHostPort(t)})
			_, err := tn.m.Setup(ctx, p.req)
			if err == nil || !strings.Contains(err.Error(), "refusing ADD") {
				t.Fatalf("Setup: %v, want the plugin's ADD error", err)
			}
			if failDel != strings.Contains(err.Error(), "refusing DEL") {
				t.Errorf("Setup error %q: DEL failure reported = %v, want %v", err, !failDel, failDel)
			}
			t.Logf("Setup: %v", err)
			if err := p.ns.Remove(); err != nil {
				t.Fatal(err)
			}
			checkNoLeaks(t, tn.before, tn.tag)
		})
	}
}
