package handlers

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/store"
)

// SandboxConfig decodes the config recorded at RunPodSandbox.
func SandboxConfig(sb *store.Sandbox) (*runtimeapi.PodSandboxConfig, error) {
	cfg := &runtimeapi.PodSandboxConfig{}
	if err := proto.Unmarshal(sb.Config, cfg); err != nil {
		return nil, fmt.Errorf("decoding pod config of %s: %w", sb.ID, err)
	}
	return cfg, nil
}

// StatsFrom is the usage a cgroup read reports, taken now.
func StatsFrom(d *cgroupstat.Stats) *ContainerStats {
	st := &ContainerStats{Timestamp: time.Now(), Detail: d}
	st.CPUUsageNanos, _ = d.Get(cgroupstat.CPUUsage)
	st.MemoryUsageBytes, _ = d.Get(cgroupstat.MemoryUsage)
	st.MemoryWorkingSetBytes, _ = d.Get(cgroupstat.MemoryWorkingSet)
	st.Processes, _ = d.Get(cgroupstat.Threads)
	return st
}
