package trust

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
)

// mountFixture is a host tree for the mount policy:
//
//	base/kubelet/pods/{abc,abcdef,other}/volumes/v/file
//	base/klink -> kubelet                (kubelet_root_dir, as if /var/lib were a symlink)
//	base/srv/shared/file, base/srv/shared2/file
//	base/models/file                     (a rule's allow_host_paths)
//	base/state/{run,other}               (allowed by a rule, runroot below it)
//	base/root                            (crivm's root)
type mountFixture struct {
	base, kubelet string
	cfg           *configs.Config
	c             *Classifier
}

func newMountFixture(t *testing.T) *mountFixture {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &mountFixture{base: base, kubelet: filepath.Join(base, "kubelet")}
	for _, d := range []string{
		"kubelet/pods/abc/volumes/v", "kubelet/pods/abcdef/volumes/v", "kubelet/pods/other/volumes/v",
		"srv/shared/sub", "srv/shared2", "models", "state/run", "state/other", "root", "links",
	} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, file := range []string{
		"kubelet/pods/abc/volumes/v/file", "kubelet/pods/abcdef/volumes/v/file", "kubelet/pods/other/volumes/v/file",
		"kubelet/pods/abc/etc-hosts", "srv/shared/file", "srv/shared2/file", "models/file", "state/other/file",
	} {
		if err := os.WriteFile(filepath.Join(base, file), []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"klink":                          "kubelet",
		"links/etc":                      "/etc",
		"links/root":                     "/",
		"links/shared":                   filepath.Join(base, "srv/shared"),
		"links/other-pod":                filepath.Join(base, "kubelet/pods/other/volumes/v"),
		"links/dangling":                 filepath.Join(base, "nowhere"),
		"srv/shared/escape":              "/etc",
		"kubelet/pods/abc/volumes/evil":  "../../other/volumes/v",
		"kubelet/pods/abc/volumes/local": "v/file",
	} {
		if err := os.Symlink(target, filepath.Join(base, link)); err != nil {
			t.Fatal(err)
		}
	}
	f.cfg = testConfig(configs.Trusted, "vm")
	f.cfg.Root, f.cfg.Runroot = filepath.Join(base, "root"), filepath.Join(base, "state/run")
	f.cfg.Runtime.KubeletRootDir = filepath.Join(base, "klink")
	f.cfg.Runtime.UntrustedAllowedHostPaths = []string{filepath.Join(base, "srv/shared")}
	f.cfg.Runtime.UntrustedAllowedDevices = []string{"/dev/null"}
	p := mustPolicy(t, f.cfg, `
[[rule]]
name = "tenants"
trust = "untrusted"
allow_host_paths = ["`+filepath.Join(base, "models")+`", "`+filepath.Join(base, "state")+`"]
[rule.match]
namespaces = ["tenant-*"]
`)
	f.c = New(f.cfg, p)
	return f
}

func (f *mountFixture) p(rel string) string { return filepath.Join(f.base, rel) }

var (
	byRule       = Verdict{Handler: "vm", HandlerType: "vm", Trusted: false, Rule: "tenants", Reasons: []string{`rule "tenants" (file p.toml)`}}
	byAnnotation = Verdict{Handler: "vm", HandlerType: "vm", Trusted: false, Reasons: []string{"annotation io.kubernetes.cri.untrusted-workload=true"}}
	trustedVM    = Verdict{Handler: "vm", HandlerType: "vm", Trusted: true}
	podABC       = PodInput{Namespace: "tenant-a", Name: "web", UID: "abc"}
)

func TestJudgeMounts(t *testing.T) {
	f := newMountFixture(t)
	tests := []struct {
		name     string
		verdict  Verdict
		pod      PodInput
		hostPath string
		device   bool
		// wantResolved is relative to the fixture's base unless absolute;
		// "" for none.
		wantResolved string
		wantCode     error  // nil: allowed
		wantRule     string // substring of the decision's rule
		wantMsg      []string
	}{
		// The pod's own kubelet directory, reached through the symlinked
		// kubelet_root_dir.
		{name: "own emptyDir", verdict: byAnnotation, pod: podABC, hostPath: f.p("klink/pods/abc/volumes/v"),
			wantResolved: "kubelet/pods/abc/volumes/v", wantRule: "the pod's own kubelet directory"},
		{name: "own etc-hosts, real path", verdict: byAnnotation, pod: podABC, hostPath: f.p("kubelet/pods/abc/etc-hosts"),
			wantResolved: "kubelet/pods/abc/etc-hosts", wantRule: "own kubelet directory"},
		{name: "own dir itself", verdict: byAnnotation, pod: podABC, hostPath: f.p("klink/pods/abc"),
			wantResolved: "kubelet/pods/abc", wantRule: "own kubelet directory"},
		{name: "symlink inside own dir to own file", verdict: byAnnotation, pod: podABC, hostPath: f.p("kubelet/pods/abc/volumes/local"),
			wantResolved: "kubelet/pods/abc/volumes/v/file", wantRule: "own kubelet directory"},
		// Element-wise prefixes: abc does not allow abcdef, shared not shared2.
		{name: "pod abc may not mount pod abcdef", verdict: byAnnotation, pod: podABC, hostPath: f.p("kubelet/pods/abcdef/volumes/v"),
			wantResolved: "kubelet/pods/abcdef/volumes/v", wantCode: errdefs.ErrFailedPrecondition, wantRule: "deny by default",
			wantMsg: []string{"kubelet/pods/abcdef/volumes/v", "untrusted_allowed_host_paths", "allow_host_paths"}},
		{name: "another pod's volume", verdict: byAnnotation, pod: podABC, hostPath: f.p("klink/pods/other/volumes/v"),
			wantResolved: "kubelet/pods/other/volumes/v", wantCode: errdefs.ErrFailedPrecondition, wantRule: "deny by default"},
		{name: "symlink in own dir to another pod's", verdict: byAnnotation, pod: podABC, hostPath: f.p("kubelet/pods/abc/volumes/evil"),
			wantResolved: "kubelet/pods/other/volumes/v", wantCode: errdefs.ErrFailedPrecondition, wantRule: "deny by default"},
		{name: "symlink elsewhere to another pod's", verdict: byAnnotation, pod: podABC, hostPath: f.p("links/other-pod"),
			wantResolved: "kubelet/pods/other/volumes/v", wantCode: errdefs.ErrFailedPrecondition},
		{name: "the pods dir", verdict: byAnnotation, pod: podABC, hostPath: f.p("klink/pods"),
			wantResolved: "kubelet/pods", wantCode: errdefs.ErrFailedPrecondition},
		{name: "a UID that climbs out", verdict: byAnnotation, pod: PodInput{UID: ".."}, hostPath: f.p("kubelet/pods/abc"),
			wantResolved: "kubelet/pods/abc", wantCode: errdefs.ErrFailedPrecondition, wantMsg: []string{"the pod has no usable UID"}},
		{name: "a UID with a slash", verdict: byAnnotation, pod: PodInput{UID: "abc/volumes"}, hostPath: f.p("kubelet/pods/abc/volumes/v"),
			wantResolved: "kubelet/pods/abc/volumes/v", wantCode: errdefs.ErrFailedPrecondition},
		// untrusted_allowed_host_paths.
		{name: "allowlisted dir", verdict: byAnnotation, pod: podABC, hostPath: f.p("srv/shared"),
			wantResolved: "srv/shared", wantRule: `untrusted_allowed_host_paths entry "` + f.p("srv/shared") + `"`},
		{name: "below an allowlisted dir", verdict: byAnnotation, pod: podABC, hostPath: f.p("srv/shared/sub"),
			wantResolved: "srv/shared/sub", wantRule: "untrusted_allowed_host_paths"},
		{name: "symlink to an allowlisted dir", verdict: byAnnotation, pod: podABC, hostPath: f.p("links/shared"),
			wantResolved: "srv/shared", wantRule: "untrusted_allowed_host_paths"},
		{name: "string prefix of an allowlisted dir", verdict: byAnnotation, pod: podABC, hostPath: f.p("srv/shared2/file"),
			wantResolved: "srv/shared2/file", wantCode: errdefs.ErrFailedPrecondition},
		{name: "parent of an allowlisted dir", verdict: byAnnotation, pod: podABC, hostPath: f.p("srv"),
			wantResolved: "srv", wantCode: errdefs.ErrFailedPrecondition},
		{name: "symlink in an allowlisted dir to /etc", verdict: byAnnotation, pod: podABC, hostPath: f.p("srv/shared/escape"),
			wantResolved: "/etc", wantCode: errdefs.ErrFailedPrecondition, wantMsg: []string{`(resolved "/etc")`}},
		{name: "dot-dot out of an allowlisted dir", verdict: byAnnotation, pod: podABC, hostPath: f.p("srv/shared/../shared2"),
			wantResolved: "srv/shared2", wantCode: errdefs.ErrFailedPrecondition},
		// The deciding rule's allow_host_paths: only for pods it classified.
		{name: "rule allow_host_paths", verdict: byRule, pod: podABC, hostPath: f.p("models/file"),
			wantResolved: "models/file", wantRule: `allow_host_paths entry "` + f.p("models") + `" of rule "tenants"`},
		{name: "rule allow_host_paths, pod untrusted by annotation", verdict: byAnnotation, pod: podABC, hostPath: f.p("models/file"),
			wantResolved: "models/file", wantCode: errdefs.ErrFailedPrecondition, wantRule: "deny by default (pod untrusted by annotation"},
		{name: "rule not in the policy any more", verdict: Verdict{Rule: "gone"}, pod: podABC, hostPath: f.p("models/file"),
			wantResolved: "models/file", wantCode: errdefs.ErrFailedPrecondition, wantRule: `pod untrusted by rule "gone"`},
		// Protected paths stay refused below an allowed prefix.
		{name: "crivm runroot below an allowed prefix", verdict: byRule, pod: podABC, hostPath: f.p("state/run"),
			wantResolved: "state/run", wantCode: errdefs.ErrFailedPrecondition, wantRule: "protected path: crivm's runroot",
			wantMsg: []string{"no allowlist permits", `allow_host_paths entry "` + f.p("state") + `"`}},
		{name: "an ancestor of crivm's runroot", verdict: byRule, pod: podABC, hostPath: f.p("state"),
			wantResolved: "state", wantCode: errdefs.ErrFailedPrecondition, wantRule: "protected path: crivm's runroot"},
		{name: "beside crivm's runroot", verdict: byRule, pod: podABC, hostPath: f.p("state/other/file"),
			wantResolved: "state/other/file", wantRule: "allow_host_paths"},
		{name: "crivm root", verdict: byRule, pod: podABC, hostPath: f.p("root"),
			wantResolved: "root", wantCode: errdefs.ErrFailedPrecondition, wantRule: "deny by default"},
		// The host.
		{name: "/", verdict: byRule, pod: podABC, hostPath: "/",
			wantResolved: "/", wantCode: errdefs.ErrFailedPrecondition, wantRule: `deny by default (pod untrusted by rule "tenants")`,
			wantMsg: []string{`hostPath "/" (resolved "/")`, `rule: deny by default (pod untrusted by rule "tenants")`, "allow it with untrusted_allowed_host_paths or a rule's allow_host_paths"}},
		{name: "/etc", verdict: byRule, pod: podABC, hostPath: "/etc",
			wantResolved: "/etc", wantCode: errdefs.ErrFailedPrecondition},
		{name: "/etc/../proc", verdict: byRule, pod: podABC, hostPath: "/etc/../proc",
			wantResolved: "/proc", wantCode: errdefs.ErrFailedPrecondition, wantMsg: []string{`"/etc/../proc"`, `(resolved "/proc")`}},
		{name: "symlink to /etc", verdict: byRule, pod: podABC, hostPath: f.p("links/etc"),
			wantResolved: "/etc", wantCode: errdefs.ErrFailedPrecondition, wantMsg: []string{f.p("links/etc"), `(resolved "/etc")`}},
		{name: "symlink to /", verdict: byRule, pod: podABC, hostPath: f.p("links/root"),
			wantResolved: "/", wantCode: errdefs.ErrFailedPrecondition},
		// Missing and malformed sources.
		{name: "missing", verdict: byRule, pod: podABC, hostPath: f.p("srv/shared/missing"),
			wantCode: errdefs.ErrFailedPrecondition, wantMsg: []string{"does not exist (sources are never created for untrusted pods)"}},
		{name: "missing in own dir", verdict: byRule, pod: podABC, hostPath: f.p("kubelet/pods/abc/volumes/new"),
			wantCode: errdefs.ErrFailedPrecondition, wantMsg: []string{"does not exist"}},
		{name: "dangling symlink", verdict: byRule, pod: podABC, hostPath: f.p("links/dangling"),
			wantCode: errdefs.ErrFailedPrecondition, wantMsg: []string{"does not exist"}},
		{name: "relative", verdict: byRule, pod: podABC, hostPath: "srv/shared",
			wantCode: errdefs.ErrInvalidArgument, wantMsg: []string{"not an absolute path"}},
		{name: "empty", verdict: byRule, pod: podABC, hostPath: "",
			wantCode: errdefs.ErrInvalidArgument},
		// Devices.
		{name: "listed device", verdict: byRule, pod: podABC, hostPath: "/dev/null", device: true,
			wantRule: `untrusted_allowed_devices entry "/dev/null"`},
		{name: "unlisted device", verdict: byRule, pod: podABC, hostPath: "/dev/kvm", device: true,
			wantCode: errdefs.ErrFailedPrecondition, wantRule: "no host devices by default",
			wantMsg: []string{`device "/dev/kvm"`, "unless listed in untrusted_allowed_devices"}},
		{name: "relative device", verdict: byRule, pod: podABC, hostPath: "dev/null", device: true,
			wantCode: errdefs.ErrFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ms []*runtimeapi.Mount
			var ds []*runtimeapi.Device
			if tt.device {
				ds = []*runtimeapi.Device{{HostPath: tt.hostPath, ContainerPath: "/dev/x", Permissions: "rwm"}}
			} else {
				ms = []*runtimeapi.Mount{{HostPath: tt.hostPath, ContainerPath: "/mnt"}}
			}
			got := f.c.JudgeMounts(tt.verdict, tt.pod, ms, ds)
			defer CloseDecisions(got)
			if len(got) != 1 {
				t.Fatalf("got %d decisions, want 1: %+v", len(got), got)
			}
			d := got[0]
			want := tt.wantResolved
			if want != "" && !filepath.IsAbs(want) {
				want = f.p(want)
			}
			if d.HostPath != tt.hostPath || d.Device != tt.device || d.Resolved != want {
				t.Errorf("decision %+v: want host path %q, device %t, resolved %q", d, tt.hostPath, tt.device, want)
			}
			if !strings.Contains(d.Rule, tt.wantRule) {
				t.Errorf("rule %q lacks %q", d.Rule, tt.wantRule)
			}
			if tt.wantCode == nil {
				if d.Err != nil || !d.Allowed {
					t.Fatalf("refused: %v", d.Err)
				}
				if !tt.device && d.File == nil {
					t.Fatal("allowed mount without a descriptor")
				}
				return
			}
			if d.Allowed || !errors.Is(d.Err, tt.wantCode) || d.File != nil {
				t.Fatalf("got allowed %t, file %v, err %v; want a refusal of class %v and no descriptor", d.Allowed, d.File, d.Err, tt.wantCode)
			}
			if !tt.device && tt.hostPath != "" && !strings.Contains(d.Err.Error(), tt.hostPath) {
				t.Errorf("error %q does not name the host path", d.Err)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(d.Err.Error(), w) {
					t.Errorf("error %q lacks %q", d.Err, w)
				}
			}
		})
	}
	// Missing sources were not created.
	for _, p := range []string{"srv/shared/missing", "kubelet/pods/abc/volumes/new", "nowhere"} {
		if _, err := os.Lstat(f.p(p)); !os.IsNotExist(err) {
			t.Errorf("%s exists after the check (%v)", p, err)
		}
	}
}

func TestCheckMountsTrustedIsUnrestricted(t *testing.T) {
	f := newMountFixture(t)
	ms := []*runtimeapi.Mount{{HostPath: "/etc", ContainerPath: "/e"}, {HostPath: f.p("missing"), ContainerPath: "/m"}}
	ds := []*runtimeapi.Device{{HostPath: "/dev/kvm"}}
	srcs, err := f.c.CheckMounts(trustedVM, podABC, ms, ds)
	if err != nil || srcs != nil {
		t.Fatalf("trusted pod: got %v, %v; want nil, nil", srcs, err)
	}
	if _, err := os.Lstat(f.p("missing")); !os.IsNotExist(err) {
		t.Errorf("the policy created a source for a trusted pod")
	}
	// An untrusted pod without mounts gets an empty, non-nil map: the
	// handler then resolves and creates nothing.
	srcs, err = f.c.CheckMounts(byRule, podABC, nil, nil)
	if err != nil || srcs == nil || len(srcs) != 0 {
		t.Fatalf("untrusted pod without mounts: got %v, %v", srcs, err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func TestCheckMountsSources(t *testing.T) {
	f := newMountFixture(t)
	before := openFDs(t)
	ms := []*runtimeapi.Mount{
		{HostPath: f.p("klink/pods/abc/volumes/v"), ContainerPath: "/v"},
		{HostPath: f.p("links/shared"), ContainerPath: "/shared"},
		{HostPath: f.p("links/shared"), ContainerPath: "/shared-again", Readonly: true},
		{ContainerPath: "/img", Image: &runtimeapi.ImageSpec{Image: "x"}},
	}
	srcs, err := f.c.CheckMounts(byRule, podABC, ms, []*runtimeapi.Device{{HostPath: "/dev/null"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(srcs) != 2 {
		t.Fatalf("got %d sources, want 2 (keyed by host_path): %v", len(srcs), srcs)
	}
	for hp, want := range map[string]string{f.p("klink/pods/abc/volumes/v"): f.p("kubelet/pods/abc/volumes/v"), f.p("links/shared"): f.p("srv/shared")} {
		s := srcs[hp]
		if s.Resolved != want || s.File == nil {
			t.Errorf("source of %s: %+v, want resolved %s", hp, s, want)
			continue
		}
		// The descriptor is O_PATH, close-on-exec, and is the directory.
		fl, err := unix.FcntlInt(s.File.Fd(), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_PATH == 0 {
			t.Errorf("%s: flags %#x, %v: want O_PATH", hp, fl, err)
		}
		if fd, err := unix.FcntlInt(s.File.Fd(), unix.F_GETFD, 0); err != nil || fd&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: fd flags %#x, %v: want FD_CLOEXEC", hp, fd, err)
		}
	}
	if openFDs(t) != before+2 {
		t.Errorf("open descriptors: %d, want %d", openFDs(t), before+2)
	}
	CloseSources(srcs)
	if n := openFDs(t); n != before {
		t.Errorf("after CloseSources: %d open descriptors, want %d", n, before)
	}

	// One refusal among allowed mounts: the first refusal, every
	// descriptor closed.
	ms = append(ms, &runtimeapi.Mount{HostPath: "/etc", ContainerPath: "/etc2"}, &runtimeapi.Mount{HostPath: "/", ContainerPath: "/host"})
	srcs, err = f.c.CheckMounts(byRule, podABC, ms, nil)
	if srcs != nil || !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), `hostPath "/etc"`) || !strings.Contains(err.Error(), "(and 1 more refused)") {
		t.Errorf("got %v, %v; want the refusal of /etc and one more", srcs, err)
	}
	if _, err := f.c.CheckMounts(byRule, podABC, ms[:1], []*runtimeapi.Device{{HostPath: "/dev/kvm"}}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "/dev/kvm") {
		t.Errorf("device refusal: %v", err)
	}
	if n := openFDs(t); n != before {
		t.Errorf("after refusals: %d open descriptors, want %d", n, before)
	}
}

// TestSwappedSymlink: a symlink swapped after the check does not move the
// source: the descriptor still refers to what was judged.
func TestSwappedSymlink(t *testing.T) {
	f := newMountFixture(t)
	link := f.p("links/swap")
	if err := os.Symlink(f.p("srv/shared"), link); err != nil {
		t.Fatal(err)
	}
	srcs, err := f.c.CheckMounts(byRule, podABC, []*runtimeapi.Mount{{HostPath: link, ContainerPath: "/s"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseSources(srcs)
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", link); err != nil {
		t.Fatal(err)
	}
	s := srcs[link]
	if s.Resolved != f.p("srv/shared") {
		t.Errorf("resolved %q, want %q", s.Resolved, f.p("srv/shared"))
	}
	if now, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(s.File.Fd()))); err != nil || now != f.p("srv/shared") {
		t.Errorf("the descriptor now refers to %q (%v), want the first target %q", now, err, f.p("srv/shared"))
	}
	var got, want unix.Stat_t
	if err := unix.Fstat(int(s.File.Fd()), &got); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(f.p("srv/shared"), &want); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		t.Errorf("descriptor inode %d:%d, want the first target's %d:%d", got.Dev, got.Ino, want.Dev, want.Ino)
	}
	// Judged again, the swapped link is refused.
	if _, err := f.c.CheckMounts(byRule, podABC, []*runtimeapi.Mount{{HostPath: link, ContainerPath: "/s"}}, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("swapped link judged again: %v, want a refusal", err)
	}
}

func TestDecideMountsAuditsAndCounts(t *testing.T) {
	f := newMountFixture(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := NewAuditLog(path)
	if err != nil {
		t.Fatal(err)
	}
	p := mustPolicy(t, f.cfg, "[[rule]]\nname = \"tenants\"\ntrust = \"untrusted\"\n[rule.match]\nnamespaces = [\"tenant-*\"]\n")
	c := New(f.cfg, p, WithAuditLog(a))
	ctx := context.Background()
	ms := []*runtimeapi.Mount{
		{HostPath: f.p("srv/shared"), ContainerPath: "/ok"},
		{HostPath: f.p("links/etc"), ContainerPath: "/e"},
	}
	ds := []*runtimeapi.Device{{HostPath: "/dev/kvm"}, {HostPath: "/dev/null"}}
	srcs, err := c.DecideMounts(ctx, byRule, podABC, "app", ms, ds)
	if srcs != nil || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("got %v, %v", srcs, err)
	}
	if _, err := c.DecideMounts(ctx, trustedVM, podABC, "app", ms, ds); err != nil {
		t.Fatalf("trusted: %v", err)
	}
	a.Close()
	lines := readAudit(t, path)
	if len(lines) != 2 {
		t.Fatalf("got %d audit lines, want 2 (one per refusal): %v", len(lines), lines)
	}
	m, d := lines[0], lines[1]
	if m["event"] != EventMountRefused || m["container"] != "app" || m["host_path"] != f.p("links/etc") || m["resolved"] != "/etc" ||
		m["pod_uid"] != "abc" || m["rule"] != "tenants" || m["trusted"] != false ||
		!strings.Contains(m["mount_rule"].(string), "deny by default") || !strings.Contains(m["refused"].(string), `(resolved "/etc")`) {
		t.Errorf("mount refusal line: %v", m)
	}
	if d["event"] != EventDeviceRefused || d["host_path"] != "/dev/kvm" || d["resolved"] != nil || !strings.Contains(d["refused"].(string), "untrusted_allowed_devices") {
		t.Errorf("device refusal line: %v", d)
	}
	for _, tt := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"mount", "admitted"}, 1},
		{[]string{"mount", "refused"}, 1},
		{[]string{"device", "admitted"}, 1},
		{[]string{"device", "refused"}, 1},
	} {
		var m dto.Metric
		if err := c.mounts.WithLabelValues(tt.labels...).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); got != tt.want {
			t.Errorf("mount checks%v: got %v, want %v", tt.labels, got, tt.want)
		}
	}
}

func TestWithin(t *testing.T) {
	for _, tt := range []struct {
		p, dir string
		want   bool
	}{
		{"/var/lib/kubelet/pods/abc", "/var/lib/kubelet/pods/abc", true},
		{"/var/lib/kubelet/pods/abc/volumes", "/var/lib/kubelet/pods/abc", true},
		{"/var/lib/kubelet/pods/abcdef", "/var/lib/kubelet/pods/abc", false},
		{"/var/lib/kubelet/pods", "/var/lib/kubelet/pods/abc", false},
		{"/srv/shared2", "/srv/shared", false},
		{"/anything", "/", true},
		{"/", "/srv", false},
	} {
		if got := within(tt.p, tt.dir); got != tt.want {
			t.Errorf("within(%q, %q) = %t, want %t", tt.p, tt.dir, got, tt.want)
		}
	}
}

func TestAllowHostPathsPolicyErrors(t *testing.T) {
	cfg := testConfig(configs.Trusted, "vm")
	for _, tt := range []struct {
		name, rule, want string
	}{
		{"relative", `allow_host_paths = ["/srv", "srv"]`, `p.toml:4: rule "x": key allow_host_paths: entry 1: "srv" is not an absolute path`},
		{"unclean", `allow_host_paths = ["/srv/"]`, `p.toml:4: rule "x": key allow_host_paths: entry 0: "/srv/" is not a clean path (write "/srv")`},
		{"root", `allow_host_paths = ["/"]`, `key allow_host_paths: entry 0: "/" would allow every host path`},
		{"empty", `allow_host_paths = []`, `key allow_host_paths: is empty; leave it out instead`},
		{"trusted rule", "allow_host_paths = [\"/srv\"]\ntrust = \"trusted\"", `key allow_host_paths: applies to untrusted rules only`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			trust := "trust = \"untrusted\"\n"
			if strings.Contains(tt.rule, "trust =") {
				trust = ""
			}
			dir := writeFiles(t, map[string]string{"p.toml": "[[rule]]\nname = \"x\"\n" + trust + tt.rule + "\n[rule.match]\nnamespaces = [\"a\"]\n"})
			_, err := LoadPolicy(filepath.Join(dir, "p.toml"), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
	p := mustPolicy(t, cfg, "[[rule]]\nname = \"x\"\ntrust = \"untrusted\"\nallow_host_paths = [\"/srv/a\", \"/srv/b\"]\n[rule.match]\nnamespaces = [\"a\"]\n")
	if r := p.ruleNamed("x"); r == nil || strings.Join(r.allowHostPaths, ",") != "/srv/a,/srv/b" {
		t.Errorf("rule x: %+v", r)
	}
}
