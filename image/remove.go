package image

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/storage"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// Remove deletes the image ref names. A tag of an image that has other
// names only loses that tag; an ID or the last name deletes the image. An
// image that inUse reports in use is refused with FailedPrecondition.
// Removing an image that does not exist is not an error, as the CRI wants.
func (s *Service) Remove(ctx context.Context, ref string, inUse func(imageID string) []string) error {
	img, err := s.lookup(ref)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, isID := imageID(ref); !isID {
		named, err := normalizeName(ref)
		if err == nil {
			if _, tagged := named.(reference.NamedTagged); tagged && len(img.Names) > 1 {
				if err := s.store.RemoveNames(img.ID, []string{named.String()}); err != nil {
					if imageGone(err) {
						return nil
					}
					return fmt.Errorf("untagging %s: %w", named, err)
				}
				log.G(ctx).Info("untagged image", "id", img.ID, "tag", named.String())
				return nil
			}
		}
	}
	if users := inUse(img.ID); len(users) > 0 {
		return errdefs.FailedPrecondition("image %s (%s) is in use by container(s) %v", ref, img.ID, users)
	}
	if _, err := s.store.DeleteImage(img.ID, true); err != nil {
		if errors.Is(err, storage.ErrImageUsedByContainer) {
			return errdefs.FailedPrecondition("image %s (%s) is in use by a container: %w", ref, img.ID, err)
		}
		if imageGone(err) {
			return nil
		}
		return fmt.Errorf("deleting image %s: %w", img.ID, err)
	}
	s.mu.Lock()
	delete(s.info, img.ID)
	s.mu.Unlock()
	log.G(ctx).Info("removed image", "id", img.ID, "names", slices.Clone(img.Names))
	return nil
}

// imageGone reports a storage error saying the image no longer exists: a
// concurrent removal deleted it after this one looked it up. Either way
// it is gone, as asked. containers/storage says ErrNotAnImage ("identifier
// is not an image") when DeleteImage finds no such image.
func imageGone(err error) bool {
	return errors.Is(err, storage.ErrImageUnknown) || errors.Is(err, storage.ErrNotAnImage)
}
