package vm

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
)

var _ handlers.SandboxChecker = (*Handler)(nil)

// CheckSandbox refuses a pod this handler cannot give a VM: host
// namespaces (FailedPrecondition), or a size above max_memory_mib or
// max_vcpus (InvalidArgument). It reads the config only.
func (h *Handler) CheckSandbox(ctx context.Context, cfg *runtimeapi.PodSandboxConfig) error {
	if err := checkHostNamespaces(h.name, cfg); err != nil {
		return err
	}
	_, _, err := h.size(cfg)
	return err
}
