package netns

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/crivm/crivm/store"
)

// CachedAttachments lists the IDs of the pod sandboxes that have a network
// attachment in m's result cache: what an ADD made that no DEL has undone.
// The cache is crivm's own only where Options.CacheDir is (the daemon
// keeps it under its root): on the shared DefaultCacheDir, which other
// runtimes write too, none is listed.
func (m *Manager) CachedAttachments() ([]string, error) {
	if filepath.Clean(m.opts.CacheDir) == DefaultCacheDir {
		return nil, nil
	}
	atts, err := m.cni.GetCachedAttachments("")
	if err != nil {
		return nil, fmt.Errorf("reading the CNI cache %s: %w", m.opts.CacheDir, err)
	}
	var ids []string
	for _, a := range atts {
		if store.IsID(a.ContainerID) {
			ids = append(ids, a.ContainerID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// ReleaseOrphan undoes the network of sandbox id, of which no record is
// left: CNI DEL of its cached attachments (nothing else says which network
// and arguments its ADD used; without one, no DEL runs), then the
// namespace pinned at nsPath ("" for none) is unpinned and its file
// removed. Idempotent.
func (m *Manager) ReleaseOrphan(ctx context.Context, id, nsPath string) error {
	cached, err := m.CachedAttachments()
	if err != nil {
		return err
	}
	if slices.Contains(cached, id) {
		if err := m.Teardown(ctx, SetupRequest{ContainerID: id, NetNSPath: nsPath}); err != nil {
			return fmt.Errorf("tearing down the network of %s: %w", id, err)
		}
	}
	if nsPath == "" {
		return nil
	}
	return FromPath(nsPath).Remove()
}
