package podhost

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestHostname(t *testing.T) {
	long := strings.Repeat("a", 70)
	for _, tc := range []struct {
		name     string
		hostname string
		podName  string
		want     string
	}{
		{"config hostname wins", "web-0", "web-0-long-name", "web-0"},
		{"short pod name as is", "", "web", "web"},
		{"63 bytes kept", "", strings.Repeat("b", 63), strings.Repeat("b", 63)},
		{"long name truncated to 63", "", long, long[:63]},
		{"trailing dash and dot trimmed", "", strings.Repeat("c", 61) + "-.-" + "tail", strings.Repeat("c", 61)},
		{"only dashes truncates to nothing", "", strings.Repeat("-", 70), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtimeapi.PodSandboxConfig{Hostname: tc.hostname, Metadata: &runtimeapi.PodSandboxMetadata{Name: tc.podName}}
			if got := Hostname(cfg); got != tc.want {
				t.Errorf("Hostname: got %q, want %q", got, tc.want)
			}
		})
	}
}
