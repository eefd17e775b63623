package server

import (
	"context"
	"encoding/json"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/store"
)

func (s *RuntimeService) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, err := s.deps.Store.Containers.Get(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	c = s.refreshContainer(ctx, c)
	st, err := s.containerStatus(ctx, c)
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if req.GetVerbose() {
		b, err := json.Marshal(map[string]any{"sandboxID": c.SandboxID, "process": c.Process, "exitFile": c.ExitFile})
		if err != nil {
			return nil, fmt.Errorf("encoding info: %w", err)
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

func (s *RuntimeService) containerStatus(ctx context.Context, c *store.Container) (*runtimeapi.ContainerStatus, error) {
	cfg, err := containerConfig(c)
	if err != nil {
		return nil, err
	}
	st := &runtimeapi.ContainerStatus{
		Id:          c.ID,
		Metadata:    &runtimeapi.ContainerMetadata{Name: c.Metadata.Name, Attempt: c.Metadata.Attempt},
		State:       containerState(c.State),
		CreatedAt:   c.CreatedAt.UnixNano(),
		Image:       &runtimeapi.ImageSpec{Image: c.Image, UserSpecifiedImage: cfg.GetImage().GetUserSpecifiedImage()},
		ImageRef:    c.ImageRef,
		ImageId:     c.ImageRef,
		Labels:      c.Labels,
		Annotations: c.Annotations,
		Mounts:      cfg.GetMounts(),
		LogPath:     c.LogPath,
	}
	if !c.StartedAt.IsZero() {
		st.StartedAt = c.StartedAt.UnixNano()
	}
	if c.State == store.ContainerExited {
		st.FinishedAt = c.FinishedAt.UnixNano()
		st.ExitCode = c.ExitCode
		st.Reason, st.Message = c.Reason, c.Message
	}
	return st, nil
}
