package server

import (
	"context"
	"fmt"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/store"
)

// Sweep finishes what a crash interrupted, before the daemon serves: every
// container intent left behind (store.PendingContainers) is a container
// that made it into the store (the intent is dropped) or one whose
// CreateContainer died midway, whose process, handler state, rootfs and
// image volumes are released; then every sandbox intent left behind
// (store.PendingSandboxes) is either a sandbox that made it into the
// store (the intent is dropped) or one whose RunPodSandbox died midway,
// whose resources are released as a stop and remove would: its VM or
// infra container, network (CNI DEL from the cache, which frees its IP),
// netns, cgroup, rootfs and pod dir. An intent whose release fails stays
// for the next start. Last, what crivm made that no record and no intent
// names is released (sweep_orphans.go). Run it before Restore.
func (s *RuntimeService) Sweep(ctx context.Context) {
	sweepIntents(ctx, "container", s.deps.Store.PendingContainers, s.deps.Store.Containers,
		func(c *store.Container) string { return c.ID }, s.sweepContainer)
	sweepIntents(ctx, "sandbox", s.deps.Store.PendingSandboxes, s.deps.Store.Sandboxes,
		func(sb *store.Sandbox) string { return sb.ID }, s.sweepSandbox)
	sweepOrphans(ctx, s.deps.Store, s.orphanOwners())
}

// sweepIntents drops each intent in pending whose object made it into
// done, and releases (with sweep) each other one.
func sweepIntents[T any](ctx context.Context, kind string, pending, done *store.Table[T], id func(*T) string, sweep func(context.Context, *T) error) {
	for _, p := range pending.List(nil) {
		l := log.G(ctx).With(kind, id(p))
		if _, err := done.Get(id(p)); err == nil {
			if err := pending.Delete(id(p)); err != nil {
				l.Warn("dropping the intent of a finished "+kind, "err", err)
			}
			continue
		}
		if err := sweep(log.With(ctx, kind, id(p)), p); err != nil {
			l.Warn("a "+kind+" a crash left half-made could not be released: retrying at the next start", "err", err)
			continue
		}
		l.Info("released a " + kind + " a crash left half-made")
	}
}

func (s *RuntimeService) sweepSandbox(ctx context.Context, sb *store.Sandbox) error {
	h, err := s.sandboxHandler(sb)
	if err != nil {
		return err
	}
	if err := s.releaseBoundary(ctx, sb, h); err != nil {
		return err
	}
	if err := s.releaseSandbox(ctx, sb, h); err != nil {
		return err
	}
	return s.deps.Store.PendingSandboxes.Delete(sb.ID)
}

// sweepContainer kills and releases a container CreateContainer did not
// finish. Its sandbox is in the store (CreateContainer needs one); if it
// is gone since, so is everything it held.
func (s *RuntimeService) sweepContainer(ctx context.Context, c *store.Container) error {
	if sb, err := s.deps.Store.Sandboxes.Get(c.SandboxID); err == nil {
		h, err := s.sandboxHandler(sb)
		if err != nil {
			return err
		}
		if _, err := h.StopContainer(ctx, c, handlers.StopOptions{}); err != nil {
			return fmt.Errorf("stopping: %w", err)
		}
		if err := s.releaseContainer(ctx, h, c); err != nil {
			return err
		}
	} else if err := s.deps.Images.RemoveRootfs(ctx, c.ID); err != nil {
		return err
	}
	return s.deps.Store.PendingContainers.Delete(c.ID)
}
