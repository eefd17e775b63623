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
		b, err := json.Marshal(map[string]any{"sandboxID": c.SandboxID, "process": c.Process, "exitFile": c.ExitFile, "imageVolumes": c.ImageVolumes})
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
		ImageRef:    imageRef(c),
		ImageId:     c.ImageRef,
		User:        containerUser(c.User),
		Labels:      c.Labels,
		Annotations: c.Annotations,
		Mounts:      statusMounts(cfg.GetMounts(), c.ImageVolumes),
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

// imageRef is the container's image_ref: a digested reference to its image
// when the image has one, else the image ID. image_id is always the image
// ID, the value PullImage's image_ref and ImageStatus's id carry.
func imageRef(c *store.Container) string {
	if c.RepoDigest != "" {
		return c.RepoDigest
	}
	return c.ImageRef
}

// containerUser is ContainerStatus.user: the identity the spec starts the
// first process with (nil for a record older than this field).
func containerUser(u *store.User) *runtimeapi.ContainerUser {
	if u == nil {
		return nil
	}
	groups := make([]int64, len(u.AdditionalGids))
	for i, g := range u.AdditionalGids {
		groups[i] = int64(g)
	}
	return &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{Uid: int64(u.UID), Gid: int64(u.GID), SupplementalGroups: groups}}
}
