package server

import (
	"context"

	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/store"
)

// Sweep finishes what a crash interrupted, before the daemon serves: every
// sandbox intent left behind (store.PendingSandboxes) is either a sandbox
// that made it into the store (the intent is dropped) or one whose
// RunPodSandbox died midway, whose resources are released as a stop and
// remove would: its VM or infra container, network (CNI DEL from the
// cache, which frees its IP), netns, cgroup, rootfs and pod dir. An intent
// whose release fails stays for the next start. Run it before Restore.
func (s *RuntimeService) Sweep(ctx context.Context) {
	for _, p := range s.deps.Store.PendingSandboxes.List(nil) {
		l := log.G(ctx).With("sandbox", p.ID, "name", p.Name)
		if _, err := s.deps.Store.Sandboxes.Get(p.ID); err == nil {
			if err := s.deps.Store.PendingSandboxes.Delete(p.ID); err != nil {
				l.Warn("dropping a finished sandbox's intent", "err", err)
			}
			continue
		}
		if err := s.sweepSandbox(log.With(ctx, "sandbox", p.ID), p); err != nil {
			l.Warn("a sandbox a crash left half-made could not be released: retrying at the next start", "err", err)
			continue
		}
		l.Info("released a sandbox a crash left half-made")
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
