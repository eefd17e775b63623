package server

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/store"
)

func (s *RuntimeService) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	ctrs := s.deps.Store.Containers.List(func(c *store.Container) bool {
		if f == nil {
			return true
		}
		if f.GetId() != "" && !strings.HasPrefix(c.ID, f.GetId()) {
			return false
		}
		if f.GetPodSandboxId() != "" && !strings.HasPrefix(c.SandboxID, f.GetPodSandboxId()) {
			return false
		}
		return labelsMatch(c.Labels, f.GetLabelSelector())
	})
	resp := &runtimeapi.ListContainersResponse{Containers: make([]*runtimeapi.Container, 0, len(ctrs))}
	for _, c := range ctrs {
		// The state filter applies after the refresh: the kubelet learns of
		// exits from this list.
		c = s.refreshContainer(ctx, c)
		if f.GetState() != nil && containerState(c.State) != f.GetState().GetState() {
			continue
		}
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id:           c.ID,
			PodSandboxId: c.SandboxID,
			Metadata:     &runtimeapi.ContainerMetadata{Name: c.Metadata.Name, Attempt: c.Metadata.Attempt},
			Image:        &runtimeapi.ImageSpec{Image: c.Image},
			ImageRef:     imageRef(c),
			ImageId:      c.ImageRef,
			State:        containerState(c.State),
			CreatedAt:    c.CreatedAt.UnixNano(),
			Labels:       c.Labels,
			Annotations:  c.Annotations,
		})
	}
	return resp, nil
}

func containerState(s store.ContainerState) runtimeapi.ContainerState {
	switch s {
	case store.ContainerCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case store.ContainerRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case store.ContainerExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}
