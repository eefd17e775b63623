package trust

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/crivm/crivm/configs"
)

func readAudit(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

func TestDecideAuditsAndCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "audit.log")
	a, err := NewAuditLog(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(configs.Trusted, "vm")
	p := mustPolicy(t, cfg, "[[rule]]\nname = \"pub\"\ntrust = \"untrusted\"\n[rule.match]\nimage_registries = [\"docker.io\"]\n")
	c := New(cfg, p, WithAuditLog(a))
	ctx := context.Background()
	in := PodInput{UID: "u1", Namespace: "ns", Name: "a", RuntimeHandler: "kata"}
	v, err := c.Decide(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	refusedIn := PodInput{UID: "u2", Namespace: "ns", Name: "b", RuntimeHandler: "runc", Annotations: map[string]string{annUW: "true"}}
	if v2, err := c.Decide(ctx, refusedIn); err == nil || v2.Handler != "" {
		t.Fatalf("got %+v, %v; want a refusal with a zero verdict", v2, err)
	}
	sandbox, _ := c.Decide(ctx, PodInput{UID: "u3", Namespace: "ns", Name: "c"})
	if err := c.DecideImage(ctx, sandbox, PodInput{UID: "u3", Namespace: "ns", Name: "c"}, "busybox"); err == nil {
		t.Fatal("DecideImage: got no error")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("file mode %v, want 0640", st.Mode().Perm())
	}
	if dst, _ := os.Stat(filepath.Dir(path)); dst.Mode().Perm() != 0o750 {
		t.Errorf("dir mode %v, want 0750", dst.Mode().Perm())
	}
	lines := readAudit(t, path)
	if len(lines) != 4 {
		t.Fatalf("got %d audit lines, want 4", len(lines))
	}
	first := lines[0]
	if _, err := time.Parse(time.RFC3339Nano, first["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
	for k, want := range map[string]any{
		"pod_uid": "u1", "namespace": "ns", "name": "a", "runtime_handler_requested": "kata",
		"handler": "vm", "trusted": true,
	} {
		if first[k] != want {
			t.Errorf("line 1 %s: got %v, want %v", k, first[k], want)
		}
	}
	if _, ok := first["refused"]; ok {
		t.Errorf("admitted line has refused: %v", first)
	}
	if r := first["reasons"].([]any); len(r) != 2 || r[1] != v.Reasons[1] {
		t.Errorf("reasons: got %v, want %v", r, v.Reasons)
	}
	second := lines[1]
	if ref, _ := second["refused"].(string); !strings.Contains(ref, `runtime handler "runc"`) || second["trusted"] != false || second["pod_uid"] != "u2" {
		t.Errorf("refused line: %v", second)
	}
	img := lines[3]
	if img["rule"] != "pub" || img["handler"] != "runc" || img["refused"] == nil || img["images"].([]any)[0] != "busybox" {
		t.Errorf("image line: %v", img)
	}

	for _, tt := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"vm", "true", "admitted"}, 1},
		{[]string{"runc", "false", "refused"}, 1},
		{[]string{"runc", "true", "admitted"}, 1},
	} {
		var m dto.Metric
		if err := c.verdicts.WithLabelValues(tt.labels...).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); got != tt.want {
			t.Errorf("verdicts%v: got %v, want %v", tt.labels, got, tt.want)
		}
	}
	var m dto.Metric
	if err := c.images.WithLabelValues("runc", "false", "refused").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("image checks: got %v, %v", m.GetCounter().GetValue(), err)
	}
	if n := len(c.Collectors()); n != 3 {
		t.Errorf("got %d collectors, want 3", n)
	}
}

func TestAuditConcurrentAndNoop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := NewAuditLog(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				if err := a.Record(context.Background(), PodInput{Name: strings.Repeat("x", 100*i)}, Verdict{Handler: "vm"}, nil); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	a.Close()
	if err := a.Record(context.Background(), PodInput{}, Verdict{}, nil); err != nil {
		t.Errorf("record after close: %v", err)
	}
	if n := len(readAudit(t, path)); n != 400 {
		t.Errorf("got %d lines, want 400", n)
	}

	noop, err := NewAuditLog("")
	if err != nil {
		t.Fatal(err)
	}
	if err := noop.Record(context.Background(), PodInput{}, Verdict{}, nil); err != nil || noop.Close() != nil {
		t.Errorf("no-op audit log: %v", err)
	}
	var nilLog *AuditLog
	if err := nilLog.Record(context.Background(), PodInput{}, Verdict{}, nil); err != nil {
		t.Errorf("nil audit log: %v", err)
	}
}
