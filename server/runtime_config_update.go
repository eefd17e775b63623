package server

import (
	"context"
	"net"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// UpdateRuntimeConfig records the pod CIDR the kubelet sends; verbose Status
// shows it. crivm's CNI configs carry their own ranges, so it changes no
// network by itself.
func (s *RuntimeService) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	cidr := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	if cidr != "" {
		for _, c := range strings.Split(cidr, ",") {
			if _, _, err := net.ParseCIDR(strings.TrimSpace(c)); err != nil {
				return nil, errdefs.InvalidArgument("pod CIDR %q: %w", c, err)
			}
		}
	}
	s.podCIDR.Store(&cidr)
	log.G(ctx).Info("runtime config updated", "pod_cidr", cidr)
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}
