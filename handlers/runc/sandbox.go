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
// Its namespaces (ipc, uts, pid) are what the pod's containers join. A pod
// that needs none (noinfra.go) gets its IPC and UTS namespaces pinned
// instead.
func (h *Handler) StartSandbox(ctx context.Context, req *handlers.SandboxRequest) (*handlers.SandboxStarted, error) {
	sb := req.Sandbox
	ctx = logger(ctx, sb.ID)
	host := h.host
	host.UserNamespaces = h.usernsSupported()
	in := oci.SandboxSpecInput{
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
	}
	if !h.needsInfra(req.Config) {
		return h.startPinned(ctx, req, in)
	}
	spec, err := oci.SandboxSpec(in)
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
	return &handlers.SandboxStarted{Process: p, Extra: map[string]string{extraInfra: infraPause}}, nil
}

// StopSandbox stops the infra container (pause exits 0 on SIGTERM), or
// unpins the namespaces of a pod without one.
func (h *Handler) StopSandbox(ctx context.Context, sb *store.Sandbox) error {
	ctx = logger(ctx, sb.ID)
	if err := releasePins(sb); err != nil {
		return err
	}
	if !hasInfra(sb) {
		return nil
	}
	_, err := h.stop(ctx, sb.ID, handlers.StopOptions{Timeout: 10 * time.Second})
	return err
}

// RemoveSandbox deletes the infra container's runtime state, or the pins
// of a pod without one (StopSandbox has released them already).
func (h *Handler) RemoveSandbox(ctx context.Context, sb *store.Sandbox) error {
	ctx = logger(ctx, sb.ID)
	if err := releasePins(sb); err != nil {
		return err
	}
	if !hasInfra(sb) {
		return nil
	}
	return h.cleanupContainer(ctx, sb.ID)
}

// Restore has nothing to reattach: conmon and the exit files carry on
// without the daemon.
func (h *Handler) Restore(ctx context.Context, sb *store.Sandbox, ctrs []*store.Container) error {
	return nil
}
