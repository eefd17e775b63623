package server

import (
	"context"

	"github.com/crivm/crivm/internal/errdefs"
)

// WatchExits follows every handler's exits until ctx ends, turning each into
// a state change (and so an event) without waiting for the next poll.
func (s *RuntimeService) WatchExits(ctx context.Context) error {
	for name, e := range s.deps.Handlers {
		if e.Handler == nil {
			continue
		}
		if err := e.Handler.WatchExits(ctx, func(id string) { s.onExit(ctx, id) }); err != nil {
			return errdefs.Newf(errdefs.ErrUnavailable, "watching exits of handler %q: %w", name, err)
		}
	}
	return nil
}

func (s *RuntimeService) onExit(ctx context.Context, id string) {
	if c, err := s.deps.Store.Containers.Get(id); err == nil {
		unlock := s.locks.lock(c.ID)
		defer unlock()
		if c, err = s.deps.Store.Containers.Get(id); err == nil {
			s.refreshContainer(ctx, c)
		}
		return
	}
	if sb, err := s.deps.Store.Sandboxes.Get(id); err == nil {
		s.refreshSandbox(ctx, sb)
	}
}
