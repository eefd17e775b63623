package netns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCachedAttachments: the sandboxes with a cached attachment are
// listed once each, whatever their number of interfaces; entries that are
// not libcni's, or whose ID crivm never makes, are not.
func TestCachedAttachments(t *testing.T) {
	cache := t.TempDir()
	results := filepath.Join(cache, "results")
	if err := os.MkdirAll(results, 0o700); err != nil {
		t.Fatal(err)
	}
	a, b := strings.Repeat("a", 64), strings.Repeat("0b", 32)
	entry := func(kind, id, ifName string) {
		writeFile(t, filepath.Join(results, fmt.Sprintf("net-%s-%s", id, ifName)),
			fmt.Sprintf(`{"kind": %q, "containerId": %q, "ifName": %q, "networkName": "net", "config": "e30="}`, kind, id, ifName))
	}
	entry("cniCacheV1", a, "eth0")
	entry("cniCacheV1", a, "eth1")
	entry("cniCacheV1", b, "eth0")
	entry("cniCacheV1", "k8s-pod-of-another-runtime", "eth0")
	entry("cniCacheV1", strings.Repeat("A", 64), "eth0")
	entry("somethingElse", strings.Repeat("c", 64), "eth0")
	writeFile(t, filepath.Join(results, "garbage"), "{")

	m := NewManager(Options{CacheDir: cache})
	got, err := m.CachedAttachments()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{b, a}; !slices.Equal(got, want) {
		t.Errorf("CachedAttachments: got %q, want %q", got, want)
	}
}

// TestReleaseOrphan: a pod network set up by a request that is then
// lost is released from the ID alone (the cache has the rest): no veth,
// IP allocation, port mapping, namespace or cache entry is left.
func TestReleaseOrphan(t *testing.T) {
	tn := newTestNet(t, nil)
	ctx := context.Background()
	sum := sha256.Sum256([]byte(tn.tag))
	id := hex.EncodeToString(sum[:])
	n, err := New("", tn.tag+"-orphan")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Remove() })
	req := SetupRequest{ContainerID: id, NetNSPath: n.Path(), PodName: "orphan", PodNamespace: "crivm-test", PodUID: "uid-orphan",
		PortMappings: []PortMapping{{ContainerPort: 80, HostPort: freeHostPort(t)}}}
	if _, err := tn.m.Setup(ctx, req); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if cached, err := tn.m.CachedAttachments(); err != nil || !slices.Contains(cached, id) {
		t.Fatalf("CachedAttachments after Setup: %q %v, want %s", cached, err, id)
	}

	for range 2 {
		if err := tn.m.ReleaseOrphan(ctx, id, n.Path()); err != nil {
			t.Fatalf("ReleaseOrphan: %v", err)
		}
	}
	if _, err := os.Lstat(n.Path()); !os.IsNotExist(err) {
		t.Errorf("namespace file %s left (%v)", n.Path(), err)
	}
	if cached, err := tn.m.CachedAttachments(); err != nil || len(cached) > 0 {
		t.Errorf("CachedAttachments after ReleaseOrphan: %q %v, want none", cached, err)
	}
	checkNoLeaks(t, tn.before, tn.tag, id)
}
