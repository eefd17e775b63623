package server

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ReopenContainerLog asks the container's monitor to reopen its log file.
func (s *RuntimeService) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	c, h, err := s.liveContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if err := h.ReopenLog(ctx, c); err != nil {
		return nil, fmt.Errorf("reopening log of %s: %w", c.ID, err)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
