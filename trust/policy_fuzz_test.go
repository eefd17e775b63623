package trust

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
)

// fuzzConfigs are the configurations a fuzzed policy is loaded against:
// the test handlers with either default trust and with no untrusted
// handler, and the shipped defaults with privileged-in-VM allowed.
func fuzzConfigs() []*configs.Config {
	def := configs.Defaults()
	def.Runtime.UntrustedPrivilegedInVM = true
	return []*configs.Config{
		testConfig(configs.Trusted, "vm"),
		testConfig(configs.Untrusted, "vm-big"),
		testConfig(configs.Trusted, ""),
		def,
	}
}

// fuzzPods is the fixed set of pods every accepted policy classifies, plus
// two in the fuzzed namespace with the fuzzed image.
func fuzzPods(ns, image string) []PodInput {
	payments := map[string]string{"team": "payments"}
	return []PodInput{
		{Namespace: "default", Name: "web", UID: "u1"},
		{Namespace: "kube-system", Name: "coredns", HostNetwork: true},
		{Namespace: "kube-system", Name: "kube-proxy", Privileged: true, HostNetwork: true, HostPID: true},
		{Namespace: "tenant-acme", Name: "app", Labels: payments},
		{Namespace: "prod-eu", Name: "billing", Labels: payments},
		{Namespace: "ci", Name: "job", RuntimeHandler: "kata"},
		{Namespace: "default", Name: "on-runc", RuntimeHandler: "runc"},
		{Namespace: "default", Name: "on-crun", RuntimeHandler: "crun", Labels: payments},
		{Namespace: "default", Name: "big", RuntimeHandler: "vm-big", Privileged: true},
		{Namespace: "default", Name: "gvisor", RuntimeHandler: "gvisor"},
		{Namespace: "default", Name: "sandboxed", Labels: map[string]string{"security.example.com/sandbox": "true"}},
		{Namespace: "default", Name: "ann-ts", Annotations: map[string]string{AnnotationTrustedSandbox: "false"}},
		{Namespace: "default", Name: "ann-ts-true", Annotations: map[string]string{AnnotationTrustedSandbox: "True"}},
		{Namespace: "default", Name: "ann-uw", RuntimeHandler: "crun", Annotations: map[string]string{AnnotationUntrustedWorkload: "TRUE"}},
		{Namespace: "default", Name: "ann-bad", Annotations: map[string]string{AnnotationUntrustedWorkload: "maybe"}},
		{Namespace: "default", Name: "hostns", Privileged: true, HostPID: true, HostIPC: true},
		{Namespace: "default", Name: "busybox", Images: []string{"busybox"}},
		{Namespace: "default", Name: "quay", Images: []string{"quay.io/prometheus/node-exporter:v1.8.0"}},
		{Namespace: "default", Name: "by-id", Images: []string{"sha256:" + strings.Repeat("ab", 32)}},
		{Namespace: "default", Name: "bad-ref", Images: []string{"UPPER/Case"}},
		{Namespace: ns, Name: "fuzz", Images: []string{image}},
		{Namespace: ns, Name: "fuzz-runc", RuntimeHandler: "runc", Labels: payments, Annotations: map[string]string{AnnotationTrustedSandbox: "true"}},
	}
}

// fuzzImages are checked, as CreateContainer checks them, against the
// verdict of every pod an accepted policy admits.
var fuzzImages = []string{
	"busybox",
	"docker.io/library/nginx:1.27",
	"quay.io/prometheus/node-exporter@sha256:" + strings.Repeat("cd", 32),
	"registry.k8s.io/pause:3.10",
	"localhost:5000/app:dev",
}

// FuzzLoadPolicy feeds LoadPolicy a policy file. Whatever the bytes:
//   - LoadPolicy does not panic, and a refusal is a *PolicyError that names
//     the file;
//   - an accepted policy, loaded twice, classifies every pod of a fixed set
//     the same way (verdict and error);
//   - a refusal is InvalidArgument or FailedPrecondition, and never the
//     classifier's last-resort invariant check: the routing itself never
//     picks a non-vm handler for an untrusted pod;
//   - an admitted verdict names a configured handler of the type it
//     reports, an untrusted verdict's handler is a vm handler, an
//     untrusted pod got none of the host access it may not have, and the
//     rule it names exists and has the verdict's trust;
//   - the trust annotations never raise trust (unless a rule matches on
//     them);
//   - CheckImage admits an image into a pod on a non-vm handler only if
//     the pod with that image is judged trusted.
func FuzzLoadPolicy(f *testing.F) {
	for _, p := range []string{
		"../configs/trust-policy.toml",
		"testdata/policy.d/10-system.toml",
		"testdata/policy.d/20-tenants.toml",
	} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "tenant-acme", "docker.io/library/busybox:latest")
	}
	const ok = "[[rule]]\nname = \"ok\"\ntrust = \"trusted\"\n[rule.match]\nnamespaces = [\"a\"]\n"
	for _, s := range []struct{ policy, ns, image string }{
		{"", "default", "busybox"},
		{ok, "a", "quay.io/x/y:1"},
		{"[[rule]]\nname = \"x\"\ntrust = \"untrusted\"\nhandler = \"kata\"\nallow_host_paths = [\"/srv/shared\"]\n[rule.match]\nnamespaces = [\"tenant-?\", \"[a-c]*\"]\nprivileged = false\nhost_network = false\nhost_pid = false\nhost_ipc = false\n", "tenant-x", "ghcr.io/o/r@sha256:" + strings.Repeat("0", 64)},
		{"[[rule]]\nname = \"imgs\"\ntrust = \"untrusted\"\n[rule.match]\nimage_registries = [\"docker.io/library/*\", \"*.example.com\", \"localhost:5000\"]\n", "default", "registry.example.com/app:1"},
		{"[[rule]]\nname = \"ann\"\ntrust = \"trusted\"\nhandler = \"runc\"\n[rule.match]\nannotations = { \"io.kubernetes.cri-o.TrustedSandbox\" = \"true\" }\nlabels = { team = \"payments\" }\n", "default", "busybox"},
		{"[[rule]]\nname = \"priv\"\ntrust = \"untrusted\"\nhandler = \"vm-big\"\n[rule.match]\nprivileged = true\n\n[[rule]]\nname = \"rest\"\ntrust = \"trusted\"\nhandler = \"crun\"\n[rule.match]\nnamespaces = [\"*\"]\n", "default", "busybox"},
		{"rule = [{ name = \"inline\", trust = \"untrusted\", match = { namespaces = [\"ci\"] } }]\n", "ci", "busybox"},
		{ok + "\n[[rule]]\nname = \"x\"\ntrust = \"untrusted\"\n[rule.match]\nnamspaces = [\"a\"]\n", "a", "busybox"},
		{ok + "\n" + ok, "a", "busybox"},
		{"[[rule]]\nname = \"x\"\ntrust = \"untrusted\"\nhandler = \"runc\"\n[rule.match]\nnamespaces = [\"a\"]\n", "a", "busybox"},
		{"[[rule]]\nname = \"x\"\ntrust = \"trusted\"\n[rule.match]\nimage_registries = [\"quay.io/[\"]\n", "a", "busybox"},
		{"[[rule]]\nname = \"x\"\ntrust = true\n", "a", "busybox"},
		{ok + "\n[[rule]\n", "a", "busybox"},
	} {
		f.Add([]byte(s.policy), s.ns, s.image)
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "policy.toml")
	cfgs := fuzzConfigs()
	f.Fuzz(func(t *testing.T, data []byte, ns, image string) {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		pods := fuzzPods(ns, image)
		for ci, cfg := range cfgs {
			p, err := LoadPolicy(path, cfg)
			if err != nil {
				var pe *PolicyError
				if !errors.As(err, &pe) || pe.File != path {
					t.Fatalf("config %d: error %v (%T) is not a *PolicyError naming %s", ci, err, err, path)
				}
				continue
			}
			p2, err := LoadPolicy(path, cfg)
			if err != nil {
				t.Fatalf("config %d: the second load failed: %v", ci, err)
			}
			c, c2 := New(cfg, p), New(cfg, p2)
			annotationsMatched := slices.ContainsFunc(p.rules, func(r *rule) bool {
				_, ts := r.match.Annotations[AnnotationTrustedSandbox]
				_, uw := r.match.Annotations[AnnotationUntrustedWorkload]
				return ts || uw
			})
			for _, in := range pods {
				v, err := c.Classify(in)
				v2, err2 := c2.Classify(in)
				if !reflect.DeepEqual(v, v2) || errString(err) != errString(err2) {
					t.Fatalf("config %d, pod %s/%s: not deterministic:\n%+v, %v\n%+v, %v", ci, in.Namespace, in.Name, v, err, v2, err2)
				}
				checkVerdict(t, cfg, p, in, v, err)
				if err != nil {
					continue
				}
				if !annotationsMatched && v.Trusted {
					plain := in
					plain.Annotations = withoutKeys(in.Annotations, AnnotationTrustedSandbox, AnnotationUntrustedWorkload)
					if v0, err0 := c.Classify(plain); err0 == nil && !v0.Trusted {
						t.Fatalf("config %d, pod %s/%s: untrusted without its annotations (%v), trusted with %v", ci, in.Namespace, in.Name, v0.Reasons, in.Annotations)
					}
				}
				for _, img := range append(fuzzImages, image) {
					checkImage(t, c, v, in, img)
				}
			}
		}
	})
}

// checkVerdict asserts what every Classify result must satisfy.
func checkVerdict(t *testing.T, cfg *configs.Config, p *Policy, in PodInput, v Verdict, err error) {
	t.Helper()
	if err != nil {
		if code := errdefs.Code(err); code != codes.InvalidArgument && code != codes.FailedPrecondition {
			t.Fatalf("pod %s/%s: refusal %v has code %v", in.Namespace, in.Name, err, code)
		}
		if strings.Contains(err.Error(), "trust invariant violated") {
			t.Fatalf("pod %s/%s: the routing chose a non-vm handler for an untrusted pod: %v", in.Namespace, in.Name, err)
		}
		if !reflect.DeepEqual(v, Verdict{}) {
			t.Fatalf("pod %s/%s: refusal %v came with the verdict %+v", in.Namespace, in.Name, err, v)
		}
		return
	}
	h, ok := cfg.Runtime.Runtimes[v.Handler]
	if !ok {
		t.Fatalf("pod %s/%s: routed to %q, which is not configured", in.Namespace, in.Name, v.Handler)
	}
	if v.HandlerType != h.RuntimeType {
		t.Fatalf("pod %s/%s: verdict says %q is %q, the config says %q", in.Namespace, in.Name, v.Handler, v.HandlerType, h.RuntimeType)
	}
	if !v.Trusted && h.RuntimeType != configs.RuntimeTypeVM {
		t.Fatalf("pod %s/%s: untrusted but routed to %q of runtime_type %q", in.Namespace, in.Name, v.Handler, h.RuntimeType)
	}
	if in.RuntimeHandler != "" {
		if name, _, _ := cfg.ResolveHandler(in.RuntimeHandler); name != v.Handler {
			t.Fatalf("pod %s/%s: asked for %q (%q), routed to %q", in.Namespace, in.Name, in.RuntimeHandler, name, v.Handler)
		}
	}
	if !v.Trusted && len(in.hostRequests(cfg.Runtime.UntrustedPrivilegedInVM)) > 0 {
		t.Fatalf("pod %s/%s: untrusted pod admitted with %v", in.Namespace, in.Name, in.hostRequests(cfg.Runtime.UntrustedPrivilegedInVM))
	}
	if v.Rule != "" {
		r := p.ruleNamed(v.Rule)
		if r == nil || r.trusted != v.Trusted {
			t.Fatalf("pod %s/%s: verdict %+v names rule %q, which is %+v", in.Namespace, in.Name, v, v.Rule, r)
		}
	}
	if len(v.Reasons) == 0 {
		t.Fatalf("pod %s/%s: verdict %+v gives no reason", in.Namespace, in.Name, v)
	}
}

// checkImage asserts that CheckImage refuses exactly the images that make
// a pod on a non-vm handler untrusted.
func checkImage(t *testing.T, c *Classifier, v Verdict, in PodInput, img string) {
	t.Helper()
	err := c.CheckImage(v, in, img)
	if code := errdefs.Code(err); code != codes.OK && code != codes.InvalidArgument && code != codes.FailedPrecondition {
		t.Fatalf("pod %s/%s, image %q: refusal %v has code %v", in.Namespace, in.Name, img, err, code)
	}
	with := in
	with.Images = append(slices.Clone(in.Images), img)
	j, jerr := c.judge(with)
	switch {
	case jerr != nil:
		if err == nil {
			t.Fatalf("pod %s/%s, image %q: admitted although judging it fails: %v", in.Namespace, in.Name, img, jerr)
		}
	case v.HandlerType == configs.RuntimeTypeVM:
		if err != nil {
			t.Fatalf("pod %s/%s on vm handler %q, image %q: refused: %v", in.Namespace, in.Name, v.Handler, img, err)
		}
	case !j.trusted && err == nil:
		t.Fatalf("pod %s/%s on %s handler %q, image %q: admitted although it makes the pod untrusted (%v)", in.Namespace, in.Name, v.HandlerType, v.Handler, img, j.reasons)
	case j.trusted && err != nil:
		t.Fatalf("pod %s/%s on %s handler %q, image %q: refused although the pod stays trusted: %v", in.Namespace, in.Name, v.HandlerType, v.Handler, img, err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// withoutKeys returns m without keys (nil for an empty result).
func withoutKeys(m map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for k, v := range m {
		if slices.Contains(keys, k) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

// TestLoadPolicyRefusesMiscasedKeys: the TOML decoder matches fields
// case-insensitively, so a rule with both trust = "trusted" and
// Trust = "untrusted" (or a [[Rule]] beside [[rule]]) was trusted or not
// at random from one load to the next. Keys are case-sensitive; names
// below a map (labels) are not keys.
func TestLoadPolicyRefusesMiscasedKeys(t *testing.T) {
	cfg := testConfig(configs.Trusted, "vm")
	const match = "[rule.match]\nnamespaces = [\"x\"]\n"
	for _, tt := range []struct {
		policy string
		want   string // the error after the file name; "" for accepted
	}{
		{"[[rule]]\nname = \"a\"\ntrust = \"trusted\"\nTrust = \"untrusted\"\n" + match, `:4: rule "a": key Trust: unknown key (keys are case-sensitive: write trust)`},
		{"[[rule]]\nname = \"a\"\ntrust = \"trusted\"\n" + match + "[[Rule]]\nname = \"b\"\ntrust = \"untrusted\"\n[Rule.match]\nnamespaces = [\"x\"]\n", `: key Rule: unknown key (keys are case-sensitive: write rule)`},
		{"[[rule]]\nname = \"a\"\ntrust = \"trusted\"\n[rule.Match]\nnamespaces = [\"x\"]\n", `: key rule.Match: unknown key (keys are case-sensitive: write match)`},
		{"[[rule]]\nname = \"a\"\ntrust = \"trusted\"\n[rule.match]\nlabels = { Team = \"x\" }\n", ""},
	} {
		dir := writeFiles(t, map[string]string{"p.toml": tt.policy})
		for range 10 {
			_, err := LoadPolicy(filepath.Join(dir, "p.toml"), cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("%q: %v", tt.policy, err)
			case tt.want != "" && (err == nil || err.Error() != "trust policy "+filepath.Join(dir, "p.toml")+tt.want):
				t.Fatalf("%q: got %v, want %q", tt.policy, err, tt.want)
			}
		}
	}
}
