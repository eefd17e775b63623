package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/podns"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/trust"
)

func containerConfig(c *store.Container) (*runtimeapi.ContainerConfig, error) {
	cfg := &runtimeapi.ContainerConfig{}
	if err := proto.Unmarshal(c.Config, cfg); err != nil {
		return nil, fmt.Errorf("decoding container config of %s: %w", c.ID, err)
	}
	return cfg, nil
}

func sandboxVerdict(sb *store.Sandbox) (trust.Verdict, error) {
	var v trust.Verdict
	if err := json.Unmarshal(sb.Trust, &v); err != nil {
		return v, fmt.Errorf("decoding trust verdict of %s: %w", sb.ID, err)
	}
	return v, nil
}

// sandboxAlive reports whether sb's boundary still exists: its process
// (the infra container's, the VM's hypervisor) when it has one; else the
// namespaces it holds by pins (a runc pod without an infra container): its
// network namespace and those its record names (podns.RecordedPins), all
// of them. A pod with neither (host network and IPC, no infra container)
// has nothing that could end.
func sandboxAlive(sb *store.Sandbox) bool {
	if sb.Process != nil {
		return proc.Alive(sb.Process.Pid, sb.Process.StartTime, sb.Process.BootID)
	}
	pins := podns.RecordedPins(sb.Extra)
	if sb.NetNSPath != "" {
		pins = append(pins, sb.NetNSPath)
	}
	for _, p := range pins {
		if !podns.Exists(p) {
			return false
		}
	}
	return true
}

// refreshSandbox marks a ready sandbox NotReady when its boundary is gone
// (sandboxAlive), with a warning: the pod died under its containers. A
// sandbox being stopped is left to the stop, which ended the process and
// records the transition itself; nor does a stale copy of a sandbox that a
// stop has already recorded NotReady warn.
func (s *RuntimeService) refreshSandbox(ctx context.Context, sb *store.Sandbox) *store.Sandbox {
	if sb.State != store.SandboxReady || sandboxAlive(sb) {
		return sb
	}
	if _, stopping := s.stopping.Load(sb.ID); stopping {
		return sb
	}
	upd, changed, err := s.setSandboxNotReady(ctx, sb.ID)
	if err != nil {
		log.G(ctx).Warn("recording a dead sandbox", "sandbox", sb.ID, "err", err)
		return sb
	}
	if changed {
		log.G(ctx).Warn("sandbox process is gone: sandbox is NotReady", "sandbox", sb.ID)
	}
	return upd
}

// setSandboxNotReady records the transition and emits its event once;
// changed says whether this call made it.
func (s *RuntimeService) setSandboxNotReady(ctx context.Context, id string) (upd *store.Sandbox, changed bool, err error) {
	var prev store.SandboxState
	upd, err = s.deps.Store.Sandboxes.Update(id, func(r *store.Sandbox) error {
		prev, r.State = r.State, store.SandboxNotReady
		return nil
	})
	if err == nil && prev != store.SandboxNotReady {
		s.emitSandbox(ctx, upd, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
		changed = true
	}
	return upd, changed, err
}

// applyContainerState persists st and emits the event of each transition:
// STARTED, and STOPPED (after STARTED for a container that exited at once).
func (s *RuntimeService) applyContainerState(ctx context.Context, id string, st *handlers.ContainerState) (*store.Container, error) {
	var prev store.ContainerState
	upd, err := s.deps.Store.Containers.Update(id, func(r *store.Container) error {
		prev = r.State
		st.Apply(r)
		return nil
	})
	if err != nil || prev == upd.State {
		return upd, err
	}
	if prev == store.ContainerCreated && upd.State == store.ContainerExited && !upd.StartedAt.IsZero() {
		s.emitContainer(ctx, upd, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	}
	switch upd.State {
	case store.ContainerRunning:
		s.emitContainer(ctx, upd, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	case store.ContainerExited:
		s.emitContainer(ctx, upd, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	}
	return upd, nil
}

// refreshContainer asks the handler for a created or running container's
// state and persists a change.
func (s *RuntimeService) refreshContainer(ctx context.Context, c *store.Container) *store.Container {
	if c.State != store.ContainerRunning && c.State != store.ContainerCreated {
		return c
	}
	sb, err := s.deps.Store.Sandboxes.Get(c.SandboxID)
	if err != nil {
		return c
	}
	entry, err := s.deps.Handlers.Get(sb.Handler)
	if err != nil {
		return c
	}
	st, err := entry.ContainerState(ctx, c)
	if err != nil {
		log.G(ctx).Warn("reading container state", "container", c.ID, "err", err)
		return c
	}
	if st.State == c.State {
		return c
	}
	upd, err := s.applyContainerState(ctx, c.ID, st)
	if err != nil {
		return c
	}
	return upd
}

// stopContainers stops every container of sb that still runs, killing them
// at once (the kubelet has already asked each to stop gracefully).
func (s *RuntimeService) stopContainers(ctx context.Context, sb *store.Sandbox, h handlers.Handler) error {
	var errs []error
	for _, c := range s.deps.Store.Containers.List(func(c *store.Container) bool { return c.SandboxID == sb.ID }) {
		if err := s.stopContainer(ctx, h, c, 0); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopContainer stops c if it has not exited and persists the result.
func (s *RuntimeService) stopContainer(ctx context.Context, h handlers.Handler, c *store.Container, timeout int64) error {
	if c.State == store.ContainerExited {
		return nil
	}
	st, err := h.StopContainer(ctx, c, handlers.StopOptions{Timeout: secondsDuration(timeout), Signal: stopSignal(c)})
	if err != nil {
		return fmt.Errorf("stopping container %s: %w", c.ID, err)
	}
	_, err = s.applyContainerState(ctx, c.ID, st)
	return err
}

// sandboxHandler returns the handler of sb, or FailedPrecondition.
func (s *RuntimeService) sandboxHandler(sb *store.Sandbox) (handlers.Handler, error) {
	e, err := s.deps.Handlers.Get(sb.Handler)
	if err != nil {
		return nil, errdefs.FailedPrecondition("sandbox %s: %w", sb.ID, err)
	}
	return e.Handler, nil
}

// lockedContainer finds a container (a unique ID prefix works), locks it,
// and returns it as it is under the lock with its sandbox and handler. The
// caller runs unlock.
func (s *RuntimeService) lockedContainer(id string) (c *store.Container, sb *store.Sandbox, h handlers.Handler, unlock func(), err error) {
	c, err = s.deps.Store.Containers.Get(id)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	unlock = s.locks.lock(c.ID)
	fail := func(err error) (*store.Container, *store.Sandbox, handlers.Handler, func(), error) {
		unlock()
		return nil, nil, nil, nil, err
	}
	if c, err = s.deps.Store.Containers.Get(c.ID); err != nil {
		return fail(err)
	}
	if sb, err = s.deps.Store.Sandboxes.Get(c.SandboxID); err != nil {
		return fail(err)
	}
	if h, err = s.sandboxHandler(sb); err != nil {
		return fail(err)
	}
	return c, sb, h, unlock, nil
}
