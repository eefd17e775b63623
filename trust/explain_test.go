package trust

import (
	"bytes"
	"os"
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
			err := Explain(&out, cfg, p, ExplainInput{Pod: tt.pod, RuntimeHandler: tt.rc, Images: tt.images})
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

func TestExplainMounts(t *testing.T) {
	f := newMountFixture(t)
	const pod = `{"metadata": {"name": "web", "namespace": "tenant-a", "uid": "abc"}}`
	ctr := func(mounts, devices string) []byte {
		return []byte(`{"metadata": {"name": "app"}, "image": {"image": "busybox"}, "mounts": [` + mounts + `], "devices": [` + devices + `]}`)
	}
	mount := func(hp string) string { return `{"host_path": "` + hp + `", "container_path": "/m"}` }
	tests := []struct {
		name      string
		pod       string
		container []byte
		wantCode  codes.Code
		wantOut   []string
		notOut    []string
	}{
		{"allowed and refused", pod, ctr(strings.Join([]string{
			mount(f.p("klink/pods/abc/volumes/v")), mount(f.p("srv/shared")), mount(f.p("models")),
			mount("/etc"), mount(f.p("links/etc")), mount(f.p("missing")),
		}, ","), `{"host_path": "/dev/null"}, {"host_path": "/dev/kvm"}`), codes.FailedPrecondition, []string{
			`trusted:  false`, `rule:     tenants`,
			`container "app":`,
			`  mount  "` + f.p("klink/pods/abc/volumes/v") + `" -> "` + f.p("kubelet/pods/abc/volumes/v") + `": allowed by the pod's own kubelet directory "` + f.p("kubelet/pods/abc") + `"`,
			`  mount  "` + f.p("srv/shared") + `": allowed by untrusted_allowed_host_paths entry "` + f.p("srv/shared") + `"`,
			`  mount  "` + f.p("models") + `": allowed by allow_host_paths entry "` + f.p("models") + `" of rule "tenants"`,
			`  mount  "/etc": refused: hostPath "/etc" (resolved "/etc") refused by the mount policy, rule: deny by default (pod untrusted by rule "tenants")`,
			`  mount  "` + f.p("links/etc") + `" -> "/etc": refused: hostPath "` + f.p("links/etc") + `" (resolved "/etc") refused by the mount policy, rule: deny by default`,
			`  mount  "` + f.p("missing") + `": refused: hostPath "` + f.p("missing") + `" does not exist (sources are never created for untrusted pods) (FailedPrecondition)`,
			`  device "/dev/null": allowed by untrusted_allowed_devices entry "/dev/null"`,
			`  device "/dev/kvm": refused: device "/dev/kvm" refused by the mount policy, rule: no host devices by default (pod untrusted by rule "tenants"): untrusted pods get no host devices unless listed in untrusted_allowed_devices (FailedPrecondition)`,
			// The container's image is checked too.
			`image "busybox": admitted, trusted false`,
		}, nil},
		{"all allowed", pod, ctr(mount(f.p("srv/shared/sub")), ""), codes.OK,
			[]string{`  mount  "` + f.p("srv/shared/sub") + `": allowed by untrusted_allowed_host_paths`}, []string{"refused"}},
		{"no mounts", pod, ctr("", ""), codes.OK, []string{`container "app":`, "no hostPath mounts or devices"}, nil},
		{"trusted pod", `{"metadata": {"name": "sys", "namespace": "kube-system", "uid": "abc"}}`, ctr(mount("/etc"), ""), codes.OK,
			[]string{"trusted:  true", "1 hostPath mounts and devices: not restricted"}, []string{"refused"}},
		{"bad container JSON", pod, []byte(`{"metadata": {"nme": "x"}}`), codes.InvalidArgument, nil, nil},
	}
	p := mustPolicy(t, f.cfg, `
[[rule]]
name = "system"
trust = "trusted"
[rule.match]
namespaces = ["kube-system"]

[[rule]]
name = "tenants"
trust = "untrusted"
allow_host_paths = ["`+f.p("models")+`"]
[rule.match]
namespaces = ["tenant-*"]
`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Explain(&out, f.cfg, p, ExplainInput{Pod: []byte(tt.pod), Container: tt.container})
			if got := errdefs.Code(err); got != tt.wantCode {
				t.Fatalf("code: got %v (%v), want %v\n%s", got, err, tt.wantCode, out.String())
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tt.notOut {
				if strings.Contains(out.String(), w) {
					t.Errorf("output has %q:\n%s", w, out.String())
				}
			}
		})
	}
	if _, err := os.Lstat(f.p("missing")); !os.IsNotExist(err) {
		t.Errorf("explain created a missing source (%v)", err)
	}
}
