package image

import (
	"context"
	"sync"
	"testing"

	"github.com/crivm/crivm/internal/errdefs"
)

// TestRemoveConcurrent: removals of one image that race each other all
// succeed. The one that finds the image already deleted after its lookup
// (containers/storage: "identifier is not an image") treats it as gone,
// as the CRI's idempotent RemoveImage wants.
func TestRemoveConcurrent(t *testing.T) {
	ctx := context.Background()
	s, ref := layeredService(t)
	pull := func(t *testing.T) string {
		t.Helper()
		res, err := s.Pull(ctx, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	gone := func(t *testing.T, id string) {
		t.Helper()
		if _, err := s.lookup(id); !errdefs.IsClass(err, errdefs.ErrNotFound) {
			t.Errorf("image %s after the removals: %v, want NotFound", id, err)
		}
	}

	// 1. A removal that loses the race right after its lookup: the other
	//    removal deletes the image between this one's lookup and delete
	//    (inUse runs there).
	for _, by := range []string{"name", "id"} {
		t.Run("lost race by "+by, func(t *testing.T) {
			id := pull(t)
			target := ref
			if by == "id" {
				target = id
			}
			err := s.Remove(ctx, target, func(imageID string) []string {
				if _, err := s.store.DeleteImage(imageID, true); err != nil {
					t.Errorf("the concurrent removal: %v", err)
				}
				return nil
			})
			if err != nil {
				t.Errorf("Remove after a concurrent removal: %v, want success", err)
			}
			gone(t, id)
		})
	}

	// 2. Removals at once, by name and by ID.
	t.Run("at once", func(t *testing.T) {
		id := pull(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 16 {
			target := ref
			if i%2 == 1 {
				target = id
			}
			wg.Go(func() { errs <- s.Remove(ctx, target, func(string) []string { return nil }) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent Remove: %v", err)
			}
		}
		gone(t, id)
	})
}
