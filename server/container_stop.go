package server

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopContainer sends the image's stop signal (SIGTERM by default), waits
// for the timeout, then kills. Stopping a stopped container succeeds.
func (s *RuntimeService) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	c, _, h, unlock, err := s.lockedContainer(req.GetContainerId())
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
