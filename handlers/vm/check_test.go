package vm

import (
	"context"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
)

// TestCheckSandbox: the refusals RunPodSandbox gets before any pod file,
// netns or CNI ADD is made.
func TestCheckSandbox(t *testing.T) {
	h := &Handler{name: "vm", cfg: &configs.RuntimeHandler{DefaultVCPUs: 1, DefaultMemoryMiB: 256, MaxVCPUs: 2, MaxMemoryMiB: 1024}}
	pod := func(ns *runtimeapi.NamespaceOption, res *runtimeapi.LinuxContainerResources) *runtimeapi.PodSandboxConfig {
		return &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{
			Resources:       res,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns},
		}}
	}
	tests := []struct {
		name string
		cfg  *runtimeapi.PodSandboxConfig
		want error // nil: accepted
	}{
		{"no limits", pod(nil, nil), nil},
		{"within both bounds", pod(nil, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 512 << 20, CpuQuota: 150000, CpuPeriod: 100000}), nil},
		{"host network", pod(&runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}, nil), errdefs.ErrFailedPrecondition},
		{"memory above max_memory_mib", pod(nil, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2 << 30}), errdefs.ErrInvalidArgument},
		{"CPU above max_vcpus", pod(nil, &runtimeapi.LinuxContainerResources{CpuQuota: 250000, CpuPeriod: 100000}), errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		err := h.CheckSandbox(context.Background(), tt.cfg)
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errdefs.IsClass(err, tt.want)) {
			t.Errorf("%s: got %v, want class %v", tt.name, err, tt.want)
		}
	}
}
