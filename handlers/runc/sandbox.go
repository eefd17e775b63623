package runc

import (
	"context"
	"fmt"
	"time"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/store"
)

// infraOOMScoreAdj is what CRI-O and containerd give the pause process; it is
// clamped to what the daemon may set.
const infraOOMScoreAdj = -998

// StartSandbox runs the pod's infra (pause) container in the pod's netns.
// Its namespaces (ipc, uts, pid) are what the pod's containers join.
func (h *Handler) StartSandbox(ctx context.Context, req *handlers.SandboxRequest) (*handlers.SandboxStarted, error) {
	sb := req.Sandbox
	ctx = logger(ctx, sb.ID)
	host := h.host
	host.UserNamespaces = h.usernsSupported()
	spec, err := oci.SandboxSpec(oci.SandboxSpecInput{
		Host:           host,
		ID:             sb.ID,
		Config:         req.Config,
		Image:          req.PauseImage,
		RootfsPath:     req.PauseRootfs,
		NetNSPath:      req.NetNSPath,
		ResolvConfPath: req.ResolvConfPath,
		HostsPath:      req.HostsPath,
		HostnamePath:   req.HostnamePath,
		ShmPath:        req.ShmPath,
		OOMScoreAdj:    infraOOMScoreAdj,
	})
	if err != nil {
		return nil, fmt.Errorf("generating infra spec: %w", err)
	}
	if spec.Linux.UIDMappings != nil {
		// The sandbox creates the pod's user namespace: only its rootfs is
		// staged (userns.go), until RemoveSandbox.
		if err := h.stageUserns(ctx, sb.ID, spec, "", nil); err != nil {
			return nil, fmt.Errorf("preparing the infra rootfs for the user namespace: %w", err)
		}
	}
	p, err := h.runContainer(ctx, sb.ID, sb.Name, spec, "", monitorOptions{})
	if err != nil {
		if uerr := h.unstageUserns(sb.ID, false); uerr != nil {
			log.G(ctx).Warn("unstaging user namespace mounts", "err", uerr)
		}
		return nil, fmt.Errorf("creating infra container: %w", err)
	}
	if err := h.rt.start(ctx, sb.ID); err != nil {
		h.cleanupContainer(context.WithoutCancel(ctx), sb.ID)
		return nil, fmt.Errorf("starting infra container: %w", err)
	}
	return &handlers.SandboxStarted{Process: p}, nil
}

// StopSandbox stops the infra container: pause exits 0 on SIGTERM.
func (h *Handler) StopSandbox(ctx context.Context, sb *store.Sandbox) error {
	_, err := h.stop(logger(ctx, sb.ID), sb.ID, handlers.StopOptions{Timeout: 10 * time.Second})
	return err
}

// RemoveSandbox deletes the infra container's runtime state.
func (h *Handler) RemoveSandbox(ctx context.Context, sb *store.Sandbox) error {
	return h.cleanupContainer(logger(ctx, sb.ID), sb.ID)
}

// Restore has nothing to reattach: conmon and the exit files carry on
// without the daemon.
func (h *Handler) Restore(ctx context.Context, sb *store.Sandbox, ctrs []*store.Container) error {
	return nil
}
