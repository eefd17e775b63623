package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/crivm/crivm/internal/errdefs"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func confList(name string, types ...string) string {
	var ps []string
	for _, ty := range types {
		ps = append(ps, fmt.Sprintf(`{"type": %q}`, ty))
	}
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [%s]}`, name, strings.Join(ps, ", "))
}

func singleConf(name, typ string) string {
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": %q}`, name, typ)
}

func TestDefaultNetworkSelection(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := NewManager(Options{ConfDir: dir, PluginDirs: []string{t.TempDir()}, CacheDir: t.TempDir()})

	if _, err := m.Network(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("empty dir: %v, want FailedPrecondition naming %s", err, dir)
	}

	writeFile(t, filepath.Join(dir, "30-c.json"), singleConf("net-c", "bridge"))
	writeFile(t, filepath.Join(dir, "20-b.conflist"), confList("net-b", "bridge", "portmap"))
	writeFile(t, filepath.Join(dir, "10-a.conf"), singleConf("net-a", "ptp"))
	writeFile(t, filepath.Join(dir, "00-ignored.txt"), singleConf("net-txt", "bridge"))
	if err := os.Mkdir(filepath.Join(dir, "01-dir.conflist"), 0o755); err != nil {
		t.Fatal(err)
	}
	check := func(wantName, wantFile string, wantPlugins ...string) {
		t.Helper()
		n, err := m.Network(ctx)
		if err != nil {
			t.Fatalf("Network: %v", err)
		}
		if n.Name != wantName || filepath.Base(n.File) != wantFile || strings.Join(n.Plugins, ",") != strings.Join(wantPlugins, ",") {
			t.Fatalf("Network = %+v, want %s from %s with %v", n, wantName, wantFile, wantPlugins)
		}
	}
	check("net-a", "10-a.conf", "ptp")

	// A file that sorts first but does not parse is skipped.
	writeFile(t, filepath.Join(dir, "05-broken.conflist"), `{"name": `)
	check("net-a", "10-a.conf", "ptp")

	// A new file that sorts first becomes the default.
	writeFile(t, filepath.Join(dir, "07-new.conflist"), confList("net-new", "macvlan", "tuning"))
	check("net-new", "07-new.conflist", "macvlan", "tuning")

	// Editing the default in place is noticed even within one mtime tick,
	// because the size changes too.
	writeFile(t, filepath.Join(dir, "07-new.conflist"), confList("net-new-edited", "ipvlan"))
	check("net-new-edited", "07-new.conflist", "ipvlan")

	// Fixing the broken file makes it the default.
	writeFile(t, filepath.Join(dir, "05-broken.conflist"), confList("net-fixed", "bridge"))
	check("net-fixed", "05-broken.conflist", "bridge")

	// A .conf holding a list is accepted.
	writeFile(t, filepath.Join(dir, "02-list.conf"), confList("net-list-in-conf", "bridge", "firewall"))
	check("net-list-in-conf", "02-list.conf", "bridge", "firewall")

	for _, f := range []string{"02-list.conf", "05-broken.conflist", "07-new.conflist", "10-a.conf"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	check("net-b", "20-b.conflist", "bridge", "portmap")
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	confDir, pluginDir := t.TempDir(), t.TempDir()
	m := NewManager(Options{ConfDir: confDir, PluginDirs: []string{pluginDir}, CacheDir: t.TempDir()})

	err := m.Status(ctx)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), confDir) {
		t.Fatalf("Status with no config: %v, want FailedPrecondition naming %s", err, confDir)
	}

	writeFile(t, filepath.Join(confDir, "10-net.conflist"), confList("net", "fake-bridge", "fake-portmap"))
	writeFile(t, filepath.Join(pluginDir, "fake-bridge"), "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(pluginDir, "fake-bridge"), 0o755); err != nil {
		t.Fatal(err)
	}
	err = m.Status(ctx)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "fake-portmap") ||
		!strings.Contains(err.Error(), pluginDir) {
		t.Fatalf("Status with a missing plugin: %v, want FailedPrecondition naming fake-portmap and %s", err, pluginDir)
	}

	writeFile(t, filepath.Join(pluginDir, "fake-portmap"), "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(pluginDir, "fake-portmap"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.Status(ctx); err != nil {
		t.Fatalf("Status with all plugins: %v", err)
	}
}

func TestRuntimeConf(t *testing.T) {
	req := SetupRequest{
		ContainerID:  "abc",
		NetNSPath:    "/var/run/netns/x",
		PodName:      "web",
		PodNamespace: "default",
		PodUID:       "uid-1",
		PortMappings: []PortMapping{
			{ContainerPort: 80, HostPort: 8080},
			{Protocol: "UDP", ContainerPort: 53, HostPort: 5353, HostIP: "127.0.0.1"},
			{Protocol: "TCP", ContainerPort: 9000}, // no host port: not mapped
		},
	}
	rt, err := runtimeConf(&req, req.NetNSPath)
	if err != nil {
		t.Fatal(err)
	}
	if rt.IfName != "eth0" || rt.ContainerID != "abc" || rt.NetNS != req.NetNSPath {
		t.Errorf("rt = %+v", rt)
	}
	var args []string
	for _, a := range rt.Args {
		args = append(args, a[0]+"="+a[1])
	}
	if got, want := strings.Join(args, ";"), "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=uid-1"; got != want {
		t.Errorf("CNI_ARGS = %s, want %s", got, want)
	}
	pms, _ := rt.CapabilityArgs["portMappings"].([]portMapEntry)
	want := []portMapEntry{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "127.0.0.1"}}
	if fmt.Sprint(pms) != fmt.Sprint(want) {
		t.Errorf("portMappings = %v, want %v", pms, want)
	}

	noPorts := SetupRequest{ContainerID: "abc"}
	if rt, err := runtimeConf(&noPorts, ""); err != nil || rt.CapabilityArgs != nil {
		t.Errorf("no port mappings: %v, capability args %v", err, rt.CapabilityArgs)
	}

	for name, bad := range map[string]SetupRequest{
		"no container ID": {},
		"bad protocol":    {ContainerID: "a", PortMappings: []PortMapping{{Protocol: "icmp", ContainerPort: 1, HostPort: 1}}},
		"bad port":        {ContainerID: "a", PortMappings: []PortMapping{{ContainerPort: 0, HostPort: 1}}},
		"bad host port":   {ContainerID: "a", PortMappings: []PortMapping{{ContainerPort: 1, HostPort: 70000}}},
		"bad host IP":     {ContainerID: "a", PortMappings: []PortMapping{{ContainerPort: 1, HostPort: 1, HostIP: "nope"}}},
		"semicolon":       {ContainerID: "a", PodName: "x;y"},
		"bad container":   {ContainerID: "-a/b"},
		"bad ifname":      {ContainerID: "a", IfName: "this-name-is-too-long"},
	} {
		if _, err := runtimeConf(&bad, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestSetupInvalid(t *testing.T) {
	m := NewManager(Options{ConfDir: t.TempDir(), PluginDirs: []string{t.TempDir()}, CacheDir: t.TempDir()})
	ctx := context.Background()
	for name, req := range map[string]SetupRequest{
		"no netns":       {ContainerID: "a"},
		"no container":   {NetNSPath: "/proc/self/ns/net"},
		"netns not a ns": {ContainerID: "a", NetNSPath: "/etc/hostname"},
	} {
		if _, err := m.Setup(ctx, req); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if _, err := m.Setup(ctx, SetupRequest{ContainerID: "a", NetNSPath: "/proc/self/ns/net"}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("no config: %v, want FailedPrecondition", err)
	}
	// Teardown with neither a cached attachment nor a config has nothing to do.
	if err := m.Teardown(ctx, SetupRequest{ContainerID: "a", NetNSPath: "/nonexistent"}); err != nil {
		t.Errorf("Teardown with nothing to do: %v", err)
	}
}

func TestToResult(t *testing.T) {
	host, pod := 0, 1
	r := &types100.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*types100.Interface{{Name: "cni0"}, {Name: "eth0", Sandbox: "/var/run/netns/x"}},
		IPs: []*types100.IPConfig{
			{Interface: &host, Address: net.IPNet{IP: net.ParseIP("10.0.0.1"), Mask: net.CIDRMask(24, 32)}},
			{Interface: &pod, Address: net.IPNet{IP: net.ParseIP("fd00::2"), Mask: net.CIDRMask(64, 128)}},
			{Interface: &pod, Address: net.IPNet{IP: net.ParseIP("10.0.0.2"), Mask: net.CIDRMask(24, 32)}},
			{Address: net.IPNet{IP: net.ParseIP("10.0.0.3"), Mask: net.CIDRMask(24, 32)}},
		},
	}
	got := fmt.Sprint(toResult(r).IPs)
	if want := "[10.0.0.2 10.0.0.3 fd00::2]"; got != want {
		t.Errorf("IPs = %s, want %s", got, want)
	}
}

func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	ctx := context.Background()
	var inA atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			unlock, err := k.lock(ctx, "a")
			if err != nil {
				t.Error(err)
				return
			}
			if n := inA.Add(1); n != 1 {
				t.Errorf("%d holders of key a", n)
			}
			time.Sleep(time.Millisecond)
			inA.Add(-1)
			unlock()
		})
	}
	wg.Wait()

	// Different keys do not wait for each other.
	unlockA, _ := k.lock(ctx, "a")
	unlockB, err := k.lock(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	unlockB()

	// A waiter gives up with its context.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := k.lock(cctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lock of a held key: %v, want DeadlineExceeded", err)
	}
	unlockA()
	k.mu.Lock()
	n := len(k.m)
	k.mu.Unlock()
	if n != 0 {
		t.Errorf("%d keys remain after all unlocks", n)
	}
}
