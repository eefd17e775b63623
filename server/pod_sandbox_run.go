package server

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/trust"
)

// RunPodSandbox classifies the pod and hands it to the chosen handler. A
// refused pod creates nothing: the trust decision comes before any resource.
func (s *RuntimeService) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	if err := validatePodConfig(cfg); err != nil {
		return nil, err
	}
	in := trust.PodInputFromConfig(cfg, req.GetRuntimeHandler())
	v, err := s.deps.Trust.Decide(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s refused: %w", in.Namespace, in.Name, err)
	}
	log.G(ctx).Info("trust verdict", "pod", in.Namespace+"/"+in.Name, "handler", v.Handler, "trusted", v.Trusted, "reasons", v.Reasons)
	return nil, handlerUnavailable(v)
}

// handlerUnavailable is the answer while a handler type has no
// implementation in this build. A vm-routed pod is refused with
// FailedPrecondition: it must never fall back to an oci handler.
func handlerUnavailable(v trust.Verdict) error {
	if v.HandlerType == configs.RuntimeTypeVM {
		return errdefs.FailedPrecondition("no vm handler available for handler %q: the vm runtime type is not implemented in this build, and a pod routed to a VM is never run outside one", v.Handler)
	}
	return errdefs.Unimplemented("handler %q: the oci runtime type is not implemented in this build", v.Handler)
}

func validatePodConfig(cfg *runtimeapi.PodSandboxConfig) error {
	switch {
	case cfg == nil:
		return errdefs.InvalidArgument("pod sandbox config is missing")
	case cfg.GetMetadata() == nil:
		return errdefs.InvalidArgument("pod sandbox metadata is missing")
	case cfg.GetMetadata().GetName() == "":
		return errdefs.InvalidArgument("pod sandbox metadata.name is empty")
	case cfg.GetMetadata().GetNamespace() == "":
		return errdefs.InvalidArgument("pod sandbox metadata.namespace is empty")
	case cfg.GetMetadata().GetUid() == "":
		return errdefs.InvalidArgument("pod sandbox metadata.uid is empty")
	}
	return nil
}
