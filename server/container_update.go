package server

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/store"
)

// UpdateContainerResources applies new cgroup limits to a running or
// created container.
func (s *RuntimeService) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if err := checkResources("linux", req.GetLinux()); err != nil {
		return nil, err
	}
	c, h, err := s.liveContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	unlock := s.locks.lock(c.ID)
	defer unlock()
	res, err := oci.Resources(req.GetLinux(), &oci.Host{})
	if err != nil {
		return nil, err
	}
	if err := h.UpdateResources(ctx, c, res); err != nil {
		return nil, fmt.Errorf("updating resources of %s: %w", c.ID, err)
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// liveContainer finds a container that has not exited, and its handler.
func (s *RuntimeService) liveContainer(ctx context.Context, id string) (*store.Container, handlers.Handler, error) {
	c, err := s.deps.Store.Containers.Get(id)
	if err != nil {
		return nil, nil, err
	}
	c = s.refreshContainer(ctx, c)
	if c.State == store.ContainerExited {
		return nil, nil, errdefs.FailedPrecondition("container %s has exited", c.ID)
	}
	sb, err := s.deps.Store.Sandboxes.Get(c.SandboxID)
	if err != nil {
		return nil, nil, err
	}
	h, err := s.sandboxHandler(sb)
	if err != nil {
		return nil, nil, err
	}
	return c, h, nil
}
