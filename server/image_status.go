package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// ImageStatus answers an empty response for an image that is not present,
// as the CRI asks. Verbose info holds the image's OCI config.
func (s *ImageService) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	img, err := s.deps.Images.Status(ctx, req.GetImage().GetImage())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: criImage(img)}
	if req.GetVerbose() {
		b, err := json.Marshal(map[string]any{"id": img.ID, "imageSpec": img.Config})
		if err != nil {
			return nil, fmt.Errorf("encoding image config: %w", err)
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}
