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
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
)

// StopPodSandbox stops the pod's containers, its handler boundary, and then
// tears the network down. It is idempotent, and a sandbox that does not
// exist (or was removed while this call waited for its lock) is not an
// error, as with containerd and CRI-O.
func (s *RuntimeService) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	sb, err := s.deps.Store.Sandboxes.Get(req.GetPodSandboxId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	unlock := s.locks.lock(sb.ID)
	defer unlock()
	sb, err = s.deps.Store.Sandboxes.Get(sb.ID)
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.stopSandbox(ctx, sb); err != nil {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// stopSandbox is StopPodSandbox with the sandbox's lock held. While it
// runs, the sandbox is in s.stopping: its process ending (reported by the
// handler's exit watch, or seen by a concurrent list) is this stop's doing,
// and refreshSandbox leaves the transition to it.
func (s *RuntimeService) stopSandbox(ctx context.Context, sb *store.Sandbox) error {
	s.stopping.Store(sb.ID, struct{}{})
	defer s.stopping.Delete(sb.ID)
	h, err := s.sandboxHandler(sb)
	if err != nil {
		return err
	}
	if err := s.stopContainers(ctx, sb, h); err != nil {
		return err
	}
	crashpoint.After(crashStopContainers)
	if err := s.releaseBoundary(ctx, sb, h); err != nil {
		return err
	}
	if sb.State != store.SandboxNotReady {
		if _, _, err := s.setSandboxNotReady(ctx, sb.ID); err != nil {
			return err
		}
		log.G(ctx).Info("pod sandbox stopped")
	}
	return nil
}

// releaseBoundary stops sb's handler boundary and tears its network down:
// the part of stopping a sandbox that does not concern its containers.
// Every piece tolerates what is already gone, so it also undoes any prefix
// of RunPodSandbox (the sweep).
func (s *RuntimeService) releaseBoundary(ctx context.Context, sb *store.Sandbox, h handlers.Handler) error {
	if err := h.StopSandbox(ctx, sb); err != nil {
		return fmt.Errorf("stopping sandbox: %w", err)
	}
	crashpoint.After(crashStopBoundary)
	if sb.NetNSPath != "" {
		cfg, err := handlers.SandboxConfig(sb)
		if err != nil {
			return err
		}
		if err := s.deps.Network.Teardown(ctx, networkRequest(sb, cfg)); err != nil {
			return fmt.Errorf("tearing down pod network: %w", err)
		}
		crashpoint.After(crashStopNetwork)
		if err := netns.FromPath(sb.NetNSPath).Remove(); err != nil {
			return fmt.Errorf("removing network namespace: %w", err)
		}
	}
	if dir := sb.Extra["pod_dir"]; dir != "" {
		if err := podFilesIn(dir).unmountShm(); err != nil {
			return err
		}
	}
	return nil
}

// Crash points of a pod's teardown (internal/crashpoint): StopPodSandbox
// and RemovePodSandbox run no named steps (each part is idempotent, and a
// retried call finishes what a crash interrupted), so the crash tests
// name these points instead.
const (
	crashStopContainers = "teardown: containers stopped"
	crashStopBoundary   = "teardown: boundary stopped"
	crashStopNetwork    = "teardown: network torn down"
	crashRemoveCtrs     = "teardown: containers removed"
	crashRemoveSandbox  = "teardown: handler state removed"
	crashRemoveRootfs   = "teardown: infra rootfs removed"
)
