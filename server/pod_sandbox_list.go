package server

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/store"
)

func (s *RuntimeService) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	sbs := s.deps.Store.Sandboxes.List(func(sb *store.Sandbox) bool {
		if f == nil {
			return true
		}
		if f.GetId() != "" && !strings.HasPrefix(sb.ID, f.GetId()) {
			return false
		}
		return labelsMatch(sb.Labels, f.GetLabelSelector())
	})
	resp := &runtimeapi.ListPodSandboxResponse{Items: make([]*runtimeapi.PodSandbox, 0, len(sbs))}
	for _, sb := range sbs {
		sb = s.refreshSandbox(ctx, sb)
		if f.GetState() != nil && sandboxState(sb.State) != f.GetState().GetState() {
			continue
		}
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{
			Id:             sb.ID,
			Metadata:       podMetadata(sb.Metadata),
			State:          sandboxState(sb.State),
			CreatedAt:      sb.CreatedAt.UnixNano(),
			Labels:         sb.Labels,
			Annotations:    sb.Annotations,
			RuntimeHandler: sb.RuntimeHandler,
		})
	}
	return resp, nil
}

func podMetadata(m store.PodMetadata) *runtimeapi.PodSandboxMetadata {
	return &runtimeapi.PodSandboxMetadata{Name: m.Name, Uid: m.UID, Namespace: m.Namespace, Attempt: m.Attempt}
}

func sandboxState(s store.SandboxState) runtimeapi.PodSandboxState {
	if s == store.SandboxReady {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

// labelsMatch reports whether labels hold every key=value of selector.
func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
