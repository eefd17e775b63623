package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/image"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/mountfs"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
)

// Orphans are what crivm made on the host for a sandbox or container
// that no record and no intent names: a record lost, or a removal that
// died after its record went. Each owner of such state lists what it
// holds by ID (handlers.OrphanSweeper), only what is provably crivm's (in
// this daemon's own dirs, by crivm's naming, with its marker); the sweep
// releases each ID no record names, owner by owner, so that a pod is
// whole or gone after a restart. Nothing else runs meanwhile: the sweep
// is over before the daemon serves.

// orphanOwner is one owner of host state, named for the log.
type orphanOwner struct {
	name string
	handlers.OrphanSweeper
}

// orphanOwners are the owners in the order their orphans are released:
// the handlers (what runs is killed first), the pod network (CNI DEL,
// then the namespace), the storage containers (unmounted once nothing
// runs on them) and the pod dirs, whose presence is what proves a
// namespace this daemon's.
func (s *RuntimeService) orphanOwners() []orphanOwner {
	var out []orphanOwner
	for _, name := range slices.Sorted(maps.Keys(s.deps.Handlers)) {
		if sw, ok := s.deps.Handlers[name].Handler.(handlers.OrphanSweeper); ok {
			out = append(out, orphanOwner{"handler " + name, sw})
		}
	}
	if s.deps.Network != nil {
		out = append(out, orphanOwner{"pod network", networkOrphans{net: s.deps.Network, nsDir: s.deps.NetNSDir, podsDir: s.deps.PodsDir}})
	}
	if s.deps.Images != nil {
		out = append(out, orphanOwner{"image storage", storageOrphans{s.deps.Images}})
	}
	if s.deps.PodsDir != "" {
		out = append(out, orphanOwner{"pod dirs", podDirOrphans{s.deps.PodsDir}})
	}
	return out
}

// sweepOrphans releases what owners hold for IDs that no record and no
// intent in st names, owner by owner. Each release is logged with what
// was found. One that fails is logged and tried again at the next start,
// and so is what later owners hold for the same ID (or the ID it starts,
// or that starts it): a pod's parts go in order. An owner that cannot
// list what it holds stops the sweep there.
func sweepOrphans(ctx context.Context, st *store.Store, owners []orphanOwner) {
	named := namedIDs(st)
	var failed []string
	for _, o := range owners {
		held, err := o.Owned(ctx)
		if err != nil {
			log.G(ctx).Warn("listing what "+o.name+" holds: its orphans and those of the owners after it wait for the next start", "err", err)
			return
		}
		for _, h := range held {
			if isNamed(named, h.ID) {
				continue
			}
			l := log.G(ctx).With("owner", o.name, "id", h.ID, "found", h.Found)
			if slices.ContainsFunc(failed, func(f string) bool { return strings.HasPrefix(f, h.ID) || strings.HasPrefix(h.ID, f) }) {
				l.Warn("an orphan no record names waits for the next start: an earlier part of it could not be released")
				continue
			}
			if err := o.ReleaseOrphan(log.With(ctx, "orphan", h.ID), h.ID); err != nil {
				l.Warn("an orphan no record names could not be released: retrying at the next start", "err", err)
				failed = append(failed, h.ID)
				continue
			}
			l.Info("released an orphan no record names")
		}
	}
}

// namedIDs are the IDs the records and intents of st name: sandboxes,
// containers and their image volumes' storage containers.
func namedIDs(st *store.Store) []string {
	var ids []string
	for _, t := range []*store.Table[store.Sandbox]{st.Sandboxes, st.PendingSandboxes} {
		for _, sb := range t.List(nil) {
			ids = append(ids, sb.ID)
		}
	}
	for _, t := range []*store.Table[store.Container]{st.Containers, st.PendingContainers} {
		for _, c := range t.List(nil) {
			ids = append(ids, c.ID)
			for _, v := range c.ImageVolumes {
				ids = append(ids, v.StorageID)
			}
		}
	}
	return ids
}

// minOrphanKey is the shortest ID (prefix) an owner may list: a VM dir's
// name, 32 hex digits, is the shortest crivm makes.
const minOrphanKey = 32

// isNamed reports whether id, or the ID it starts (an owner that names by
// the first characters of an ID), is in named. An ID too short to tell is
// taken as named: it is never released.
func isNamed(named []string, id string) bool {
	if len(id) < minOrphanKey {
		return true
	}
	return slices.ContainsFunc(named, func(n string) bool { return strings.HasPrefix(n, id) })
}

// netnsName is the name under which RunPodSandbox pins the network
// namespace of sandbox id, from the first 32 characters of the id. The
// orphan sweep finds namespaces by it.
func netnsName(id string) string { return "crivm-" + id[:32] }

// netnsPathOf is where RunPodSandbox pins the network namespace of
// sandbox id.
func netnsPathOf(dir, id string) string { return netns.PathIn(dir, netnsName(id)) }

// networkOrphans are the pod networks: CNI attachments in this daemon's
// cache, and network namespaces. A namespace's name carries the first 32
// characters of its sandbox's ID but lives in a dir every crivm on the
// host shares, so only this daemon's own state (its CNI cache, a pod dir)
// proves one its own.
type networkOrphans struct {
	net            *netns.Manager
	nsDir, podsDir string
}

func (n networkOrphans) Owned(ctx context.Context) ([]handlers.Owned, error) {
	cached, err := n.net.CachedAttachments()
	if err != nil {
		return nil, err
	}
	pods, err := podDirIDs(n.podsDir)
	if err != nil {
		return nil, err
	}
	var out []handlers.Owned
	ids := slices.Concat(cached, pods)
	slices.Sort(ids)
	for _, id := range slices.Compact(ids) {
		var what []string
		if slices.Contains(cached, id) {
			what = append(what, "CNI attachment")
		}
		if p := netnsPathOf(n.nsDir, id); exists(p) {
			what = append(what, "netns "+p)
		}
		if len(what) > 0 {
			out = append(out, handlers.Owned{ID: id, Found: strings.Join(what, ", ")})
		}
	}
	return out, nil
}

func (n networkOrphans) ReleaseOrphan(ctx context.Context, id string) error {
	if !store.IsID(id) {
		return errdefs.InvalidArgument("pod network orphan %q: not a sandbox ID", id)
	}
	cached, err := n.net.CachedAttachments()
	if err != nil {
		return err
	}
	if !slices.Contains(cached, id) && !exists(filepath.Join(n.podsDir, id)) {
		return errdefs.FailedPrecondition("pod network orphan %s: neither a CNI attachment nor a pod dir of this daemon names it", id)
	}
	return n.net.ReleaseOrphan(ctx, id, netnsPathOf(n.nsDir, id))
}

// storageOrphans are the storage containers crivm made: rootfs (of
// containers and infra containers) and image volumes.
type storageOrphans struct{ images *image.Service }

func (s storageOrphans) Owned(ctx context.Context) ([]handlers.Owned, error) {
	ctrs, err := s.images.Owned(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]handlers.Owned, 0, len(ctrs))
	for _, c := range ctrs {
		out = append(out, handlers.Owned{ID: c.ID, Found: fmt.Sprintf("storage container (%s) %q on image %s", c.Kind, strings.Join(c.Names, ","), c.ImageID)})
	}
	return out, nil
}

func (s storageOrphans) ReleaseOrphan(ctx context.Context, id string) error {
	return s.images.ReleaseOrphan(ctx, id)
}

// podDirOrphans are the pod dirs (podFiles) below this daemon's pods dir.
type podDirOrphans struct{ dir string }

func (p podDirOrphans) Owned(ctx context.Context) ([]handlers.Owned, error) {
	ids, err := podDirIDs(p.dir)
	if err != nil {
		return nil, err
	}
	out := make([]handlers.Owned, 0, len(ids))
	for _, id := range ids {
		dir := filepath.Join(p.dir, id)
		found := "pod dir " + dir
		if mounts, err := mountfs.MountsBelow(dir); err == nil && len(mounts) > 0 {
			found += fmt.Sprintf(" (%d mounts: %s)", len(mounts), strings.Join(mounts, " "))
		}
		out = append(out, handlers.Owned{ID: id, Found: found})
	}
	return out, nil
}

func (p podDirOrphans) ReleaseOrphan(ctx context.Context, id string) error {
	if !store.IsID(id) {
		return errdefs.InvalidArgument("pod dir orphan %q: not a sandbox ID", id)
	}
	return podFilesIn(filepath.Join(p.dir, id)).remove()
}

// podDirIDs lists the sandbox IDs that have a pod dir in dir.
func podDirIDs(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && store.IsID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
