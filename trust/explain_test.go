package trust

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
)

func TestPodInputFromConfig(t *testing.T) {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:    &runtimeapi.PodSandboxMetadata{Name: "n", Namespace: "ns", Uid: "u"},
		Labels:      map[string]string{"a": "b"},
		Annotations: map[string]string{annTS: "false"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			Privileged: true,
			NamespaceOptions: &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode_NODE,
				Pid:     runtimeapi.NamespaceMode_CONTAINER,
				Ipc:     runtimeapi.NamespaceMode_NODE,
			},
		}},
	}
	got := PodInputFromConfig(cfg, "kata")
	if got.Namespace != "ns" || got.Name != "n" || got.UID != "u" || got.RuntimeHandler != "kata" ||
		got.Labels["a"] != "b" || got.Annotations[annTS] != "false" ||
		!got.Privileged || !got.HostNetwork || got.HostPID || !got.HostIPC || got.Images != nil {
		t.Errorf("got %+v", got)
	}
	if empty := PodInputFromConfig(nil, ""); empty.Privileged || empty.HostNetwork || empty.Namespace != "" {
		t.Errorf("nil config: got %+v", empty)
	}
}

const podJSON = `{
  "metadata": {"name": "web", "namespace": "%s", "uid": "abc"},
  "labels": {"team": "payments"},
  "log_directory": "/tmp",
  "linux": {"security_context": {"namespace_options": {"network": %d}}}
}`

func TestExplain(t *testing.T) {
	cfg := configs.Defaults()
	p, err := LoadPolicy("../configs/trust-policy.toml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	pod := func(ns string, netMode runtimeapi.NamespaceMode) []byte {
		return []byte(strings.NewReplacer("%s", ns, "%d", string(rune('0'+netMode))).Replace(podJSON))
	}
	tests := []struct {
		name     string
		pod      []byte
		rc       string
		images   []string
		wantCode codes.Code
		wantOut  []string
	}{
		{"tenant", pod("tenant-a", runtimeapi.NamespaceMode_POD), "", nil, codes.OK,
			[]string{"pod:      tenant-a/web", "handler:  vm (vm)", "trusted:  false", "rule:     tenants", `  - rule "tenants" (file ../configs/trust-policy.toml)`}},
		{"system, image checks", pod("kube-system", runtimeapi.NamespaceMode_POD), "", []string{"registry.k8s.io/pause:3.10", "busybox"}, codes.OK,
			[]string{"handler:  runc (oci)", `image "registry.k8s.io/pause:3.10": admitted, trusted true`, `image "busybox": admitted, trusted true (rule "system-namespaces"`}},
		{"default ns, public image", pod("default", runtimeapi.NamespaceMode_POD), "", []string{"busybox"}, codes.FailedPrecondition,
			[]string{"rule:     (none)", `image "busybox": refused: image "busybox" matches rule "public-images" (untrusted) but pod runs on oci handler "runc" (FailedPrecondition)`}},
		{"tenant on host network", pod("tenant-a", runtimeapi.NamespaceMode_NODE), "", nil, codes.FailedPrecondition,
			[]string{"refused:  untrusted pod may not request host network", "(FailedPrecondition)"}},
		{"unknown handler", pod("default", runtimeapi.NamespaceMode_POD), "gvisor", nil, codes.InvalidArgument,
			[]string{"asked:    runtime handler gvisor", `refused:  unknown runtime handler "gvisor" (configured: runc, vm; aliases: kata→vm) (InvalidArgument)`}},
		{"bad JSON", []byte(`{"metadata": {"nam": "x"}}`), "", nil, codes.InvalidArgument, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Explain(&out, cfg, p, tt.pod, tt.rc, tt.images)
			if got := errdefs.Code(err); got != tt.wantCode {
				t.Fatalf("code: got %v (%v), want %v\n%s", got, err, tt.wantCode, out.String())
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
