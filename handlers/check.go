package handlers

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// SandboxChecker is implemented by a handler that can refuse a pod from its
// config alone (its size, its namespaces). RunPodSandbox asks it before
// anything is made for the pod (pod files, netns, CNI), so a pod the
// handler cannot run costs no network setup and no teardown. StartSandbox
// still checks again: it is the handler's own boundary.
type SandboxChecker interface {
	CheckSandbox(ctx context.Context, cfg *runtimeapi.PodSandboxConfig) error
}

// Warmer is implemented by a handler that prepares ahead of its first pod
// (the vm handler builds its VM template, or boots its pool). The daemon
// calls Warm in the background once it serves, and Cool when it shuts
// down, which releases what was prepared and no pod took (pooled VMs);
// both log their own failures.
type Warmer interface {
	Warm(ctx context.Context)
	Cool(ctx context.Context)
}

// PauseUser is implemented by a handler that runs some pods' sandbox from
// the pause image (runc's infra container). RunPodSandbox prepares the
// pause rootfs only for a pod NeedsPause is true for; a handler that does
// not implement it gets none.
type PauseUser interface {
	NeedsPause(cfg *runtimeapi.PodSandboxConfig) bool
}
