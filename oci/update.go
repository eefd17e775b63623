package oci

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Resources maps CRI container resources to OCI ones, as ContainerSpec
// does; UpdateContainerResources uses it.
func Resources(r *runtimeapi.LinuxContainerResources, h *Host) (*specs.LinuxResources, error) {
	return linuxResources(r, h)
}
