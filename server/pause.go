package server

import (
	"context"
	"errors"
	"fmt"

	imgspec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/crivm/crivm/image"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/store"
)

// pauseRootfs mounts a fresh rootfs of the pause image for sb's infra
// container, pulling the image first if it is not in storage.
func (s *RuntimeService) pauseRootfs(ctx context.Context, sb *store.Sandbox, m *image.IDMappings) (string, *imgspec.Image, error) {
	ref := s.deps.Config().Image.PauseImage
	img, err := s.deps.Images.Status(ctx, ref)
	if errors.Is(err, errdefs.ErrNotFound) {
		log.G(ctx).Info("pause image not in storage: pulling it", "image", ref)
		if _, err := s.deps.Images.Pull(ctx, ref, nil); err != nil {
			return "", nil, errdefs.FailedPrecondition("pause image %s (pause_image) is not available: %w", ref, err)
		}
		img, err = s.deps.Images.Status(ctx, ref)
	}
	if err != nil {
		return "", nil, fmt.Errorf("finding pause image %s: %w", ref, err)
	}
	rootfs, _, err := s.deps.Images.CreateRootfsMapped(ctx, sb.ID, sb.Name, img.ID, m)
	if err != nil {
		return "", nil, err
	}
	return rootfs, img.Config, nil
}
