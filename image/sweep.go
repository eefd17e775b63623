package image

import (
	"context"
	"fmt"
	"sync"

	"github.com/crivm/crivm/internal/log"
)

// pullTracker counts pulls in flight so that layers orphaned by a failed or
// cancelled pull are swept only when no other pull could still be about to
// reference them.
type pullTracker struct {
	// mu is held for bookkeeping and for the whole of a sweep, so a new pull
	// cannot start while orphans are deleted.
	mu           sync.Mutex
	inflight     int  // guarded by mu
	sweepPending bool // guarded by mu
}

func (p *pullTracker) begin() {
	p.mu.Lock()
	p.inflight++
	p.mu.Unlock()
}

// end closes one pull. After a failure, the last pull out sweeps.
func (p *pullTracker) end(ctx context.Context, failed bool, sweep func(context.Context) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight--
	if failed {
		p.sweepPending = true
	}
	if p.inflight > 0 || !p.sweepPending {
		return
	}
	p.sweepPending = false
	if err := sweep(ctx); err != nil {
		log.G(ctx).Warn("sweeping layers left by a failed pull", "err", err)
	}
}

// sweepOrphanLayers deletes layers that no image and no container uses: what
// a failed or cancelled pull committed before it stopped. Children go before
// their parents.
func (s *Service) sweepOrphanLayers(ctx context.Context) error {
	layers, err := s.store.Layers()
	if err != nil {
		return fmt.Errorf("listing layers: %w", err)
	}
	parent := map[string]string{}
	for _, l := range layers {
		parent[l.ID] = l.Parent
	}
	used := map[string]bool{}
	markChain := func(id string) {
		for id != "" && !used[id] {
			used[id] = true
			id = parent[id]
		}
	}
	imgs, err := s.store.Images()
	if err != nil {
		return fmt.Errorf("listing images: %w", err)
	}
	for _, img := range imgs {
		markChain(img.TopLayer)
		for _, m := range img.MappedTopLayers {
			markChain(m)
		}
	}
	ctrs, err := s.store.Containers()
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range ctrs {
		markChain(c.LayerID)
	}
	orphans := map[string]bool{}
	for _, l := range layers {
		if !used[l.ID] {
			orphans[l.ID] = true
		}
	}
	for len(orphans) > 0 {
		progressed := false
		for id := range orphans {
			hasChild := false
			for other := range orphans {
				if parent[other] == id {
					hasChild = true
					break
				}
			}
			if hasChild {
				continue
			}
			if err := s.store.DeleteLayer(id); err != nil {
				return fmt.Errorf("deleting orphan layer %s: %w", id, err)
			}
			log.G(ctx).Info("deleted a layer left by a failed pull", "layer", id)
			delete(orphans, id)
			progressed = true
		}
		if !progressed {
			return fmt.Errorf("orphan layers form a cycle: %v", orphans)
		}
	}
	return nil
}
