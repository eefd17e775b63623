package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/test/framework"
)

const tenantPolicy = `
[[rule]]
name = "tenants"
trust = "untrusted"
[rule.match]
namespaces = ["tenant-*"]
`

func podConfig(name, namespace string, annotations map[string]string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:    &runtimeapi.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: name + "-uid"},
		Annotations: annotations,
		Linux:       &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}}},
	}
}

type auditLine struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Handler   string   `json:"handler"`
	Trusted   bool     `json:"trusted"`
	Reasons   []string `json:"reasons"`
	Refused   string   `json:"refused"`
}

func readAudit(t *testing.T, path string) map[string]auditLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := map[string]auditLine{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		lines[l.Name] = l
	}
	return lines
}

// dirEntries lists a directory's names; missing means empty.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestTrustRouting: the daemon routes each pod by the trust rules, refuses
// what must be refused with a precise code, leaves nothing behind, audits
// every decision, and agrees with `crivm trust explain`.
func TestTrustRouting(t *testing.T) {
	ctx := context.Background()
	policyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(policyDir, "10-tenants.toml"), []byte(tenantPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	// An empty network_dir, whatever the host has in /etc/cni/net.d.
	d := framework.NewDaemon(t, framework.DaemonOptions{Config: "[crivm.network]\nnetwork_dir = \"" + t.TempDir() + "\"\n"})
	if err := os.WriteFile(filepath.Join(d.DropIn, "10-policy.conf"), []byte("[crivm.runtime]\ntrust_policy = \""+policyDir+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// 1. Start the daemon with the policy and note what exists before.
	d.Start(ctx)
	rs := d.RuntimeService(ctx)
	netnsBefore := dirEntries(t, "/var/run/netns")
	runrootBefore := dirEntries(t, d.Runroot)

	// 2. Run pods that exercise every route.
	privileged := podConfig("privileged-tenant", "tenant-b", nil)
	privileged.Linux.SecurityContext.Privileged = true
	hostNet := podConfig("hostnet-untrusted", "default", map[string]string{"io.kubernetes.cri.untrusted-workload": "true"})
	hostNet.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	tests := []struct {
		name     string
		pod      *runtimeapi.PodSandboxConfig
		handler  string
		wantCode codes.Code
		wantMsg  []string
		// wantHandler is the audited handler; "" when refused before routing.
		wantHandler string
		wantTrusted bool
	}{
		// Routed to the vm handler, then stopped by the pipeline: this daemon
		// has no CNI network. No VM is started.
		{"untrusted-annotation", podConfig("untrusted-annotation", "default", map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}), "",
			codes.FailedPrecondition, []string{"network"}, "vm", false},
		{"cri-o-annotation", podConfig("cri-o-annotation", "default", map[string]string{"io.kubernetes.cri-o.TrustedSandbox": "false"}), "",
			codes.FailedPrecondition, []string{"network"}, "vm", false},
		{"tenant-pod", podConfig("tenant-pod", "tenant-a", nil), "",
			codes.FailedPrecondition, []string{"network"}, "vm", false},
		{"tenant-on-runc", podConfig("tenant-on-runc", "tenant-a", nil), "runc",
			codes.FailedPrecondition, []string{`"runc"`, "tenants"}, "", false},
		// Admitted to runc, then refused by the pipeline: this daemon has no
		// CNI network. The steps already taken must be undone.
		{"trusted", podConfig("trusted", "default", nil), "",
			codes.FailedPrecondition, []string{"network"}, "runc", true},
		{"unknown-handler", podConfig("unknown-handler", "default", nil), "gvisor",
			codes.InvalidArgument, []string{`"gvisor"`, "runc", "vm"}, "", false},
		{"no-metadata", &runtimeapi.PodSandboxConfig{}, "",
			codes.InvalidArgument, []string{"metadata"}, "", false},
		{"privileged-tenant", privileged, "",
			codes.FailedPrecondition, []string{"privileged", "tenants"}, "", false},
		{"hostnet-untrusted", hostNet, "",
			codes.FailedPrecondition, []string{"host network"}, "", false},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rs.RunPodSandbox(ctx, tt.pod, tt.handler)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code: got %v (%v), want %v", got, err, tt.wantCode)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(status.Convert(err).Message(), w) {
					t.Errorf("message %q lacks %q", status.Convert(err).Message(), w)
				}
			}
		})
	}

	// 3. Refused pods left nothing: no sandbox, no netns, nothing new in runroot.
	pods, err := rs.ListPodSandbox(ctx, nil)
	if err != nil || len(pods) != 0 {
		t.Errorf("sandboxes after refusals: %v, %v; want none", pods, err)
	}
	if got := dirEntries(t, "/var/run/netns"); strings.Join(got, ",") != strings.Join(netnsBefore, ",") {
		t.Errorf("netns changed: before %v, after %v", netnsBefore, got)
	}
	if got := dirEntries(t, d.Runroot); strings.Join(got, ",") != strings.Join(runrootBefore, ",") {
		t.Errorf("runroot changed: before %v, after %v", runrootBefore, got)
	}

	// 4. Every decision is in the audit log, with its handler and trust.
	audit := readAudit(t, d.AuditLog)
	for _, tt := range tests {
		if tt.pod.GetMetadata().GetName() == "" {
			continue // refused before classification
		}
		l, ok := audit[tt.name]
		if !ok {
			t.Errorf("no audit line for %s", tt.name)
			continue
		}
		if tt.wantHandler != "" && (l.Handler != tt.wantHandler || l.Trusted != tt.wantTrusted) {
			t.Errorf("audit %s: handler %q trusted %v, want %q %v", tt.name, l.Handler, l.Trusted, tt.wantHandler, tt.wantTrusted)
		}
		if tt.wantHandler == "" && l.Refused == "" {
			t.Errorf("audit %s: not marked refused: %+v", tt.name, l)
		}
		if !tt.wantTrusted && tt.wantHandler != "" && l.Handler != "vm" {
			t.Errorf("audit %s: untrusted pod routed to %q", tt.name, l.Handler)
		}
	}

	// 5. The decisions are counted, by handler and outcome.
	st, err := rs.Status(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	var metrics map[string]float64
	if err := json.Unmarshal([]byte(st.Info["metrics"]), &metrics); err != nil {
		t.Fatalf("metrics in verbose status: %v (%q)", err, st.Info["metrics"])
	}
	if got := metrics["crivm_trust_verdicts_total{handler=vm,outcome=admitted,trusted=false}"]; got != 3 {
		t.Errorf("admitted untrusted vm verdicts: got %v, want 3 (all: %v)", got, metrics)
	}

	// 6. `crivm trust explain` agrees with what the daemon did.
	for _, name := range []string{"untrusted-annotation", "tenant-pod", "trusted"} {
		var pod *runtimeapi.PodSandboxConfig
		for _, tt := range tests {
			if tt.name == name {
				pod = tt.pod
			}
		}
		b, err := protojson.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		podFile := filepath.Join(t.TempDir(), "pod.json")
		os.WriteFile(podFile, b, 0o644)
		out, err := d.Command("trust", "explain", "--pod", podFile).CombinedOutput()
		if err != nil {
			t.Errorf("explain %s: %v\n%s", name, err, out)
			continue
		}
		want := "handler:  " + audit[name].Handler + " "
		if !strings.Contains(string(out), want) {
			t.Errorf("explain %s: output lacks %q:\n%s", name, want, out)
		}
	}

	// 7. A broken policy at SIGHUP keeps the old one in force.
	if err := os.WriteFile(filepath.Join(policyDir, "20-broken.toml"), []byte("[[rule]]\nname = \"x\"\ntrust = \"maybe\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitLog(10*time.Second, "keeping the policy in force", "20-broken.toml"); err != nil {
		t.Fatal(err)
	}
	_, err = rs.RunPodSandbox(ctx, podConfig("tenant-after-reload", "tenant-z", nil), "")
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("tenant pod after a broken reload: %v; want the pipeline's FailedPrecondition", err)
	}
	if l := readAudit(t, d.AuditLog)["tenant-after-reload"]; l.Handler != "vm" || l.Trusted {
		t.Errorf("tenant pod after a broken reload was judged %+v; want the old policy's vm routing", l)
	}
}

// TestBrokenPolicyStopsStartup: a broken policy file at start-up is fatal and
// names the file.
func TestBrokenPolicyStopsStartup(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(policy, []byte("[[rule]]\nname = \"r\"\ntrust = \"untrusted\"\n[rule.match]\nnamespaces = [\"[\"]\n"), 0o644)
	d := framework.NewDaemon(t, framework.DaemonOptions{})
	os.WriteFile(filepath.Join(d.DropIn, "10-policy.conf"), []byte("[crivm.runtime]\ntrust_policy = \""+policy+"\"\n"), 0o644)
	if err := d.TryStart(context.Background()); err == nil {
		t.Fatal("daemon started with a broken policy")
	}
	if log := d.Log(); !strings.Contains(log, "bad.toml") || !strings.Contains(log, "namespaces") {
		t.Errorf("start-up error does not name the file and key:\n%s", log)
	}
	if _, err := os.Stat(d.Root); !os.IsNotExist(err) {
		t.Errorf("root left behind after a refused start-up")
	}
}
