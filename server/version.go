package server

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RuntimeName and RuntimeAPIVersion are what Version reports.
const (
	RuntimeName       = "crivm"
	RuntimeAPIVersion = "v1"
	// kubeAPIVersion is the legacy "version" field; the kubelet ignores it.
	kubeAPIVersion = "0.1.0"
)

func (s *RuntimeService) Version(ctx context.Context, _ *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           kubeAPIVersion,
		RuntimeName:       RuntimeName,
		RuntimeVersion:    s.deps.Version,
		RuntimeApiVersion: RuntimeAPIVersion,
	}, nil
}
