package server

import (
	"context"
	"slices"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
)

// TestStatusRuntimeHandlers: the default handler is listed under the empty
// name the kubelet asks for pods without a RuntimeClass, besides every
// handler and alias, each with features.
func TestStatusRuntimeHandlers(t *testing.T) {
	cfg := configs.Defaults()
	s := NewRuntimeService(Deps{Config: func() *configs.Config { return cfg }})
	resp, err := s.Status(context.Background(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range resp.GetRuntimeHandlers() {
		names = append(names, h.GetName())
		if h.GetFeatures() == nil {
			t.Errorf("handler %q has no features", h.GetName())
		}
	}
	if want := []string{"", "runc", "vm", "kata"}; !slices.Equal(names, want) {
		t.Errorf("runtime handlers %q, want %q", names, want)
	}
}
