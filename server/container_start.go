package server

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/store"
)

func (s *RuntimeService) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, sb, h, unlock, err := s.lockedContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if c.State != store.ContainerCreated {
		return nil, errdefs.FailedPrecondition("container %s is %s, not created", c.ID, c.State)
	}
	st, serr := h.StartContainer(ctx, sb, c)
	if st != nil {
		if _, err := s.applyContainerState(ctx, c.ID, st); err != nil {
			return nil, err
		}
	}
	if serr != nil {
		return nil, fmt.Errorf("starting container %s: %w", c.ID, serr)
	}
	return &runtimeapi.StartContainerResponse{}, nil
}
