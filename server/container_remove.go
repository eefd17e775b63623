package server

import (
	"context"
	"errors"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/store"
)

// RemoveContainer kills the container if it still runs and removes it with
// its rootfs and image volumes. Idempotent.
func (s *RuntimeService) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	c, _, h, unlock, err := s.lockedContainer(req.GetContainerId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := s.removeContainer(ctx, h, s.refreshContainer(ctx, c)); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (s *RuntimeService) removeContainer(ctx context.Context, h handlers.Handler, c *store.Container) error {
	if err := s.stopContainer(ctx, h, c, 0); err != nil {
		return err
	}
	if err := s.releaseContainer(ctx, h, c); err != nil {
		return err
	}
	if c, err := s.deps.Store.Containers.Get(c.ID); err == nil {
		defer s.emitContainer(ctx, c, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	}
	return s.deps.Store.Containers.Delete(c.ID)
}

// releaseContainer removes what c holds once it is stopped: the handler's
// state, its rootfs and its image volumes. Each piece tolerates what is
// already gone, so it also undoes any prefix of CreateContainer (the
// sweep).
func (s *RuntimeService) releaseContainer(ctx context.Context, h handlers.Handler, c *store.Container) error {
	if err := h.RemoveContainer(ctx, c); err != nil {
		return fmt.Errorf("removing container %s: %w", c.ID, err)
	}
	if err := s.deps.Images.RemoveRootfs(ctx, c.ID); err != nil {
		return fmt.Errorf("removing rootfs of %s: %w", c.ID, err)
	}
	if err := s.removeImageVolumes(ctx, c); err != nil {
		return fmt.Errorf("removing image volumes of %s: %w", c.ID, err)
	}
	return nil
}
