package server

import (
	"context"
	"errors"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// StopContainer sends the image's stop signal (SIGTERM by default), waits
// for the timeout, then kills. Stop is idempotent, as the CRI says:
// stopping a stopped container succeeds, and so does stopping one that
// does not exist (any more), as with containerd and CRI-O.
func (s *RuntimeService) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	c, _, h, unlock, err := s.lockedContainer(req.GetContainerId())
	if errors.Is(err, errdefs.ErrNotFound) && s.containerGone(req.GetContainerId()) {
		return &runtimeapi.StopContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	c = s.refreshContainer(ctx, c)
	if err := s.stopContainer(ctx, h, c, req.GetTimeout()); err != nil {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

// containerGone reports whether no container answers to id (a unique
// prefix counts), as opposed to one whose sandbox record is missing.
func (s *RuntimeService) containerGone(id string) bool {
	_, err := s.deps.Store.Containers.Get(id)
	return errors.Is(err, errdefs.ErrNotFound)
}
