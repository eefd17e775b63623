package trust

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
)

const (
	annTS = AnnotationTrustedSandbox
	annUW = AnnotationUntrustedWorkload
)

func TestRoutingTable(t *testing.T) {
	untrustedAnn := map[string]map[string]string{
		"TrustedSandbox=false":      {annTS: "false"},
		"untrusted-workload=true":   {annUW: "true"},
		"both lowering annotations": {annTS: "false", annUW: "true"},
	}
	type want struct {
		handler string
		trusted bool
		code    codes.Code
	}
	tests := []struct {
		name     string
		def      string // default_workload_trust
		ann      string // key into untrustedAnn, "" for none
		rc       string // RuntimeClass handler
		want     want
		reasonIn string // a substring of one reason (or of the error)
	}{
		{"trusted/no annotation", configs.Trusted, "", "", want{"runc", true, codes.OK}, "default_workload_trust = trusted"},
		{"trusted/TrustedSandbox=false", configs.Trusted, "TrustedSandbox=false", "", want{"vm", false, codes.OK}, "annotation io.kubernetes.cri-o.TrustedSandbox=false"},
		{"trusted/untrusted-workload=true", configs.Trusted, "untrusted-workload=true", "", want{"vm", false, codes.OK}, "annotation io.kubernetes.cri.untrusted-workload=true"},
		{"trusted/both annotations", configs.Trusted, "both lowering annotations", "", want{"vm", false, codes.OK}, "untrusted-workload=true"},
		{"trusted/RC vm", configs.Trusted, "", "vm", want{"vm", true, codes.OK}, `handler "vm" requested by RuntimeClass`},
		{"trusted/RC alias kata", configs.Trusted, "", "kata", want{"vm", true, codes.OK}, `as alias "kata"`},
		{"trusted/RC oci", configs.Trusted, "", "runc", want{"runc", true, codes.OK}, `handler "runc" requested by RuntimeClass`},
		{"trusted/RC other oci", configs.Trusted, "", "crun", want{"crun", true, codes.OK}, ""},
		{"trusted/annotation+RC vm", configs.Trusted, "TrustedSandbox=false", "vm-big", want{"vm-big", false, codes.OK}, ""},
		{"trusted/annotation+RC kata", configs.Trusted, "untrusted-workload=true", "kata", want{"vm", false, codes.OK}, ""},
		{"trusted/annotation+RC oci", configs.Trusted, "TrustedSandbox=false", "runc", want{code: codes.FailedPrecondition}, `runtime handler "runc" has runtime_type "oci" but the pod is untrusted (annotation io.kubernetes.cri-o.TrustedSandbox=false)`},
		{"untrusted/no annotation", configs.Untrusted, "", "", want{"vm", false, codes.OK}, "default_workload_trust = untrusted"},
		{"untrusted/TrustedSandbox=false", configs.Untrusted, "TrustedSandbox=false", "", want{"vm", false, codes.OK}, ""},
		{"untrusted/untrusted-workload=true", configs.Untrusted, "untrusted-workload=true", "", want{"vm", false, codes.OK}, ""},
		{"untrusted/RC vm", configs.Untrusted, "", "vm", want{"vm", false, codes.OK}, ""},
		{"untrusted/RC alias kata", configs.Untrusted, "", "kata", want{"vm", false, codes.OK}, ""},
		{"untrusted/RC oci", configs.Untrusted, "", "runc", want{code: codes.FailedPrecondition}, "default_workload_trust = untrusted"},
		{"untrusted/annotation+RC oci", configs.Untrusted, "untrusted-workload=true", "crun", want{code: codes.FailedPrecondition}, `runtime handler "crun"`},
		{"unknown RC handler", configs.Trusted, "", "gvisor", want{code: codes.InvalidArgument},
			`unknown runtime handler "gvisor" (configured: crun, runc, vm, vm-big; aliases: kata→vm)`},
		{"unknown RC handler, untrusted", configs.Untrusted, "TrustedSandbox=false", "x", want{code: codes.InvalidArgument}, `unknown runtime handler "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(testConfig(tt.def, "vm"), nil)
			v, err := c.Classify(PodInput{Namespace: "default", Name: "p", RuntimeHandler: tt.rc, Annotations: untrustedAnn[tt.ann]})
			if got := errdefs.Code(err); got != tt.want.code {
				t.Fatalf("code: got %v (%v), want %v", got, err, tt.want.code)
			}
			if err != nil {
				if v.Handler != "" || v.Reasons != nil {
					t.Errorf("refusal returned a non-zero verdict %+v", v)
				}
				if !strings.Contains(err.Error(), tt.reasonIn) {
					t.Errorf("error %q does not contain %q", err, tt.reasonIn)
				}
				return
			}
			if v.Handler != tt.want.handler || v.Trusted != tt.want.trusted {
				t.Errorf("got handler %q trusted %v, want %q %v", v.Handler, v.Trusted, tt.want.handler, tt.want.trusted)
			}
			if want := c.cfg.Runtime.Runtimes[v.Handler].RuntimeType; v.HandlerType != want {
				t.Errorf("handler type: got %q, want %q", v.HandlerType, want)
			}
			if !slices.ContainsFunc(v.Reasons, func(r string) bool { return strings.Contains(r, tt.reasonIn) }) {
				t.Errorf("reasons %q: none contains %q", v.Reasons, tt.reasonIn)
			}
		})
	}
}

func TestAnnotationSpellings(t *testing.T) {
	tests := []struct {
		def, key, val string
		wantTrusted   bool
		wantCode      codes.Code
		wantReason    string
	}{
		{configs.Trusted, annTS, "false", false, codes.OK, "annotation " + annTS + "=false"},
		{configs.Trusted, annTS, "False", false, codes.OK, "annotation " + annTS + "=False"},
		{configs.Trusted, annTS, "FALSE", false, codes.OK, "annotation " + annTS + "=FALSE"},
		{configs.Trusted, annTS, "true", true, codes.OK, "default_workload_trust = trusted"},
		{configs.Trusted, annTS, "True", true, codes.OK, "default_workload_trust = trusted"},
		{configs.Trusted, annUW, "true", false, codes.OK, "annotation " + annUW + "=true"},
		{configs.Trusted, annUW, "TRUE", false, codes.OK, "annotation " + annUW + "=TRUE"},
		{configs.Trusted, annUW, "tRuE", false, codes.OK, "annotation " + annUW + "=tRuE"},
		{configs.Trusted, annUW, "false", true, codes.OK, "default_workload_trust = trusted"},
		{configs.Untrusted, annTS, "true", false, codes.OK, "annotation io.kubernetes.cri-o.TrustedSandbox=true ignored: annotations cannot raise trust"},
		{configs.Untrusted, annTS, "TRUE", false, codes.OK, "annotation io.kubernetes.cri-o.TrustedSandbox=TRUE ignored: annotations cannot raise trust"},
		{configs.Untrusted, annUW, "false", false, codes.OK, "annotation io.kubernetes.cri.untrusted-workload=false ignored: annotations cannot raise trust"},
		{configs.Trusted, annTS, "yes-please", false, codes.InvalidArgument, `annotation io.kubernetes.cri-o.TrustedSandbox: value "yes-please" is not "true" or "false"`},
		{configs.Trusted, annUW, "1", false, codes.InvalidArgument, `annotation io.kubernetes.cri.untrusted-workload: value "1"`},
		{configs.Untrusted, annUW, "", false, codes.InvalidArgument, `annotation io.kubernetes.cri.untrusted-workload: value ""`},
		{configs.Trusted, annTS, " false", false, codes.InvalidArgument, `value " false"`},
		// Annotation keys are case-sensitive, as in Kubernetes.
		{configs.Trusted, "io.kubernetes.cri-o.trustedsandbox", "false", true, codes.OK, "default_workload_trust = trusted"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s=%q", tt.def, tt.key, tt.val), func(t *testing.T) {
			c := New(testConfig(tt.def, "vm"), nil)
			v, err := c.Classify(PodInput{Annotations: map[string]string{tt.key: tt.val}})
			if got := errdefs.Code(err); got != tt.wantCode {
				t.Fatalf("code: got %v (%v), want %v", got, err, tt.wantCode)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tt.wantReason) {
					t.Errorf("error %q does not contain %q", err, tt.wantReason)
				}
				return
			}
			if v.Trusted != tt.wantTrusted {
				t.Errorf("trusted: got %v, want %v", v.Trusted, tt.wantTrusted)
			}
			if !slices.Contains(v.Reasons, tt.wantReason) {
				t.Errorf("reasons %q do not contain %q", v.Reasons, tt.wantReason)
			}
			if v.Trusted && slices.ContainsFunc(v.Reasons, func(r string) bool { return strings.Contains(r, "ignored") }) {
				t.Errorf("trusted verdict mentions an ignored annotation: %q", v.Reasons)
			}
		})
	}
}

func TestAnnotationsBeatRules(t *testing.T) {
	cfg := testConfig(configs.Trusted, "vm")
	p := mustPolicy(t, cfg, `
[[rule]]
name = "ops"
trust = "trusted"
handler = "crun"
[rule.match]
namespaces = ["ops"]
`)
	c := New(cfg, p)
	v, err := c.Classify(PodInput{Namespace: "ops", Annotations: map[string]string{annTS: "false"}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Trusted || v.Handler != "vm" || v.Rule != "" {
		t.Errorf("got %+v, want untrusted on vm with no rule", v)
	}
	v, err = c.Classify(PodInput{Namespace: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Trusted || v.Handler != "crun" || v.Rule != "ops" {
		t.Errorf("got %+v, want trusted on crun by rule ops", v)
	}
}

func TestNoUntrustedHandler(t *testing.T) {
	cfg := testConfig(configs.Untrusted, "")
	p := mustPolicy(t, cfg, `
[[rule]]
name = "big"
trust = "untrusted"
handler = "vm-big"
[rule.match]
labels = { size = "big" }
`)
	c := New(cfg, p)
	tests := []struct {
		name        string
		in          PodInput
		wantHandler string
		wantErr     string
	}{
		{"refused", PodInput{}, "", "no vm handler configured (runtime_untrusted_workload is empty); the pod is untrusted: default_workload_trust = untrusted"},
		{"refused, never oci fallback", PodInput{Annotations: map[string]string{annUW: "true"}}, "", "runtime_untrusted_workload is empty"},
		{"RuntimeClass vm handler", PodInput{RuntimeHandler: "kata"}, "vm", ""},
		{"rule handler", PodInput{Labels: map[string]string{"size": "big"}}, "vm-big", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := c.Classify(tt.in)
			if tt.wantErr != "" {
				if errdefs.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v (%v), want FailedPrecondition %q", err, errdefs.Code(err), tt.wantErr)
				}
				return
			}
			if err != nil || v.Handler != tt.wantHandler {
				t.Fatalf("got %+v, %v; want handler %q", v, err, tt.wantHandler)
			}
		})
	}
}

func TestHostRequests(t *testing.T) {
	tests := []struct {
		name           string
		def            string
		in             PodInput
		privilegedInVM bool   // untrusted_privileged_in_vm
		wantErr        string // "" = admitted
	}{
		{"trusted privileged", configs.Trusted, PodInput{Privileged: true}, false, ""},
		{"untrusted privileged in its VM, allowed by the operator", configs.Untrusted, PodInput{Privileged: true}, true, ""},
		{"untrusted privileged in its VM does not open host network", configs.Untrusted, PodInput{Privileged: true, HostNetwork: true}, true,
			"untrusted pod may not request host network ("},
		{"trusted all host", configs.Trusted, PodInput{HostNetwork: true, HostPID: true, HostIPC: true}, false, ""},
		{"untrusted privileged", configs.Untrusted, PodInput{Privileged: true}, false,
			"untrusted pod may not request privileged (untrusted because: default_workload_trust = untrusted)"},
		{"untrusted host network", configs.Untrusted, PodInput{HostNetwork: true}, false, "untrusted pod may not request host network ("},
		{"untrusted host pid", configs.Untrusted, PodInput{HostPID: true}, false, "untrusted pod may not request host PID ("},
		{"untrusted host ipc", configs.Untrusted, PodInput{HostIPC: true}, false, "untrusted pod may not request host IPC ("},
		{"untrusted several", configs.Untrusted, PodInput{Privileged: true, HostNetwork: true, HostIPC: true}, false, "may not request privileged, host network, host IPC ("},
		{"annotation, even on a vm RuntimeClass", configs.Trusted, PodInput{HostNetwork: true, RuntimeHandler: "vm", Annotations: map[string]string{annTS: "false"}}, false,
			"untrusted pod may not request host network (untrusted because: annotation io.kubernetes.cri-o.TrustedSandbox=false)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(tt.def, "vm")
			cfg.Runtime.UntrustedPrivilegedInVM = tt.privilegedInVM
			_, err := New(cfg, nil).Classify(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if errdefs.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v (%v), want FailedPrecondition containing %q", err, errdefs.Code(err), tt.wantErr)
			}
		})
	}
}

func TestRulePrecedenceAcrossFiles(t *testing.T) {
	cfg := testConfig(configs.Trusted, "vm")
	p, err := LoadPolicy("testdata/policy.d", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 5 {
		t.Fatalf("got %d rules, want 5", p.Len())
	}
	tests := []struct {
		name        string
		in          PodInput
		wantRule    string
		wantHandler string
		wantTrusted bool
		wantFile    string
	}{
		{"first file wins over later shadowing rule", PodInput{Namespace: "kube-system"}, "system", "runc", true, "10-system.toml"},
		{"glob", PodInput{Namespace: "tenant-a"}, "tenants", "vm", false, "20-tenants.toml"},
		{"exact", PodInput{Namespace: "ci"}, "tenants", "vm", false, "20-tenants.toml"},
		{"glob needs the dash", PodInput{Namespace: "tenant"}, "", "runc", true, ""},
		{"labels AND namespace, alias handler resolved", PodInput{Namespace: "prod-eu", Labels: map[string]string{"team": "payments", "x": "y"}}, "payments", "vm", true, "10-system.toml"},
		{"label value differs", PodInput{Namespace: "prod-eu", Labels: map[string]string{"team": "search"}}, "", "runc", true, ""},
		{"namespace differs", PodInput{Namespace: "dev", Labels: map[string]string{"team": "payments"}}, "", "runc", true, ""},
		{"image rule needs images", PodInput{Namespace: "dev"}, "", "runc", true, ""},
		{"image rule", PodInput{Namespace: "dev", Images: []string{"busybox"}}, "public-images", "vm", false, "20-tenants.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := New(cfg, p).Classify(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if v.Rule != tt.wantRule || v.Handler != tt.wantHandler || v.Trusted != tt.wantTrusted {
				t.Errorf("got rule %q handler %q trusted %v, want %q %q %v", v.Rule, v.Handler, v.Trusted, tt.wantRule, tt.wantHandler, tt.wantTrusted)
			}
			if tt.wantRule != "" {
				want := fmt.Sprintf("rule %q (file testdata/policy.d/%s)", tt.wantRule, tt.wantFile)
				if v.Reasons[0] != want {
					t.Errorf("reason: got %q, want %q", v.Reasons[0], want)
				}
			}
		})
	}
}

func TestRuleTrustedAllowsOCIRuntimeClass(t *testing.T) {
	cfg := testConfig(configs.Untrusted, "vm")
	p := mustPolicy(t, cfg, `
[[rule]]
name = "infra"
trust = "trusted"
[rule.match]
namespaces = ["infra"]
`)
	c := New(cfg, p)
	v, err := c.Classify(PodInput{Namespace: "infra", RuntimeHandler: "runc"})
	if err != nil || v.Handler != "runc" || !v.Trusted {
		t.Fatalf("got %+v, %v; want trusted runc", v, err)
	}
	v, err = c.Classify(PodInput{Namespace: "infra"})
	if err != nil || v.Handler != "runc" || !v.Trusted {
		t.Fatalf("got %+v, %v; want trusted on default_runtime runc", v, err)
	}
	if _, err := c.Classify(PodInput{Namespace: "other", RuntimeHandler: "runc"}); errdefs.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
}

func TestMatchers(t *testing.T) {
	cfg := testConfig(configs.Trusted, "vm")
	p := mustPolicy(t, cfg, `
[[rule]]
name = "ns-glob"
trust = "trusted"
[rule.match]
namespaces = ["team-[ab]", "?x", "exact"]

[[rule]]
name = "labels"
trust = "trusted"
[rule.match]
labels = { app = "web", tier = "front" }

[[rule]]
name = "annotations"
trust = "trusted"
[rule.match]
annotations = { "example.com/x" = "y" }

[[rule]]
name = "privileged"
trust = "trusted"
[rule.match]
privileged = true

[[rule]]
name = "hostnet-not-privileged"
trust = "trusted"
[rule.match]
host_network = true
privileged = false

[[rule]]
name = "hostpid"
trust = "trusted"
[rule.match]
host_pid = true

[[rule]]
name = "hostipc"
trust = "trusted"
[rule.match]
host_ipc = true

[[rule]]
name = "registry-host"
trust = "untrusted"
[rule.match]
image_registries = ["quay.io", "*.example.com", "127.0.0.1:5000"]

[[rule]]
name = "repository"
trust = "untrusted"
[rule.match]
image_registries = ["docker.io/library/*", "localhost/x"]
`)
	tests := []struct {
		name string
		in   PodInput
		want string
	}{
		{"ns class a", PodInput{Namespace: "team-a"}, "ns-glob"},
		{"ns class c", PodInput{Namespace: "team-c"}, ""},
		{"ns ?", PodInput{Namespace: "ax"}, "ns-glob"},
		{"ns ? one char only", PodInput{Namespace: "abx"}, ""},
		{"ns exact", PodInput{Namespace: "exact"}, "ns-glob"},
		{"ns exact prefix", PodInput{Namespace: "exactly"}, ""},
		{"labels all", PodInput{Labels: map[string]string{"app": "web", "tier": "front", "x": "1"}}, "labels"},
		{"labels one missing", PodInput{Labels: map[string]string{"app": "web"}}, ""},
		{"labels one differs", PodInput{Labels: map[string]string{"app": "web", "tier": "back"}}, ""},
		{"labels vs annotations", PodInput{Annotations: map[string]string{"app": "web", "tier": "front"}}, ""},
		{"annotations", PodInput{Annotations: map[string]string{"example.com/x": "y"}}, "annotations"},
		{"annotations value", PodInput{Annotations: map[string]string{"example.com/x": "z"}}, ""},
		{"privileged", PodInput{Privileged: true, HostNetwork: true}, "privileged"},
		{"host network, not privileged", PodInput{HostNetwork: true}, "hostnet-not-privileged"},
		{"host pid", PodInput{HostPID: true}, "hostpid"},
		{"host ipc", PodInput{HostIPC: true}, "hostipc"},
		{"no host request", PodInput{}, ""},
		{"registry host", PodInput{Images: []string{"quay.io/x/y:1"}}, "registry-host"},
		{"registry host glob", PodInput{Images: []string{"reg.example.com/a/b"}}, "registry-host"},
		{"registry with port", PodInput{Images: []string{"127.0.0.1:5000/a@sha256:" + strings.Repeat("a", 64)}}, "registry-host"},
		{"registry host is not a prefix", PodInput{Images: []string{"quay.io.evil.net/x"}}, ""},
		{"repository glob, short name", PodInput{Images: []string{"busybox"}}, "repository"},
		{"repository glob, library/", PodInput{Images: []string{"library/busybox:1.36"}}, "repository"},
		{"repository glob does not cross /", PodInput{Images: []string{"docker.io/someone/busybox"}}, ""},
		{"user repo on docker hub", PodInput{Images: []string{"someone/busybox"}}, ""},
		{"localhost repository", PodInput{Images: []string{"localhost/x"}}, "repository"},
		{"any image matches", PodInput{Images: []string{"registry.k8s.io/pause:3.10", "quay.io/a/b"}}, "registry-host"},
		{"no image matches", PodInput{Images: []string{"registry.k8s.io/pause:3.10", "ghcr.io/a/b"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := p.match(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if r != nil {
				got = r.name
			}
			if got != tt.want {
				t.Errorf("got rule %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseImage(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		ref                      string
		full, domain, repository string
		wantErr                  bool
	}{
		{ref: "busybox", full: "docker.io/library/busybox:latest", domain: "docker.io", repository: "docker.io/library/busybox"},
		{ref: "library/busybox", full: "docker.io/library/busybox:latest", domain: "docker.io", repository: "docker.io/library/busybox"},
		{ref: "docker.io/busybox:1.36", full: "docker.io/library/busybox:1.36", domain: "docker.io", repository: "docker.io/library/busybox"},
		{ref: "index.docker.io/library/busybox", full: "docker.io/library/busybox:latest", domain: "docker.io", repository: "docker.io/library/busybox"},
		{ref: "someone/app", full: "docker.io/someone/app:latest", domain: "docker.io", repository: "docker.io/someone/app"},
		{ref: "quay.io/x/y:1", full: "quay.io/x/y:1", domain: "quay.io", repository: "quay.io/x/y"},
		{ref: "127.0.0.1:5000/a@" + digest, full: "127.0.0.1:5000/a@" + digest, domain: "127.0.0.1:5000", repository: "127.0.0.1:5000/a"},
		{ref: "localhost/x", full: "localhost/x:latest", domain: "localhost", repository: "localhost/x"},
		{ref: "localhost:5000/x/y:v", full: "localhost:5000/x/y:v", domain: "localhost:5000", repository: "localhost:5000/x/y"},
		{ref: "myhost/x", full: "docker.io/myhost/x:latest", domain: "docker.io", repository: "docker.io/myhost/x"},
		{ref: "UPPER/case", wantErr: true},
		{ref: "", wantErr: true},
		{ref: digest, wantErr: true},
		{ref: strings.TrimPrefix(digest, "sha256:"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := parseImage(tt.ref)
			if tt.wantErr {
				if errdefs.Code(err) != codes.InvalidArgument {
					t.Fatalf("got %+v, %v; want InvalidArgument", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := imageName{full: tt.full, domain: tt.domain, repo: tt.repository}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestCheckImage(t *testing.T) {
	cfg := testConfig(configs.Trusted, "vm")
	p := mustPolicy(t, cfg, `
[[rule]]
name = "internal"
trust = "trusted"
[rule.match]
image_registries = ["registry.internal"]

[[rule]]
name = "public"
trust = "untrusted"
[rule.match]
image_registries = ["docker.io"]
`)
	c := New(cfg, p)
	in := PodInput{Namespace: "default", Name: "p"}
	sandbox, err := c.Classify(in)
	if err != nil || sandbox.Handler != "runc" {
		t.Fatalf("sandbox: got %+v, %v", sandbox, err)
	}
	onVM := Verdict{Handler: "vm", HandlerType: configs.RuntimeTypeVM}
	untrustedPod := PodInput{Annotations: map[string]string{annTS: "false"}}
	tests := []struct {
		name     string
		sandbox  Verdict
		in       PodInput
		image    string
		wantCode codes.Code
		wantErr  string
	}{
		{"untrusted image on oci", sandbox, in, "busybox", codes.FailedPrecondition, `image "busybox" matches rule "public" (untrusted) but pod runs on oci handler "runc"`},
		{"untrusted image on vm", onVM, in, "busybox", codes.OK, ""},
		{"trusted image on oci", sandbox, in, "registry.internal/app:1", codes.OK, ""},
		{"no rule, default trusted", sandbox, in, "ghcr.io/a/b", codes.OK, ""},
		{"image ID", sandbox, in, "sha256:" + strings.Repeat("a", 64), codes.InvalidArgument, "is an image ID"},
		{"bad reference", sandbox, in, "Bad/Ref", codes.InvalidArgument, `parsing image reference "Bad/Ref"`},
		{"untrusted pod on vm, trusted image", onVM, untrustedPod, "registry.internal/app", codes.OK, ""},
		// A verdict the policy no longer grants: the annotation makes the pod
		// untrusted while its sandbox runs on runc.
		{"untrusted by annotation on oci", sandbox, untrustedPod, "registry.internal/app", codes.FailedPrecondition,
			`image "registry.internal/app": pod is untrusted (annotation io.kubernetes.cri-o.TrustedSandbox=false) but runs on oci handler "runc"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.CheckImage(tt.sandbox, tt.in, tt.image)
			if got := errdefs.Code(err); got != tt.wantCode {
				t.Fatalf("code: got %v (%v), want %v", got, err, tt.wantCode)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
	if len(in.Images) != 0 {
		t.Errorf("CheckImage changed the caller's input: %v", in.Images)
	}
}

func TestCheckInvariant(t *testing.T) {
	tests := []struct {
		v       Verdict
		wantErr bool
	}{
		{Verdict{Handler: "vm", HandlerType: configs.RuntimeTypeVM, Trusted: false}, false},
		{Verdict{Handler: "vm", HandlerType: configs.RuntimeTypeVM, Trusted: true}, false},
		{Verdict{Handler: "runc", HandlerType: configs.RuntimeTypeOCI, Trusted: true}, false},
		{Verdict{Handler: "runc", HandlerType: configs.RuntimeTypeOCI, Trusted: false}, true},
		{Verdict{Handler: "x", HandlerType: "", Trusted: false}, true},
		{Verdict{}, true},
	}
	for _, tt := range tests {
		err := checkInvariant(tt.v)
		if (err != nil) != tt.wantErr {
			t.Errorf("%+v: got %v, want error %v", tt.v, err, tt.wantErr)
		}
		if err != nil && errdefs.Code(err) != codes.FailedPrecondition {
			t.Errorf("%+v: code %v, want FailedPrecondition", tt.v, errdefs.Code(err))
		}
	}
}

// TestInvariantHoldsEverywhere classifies every combination of inputs,
// including configs and policies that validation would have refused, and
// checks that no admitted verdict puts an untrusted pod outside a vm handler.
func TestInvariantHoldsEverywhere(t *testing.T) {
	brokenPolicy := &Policy{rules: []*rule{{
		name: "bypassed-validation", file: "forged", trusted: false, handler: "runc",
		match: matchSpec{Namespaces: []string{"forged"}},
	}}}
	cfgs := map[string]func(def string) *configs.Config{
		"vm":    func(def string) *configs.Config { return testConfig(def, "vm") },
		"empty": func(def string) *configs.Config { return testConfig(def, "") },
		// runtime_untrusted_workload naming an oci handler fails config
		// validation; the classifier must still refuse.
		"oci": func(def string) *configs.Config { return testConfig(def, "runc") },
	}
	admitted, refused := 0, 0
	for cname, mk := range cfgs {
		for _, def := range []string{configs.Trusted, configs.Untrusted} {
			cfg := mk(def)
			good := mustPolicy(t, cfg, `
[[rule]]
name = "t"
trust = "trusted"
handler = "crun"
[rule.match]
namespaces = ["t"]

[[rule]]
name = "u"
trust = "untrusted"
handler = "vm-big"
[rule.match]
namespaces = ["u"]
`)
			for pname, p := range map[string]*Policy{"none": nil, "good": good, "broken": brokenPolicy} {
				c := New(cfg, p)
				for _, ns := range []string{"t", "u", "forged", "other"} {
					for _, rc := range []string{"", "runc", "crun", "vm", "kata", "vm-big"} {
						for _, ann := range []map[string]string{nil, {annTS: "false"}, {annTS: "true"}, {annUW: "true"}} {
							for _, priv := range []bool{false, true} {
								in := PodInput{Namespace: ns, RuntimeHandler: rc, Annotations: ann, Privileged: priv}
								v, err := c.Classify(in)
								if err != nil {
									refused++
									continue
								}
								admitted++
								if !v.Trusted && v.HandlerType != configs.RuntimeTypeVM {
									t.Errorf("cfg %s/%s policy %s input %+v: untrusted verdict on %q (%s)", cname, def, pname, in, v.Handler, v.HandlerType)
								}
								if !v.Trusted && priv {
									t.Errorf("cfg %s/%s policy %s input %+v: untrusted privileged pod admitted", cname, def, pname, in)
								}
								if h := cfg.Runtime.Runtimes[v.Handler]; h == nil || h.RuntimeType != v.HandlerType {
									t.Errorf("verdict %+v names an unknown handler or the wrong type", v)
								}
							}
						}
					}
				}
			}
		}
	}
	if admitted == 0 || refused == 0 {
		t.Fatalf("admitted %d, refused %d: the combinations do not cover both", admitted, refused)
	}
}

func TestInvariantRefusesForgedInputs(t *testing.T) {
	cfg := testConfig(configs.Untrusted, "runc")
	_, err := New(cfg, nil).Classify(PodInput{})
	if errdefs.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "trust invariant violated") {
		t.Fatalf("oci runtime_untrusted_workload: got %v, want the invariant's refusal", err)
	}
	forged := &Policy{rules: []*rule{{name: "f", trusted: false, handler: "runc", match: matchSpec{Namespaces: []string{"*"}}}}}
	_, err = New(testConfig(configs.Trusted, "vm"), forged).Classify(PodInput{Namespace: "x"})
	if errdefs.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "trust invariant violated") {
		t.Fatalf("forged rule: got %v, want the invariant's refusal", err)
	}
}
