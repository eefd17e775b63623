package server

import (
	"context"
	"errors"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/crashpoint"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/store"
)

// RemovePodSandbox stops the sandbox if needed, removes its containers and
// everything it holds. Idempotent: a sandbox that does not exist, or was
// removed while this call waited for its lock, is not an error.
func (s *RuntimeService) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	sb, err := s.deps.Store.Sandboxes.Get(req.GetPodSandboxId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	unlock := s.locks.lock(sb.ID)
	defer unlock()
	sb, err = s.deps.Store.Sandboxes.Get(sb.ID)
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.stopSandbox(ctx, sb); err != nil {
		return nil, err
	}
	h, err := s.sandboxHandler(sb)
	if err != nil {
		return nil, err
	}
	for _, c := range s.deps.Store.Containers.List(func(c *store.Container) bool { return c.SandboxID == sb.ID }) {
		if err := s.removeContainer(ctx, h, c); err != nil {
			return nil, err
		}
	}
	crashpoint.After(crashRemoveCtrs)
	if err := s.releaseSandbox(ctx, sb, h); err != nil {
		return nil, err
	}
	if cur, err := s.deps.Store.Sandboxes.Get(sb.ID); err == nil {
		s.emitSandbox(ctx, cur, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	}
	if err := s.deps.Store.Sandboxes.Delete(sb.ID); err != nil {
		return nil, err
	}
	s.podCPU.Delete(sb.ID)
	log.G(ctx).Info("pod sandbox removed")
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// releaseSandbox removes what sb holds once its boundary is released: the
// handler's state, the infra rootfs and the pod's files. Idempotent.
func (s *RuntimeService) releaseSandbox(ctx context.Context, sb *store.Sandbox, h handlers.Handler) error {
	if err := h.RemoveSandbox(ctx, sb); err != nil {
		return fmt.Errorf("removing sandbox: %w", err)
	}
	crashpoint.After(crashRemoveSandbox)
	if err := s.deps.Images.RemoveRootfs(ctx, sb.ID); err != nil {
		return fmt.Errorf("removing infra rootfs: %w", err)
	}
	crashpoint.After(crashRemoveRootfs)
	if dir := sb.Extra["pod_dir"]; dir != "" {
		if err := podFilesIn(dir).remove(); err != nil {
			return fmt.Errorf("removing pod files: %w", err)
		}
	}
	return nil
}
