package server

import (
	"context"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStopContainerUnknown: the CRI makes stop idempotent, so stopping a
// container that does not exist (any more) succeeds, as with containerd
// and CRI-O (critest stops unknown IDs).
func TestStopContainerUnknown(t *testing.T) {
	s, _ := newTestService(t, nil)
	for _, id := range []string{strings.Repeat("cd", 32), "cdcd"} {
		if _, err := s.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
			t.Errorf("StopContainer(%q): %v, want success", id, err)
		}
	}
}
