package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/store"
)

// PodSandboxStatus reports the sandbox, its IPs and namespaces; verbose info
// carries the trust verdict, the handler and the infra process.
func (s *RuntimeService) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	sb, err := s.deps.Store.Sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	sb = s.refreshSandbox(ctx, sb)
	st, err := s.sandboxStatus(sb)
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: st, Timestamp: time.Now().UnixNano()}
	for _, c := range s.deps.Store.Containers.List(func(c *store.Container) bool { return c.SandboxID == sb.ID }) {
		if cs, err := s.containerStatus(ctx, c); err == nil {
			resp.ContainersStatuses = append(resp.ContainersStatuses, cs)
		}
	}
	if req.GetVerbose() {
		v, err := sandboxVerdict(sb)
		if err != nil {
			return nil, err
		}
		info := map[string]any{
			"handler":   sb.Handler,
			"trust":     v,
			"netnsPath": sb.NetNSPath,
			"process":   sb.Process,
			"podDir":    sb.Extra["pod_dir"],
			"extra":     sb.Extra,
		}
		b, err := json.Marshal(info)
		if err != nil {
			return nil, fmt.Errorf("encoding info: %w", err)
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

func (s *RuntimeService) sandboxStatus(sb *store.Sandbox) (*runtimeapi.PodSandboxStatus, error) {
	cfg, err := handlers.SandboxConfig(sb)
	if err != nil {
		return nil, err
	}
	st := &runtimeapi.PodSandboxStatus{
		Id:             sb.ID,
		Metadata:       podMetadata(sb.Metadata),
		State:          sandboxState(sb.State),
		CreatedAt:      sb.CreatedAt.UnixNano(),
		Network:        &runtimeapi.PodSandboxNetworkStatus{Ip: sb.IP},
		Linux:          &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()}},
		Labels:         sb.Labels,
		Annotations:    sb.Annotations,
		RuntimeHandler: sb.RuntimeHandler,
	}
	for _, ip := range sb.AdditionalIPs {
		st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
	}
	return st, nil
}
