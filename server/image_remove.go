package server

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/store"
)

// RemoveImage is idempotent; it refuses an image that a container uses, as
// its image or as an image volume (FailedPrecondition: a mounted image is
// never removed).
func (s *ImageService) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	inUse := func(id string) []string {
		var users []string
		for _, c := range s.deps.Store.Containers.List(func(c *store.Container) bool { return usesImage(c, id) }) {
			users = append(users, c.ID)
		}
		return users
	}
	if err := s.deps.Images.Remove(ctx, req.GetImage().GetImage(), inUse); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}
