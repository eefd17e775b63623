//go:build nodee2e

package nodee2e

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// sc is one scenario's *testing.T: its errors also go into the report, so
// docs/conformance.md can say precisely what failed.
type sc struct {
	*testing.T
	msgs *[]string
}

func (c *sc) record(s string) { *c.msgs = append(*c.msgs, s) }

func (c *sc) Errorf(f string, a ...any) {
	c.T.Helper()
	s := fmt.Sprintf(f, a...)
	c.record(s)
	c.T.Error(s)
}

func (c *sc) Fatalf(f string, a ...any) {
	c.T.Helper()
	s := fmt.Sprintf(f, a...)
	c.record(s)
	c.T.Fatal(s)
}

func (c *sc) Fatal(a ...any) {
	c.T.Helper()
	c.Fatalf("%s", fmt.Sprint(a...))
}

func (c *sc) Error(a ...any) {
	c.T.Helper()
	c.Errorf("%s", fmt.Sprint(a...))
}

// Skipf records the reason too.
func (c *sc) Skipf(f string, a ...any) {
	c.T.Helper()
	s := fmt.Sprintf(f, a...)
	c.record("skipped: " + s)
	c.T.Skip(s)
}

// scenarioNames are the report's rows, in order.
var scenarioNames = []struct{ id, title string }{
	{"01", "pod Ready, `kubectl logs`, pod on the right handler"},
	{"02", "`kubectl exec -i`: stdin in, stdout/stderr out, exit code 3"},
	{"03", "`kubectl attach -i`"},
	{"04", "`kubectl port-forward`"},
	{"05", "container exit code 7 (restartPolicy Never)"},
	{"06", "OOMKilled with exit code 137"},
	{"07", "liveness probe (exec) fails: container restarted"},
	{"08", "init container runs to completion first"},
	{"09", "two containers share an emptyDir"},
	{"10", "resource limits applied (memory, CPU quota and shares)"},
	{"11", "`/stats/summary` non-zero for the pod and its containers"},
	{"12", "static pod, no RuntimeClass (default handler)"},
	{"13", "unknown RuntimeClass handler refused at RunPodSandbox"},
	{"14", "after deleting everything: no process, mount, netns, veth, cgroup left"},
}

type result struct {
	status  string // pass, FAIL, skip
	details []string
	dur     time.Duration
}

// report collects per-handler scenario results and the run's facts, and
// writes the markdown section of docs/conformance.md.
type report struct {
	mu      sync.Mutex
	start   time.Time
	results map[string]result // "runc/01" -> result
	facts   []string
	notes   []string
	fatal   string
}

func newReport() *report {
	return &report{start: time.Now(), results: map[string]result{}}
}

func (r *report) fact(f string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.facts = append(r.facts, fmt.Sprintf(f, a...))
}

func (r *report) note(f string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(f, a...))
}

// scenario runs fn as subtest "ID-name" of t and records its result under
// column/id.
func (e *env) scenario(t *testing.T, column, id, name string, fn func(c *sc)) bool {
	var msgs []string
	start := time.Now()
	skipped := false
	ok := t.Run(id+"-"+name, func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		fn(&sc{T: t, msgs: &msgs})
	})
	st := "pass"
	switch {
	case skipped:
		st = "skip"
	case !ok:
		st = "FAIL"
		if len(msgs) == 0 {
			msgs = append(msgs, "failed (see the go test log)")
		}
	}
	e.rep.mu.Lock()
	e.rep.results[column+"/"+id] = result{status: st, details: msgs, dur: time.Since(start)}
	e.rep.mu.Unlock()
	return ok
}

// markdown renders the section written into docs/conformance.md.
func (r *report) markdown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("## Node e2e: a real kubelet against crivm (`make node-e2e`)\n\n")
	fmt.Fprintf(&b, "Run %s UTC, %s wall (without the Kubernetes build). ",
		r.start.UTC().Format("2006-01-02 15:04"), time.Since(r.start).Round(time.Second))
	b.WriteString("A one-node cluster on 127.0.0.1: Debian's etcd, kube-apiserver and kubelet built from the Go module " +
		"proxy, no scheduler or controller-manager (pods carry `spec.nodeName`), RuntimeClasses `runc` and `vm` " +
		"(`vm` with `overhead.podFixed` memory " + vmOverheadMemory + ", cpu " + vmOverheadCPU + ", which the kubelet adds to the pod cgroup that holds QEMU); " +
		"images from a loopback registry (the repo's busybox fixture), pods on a private CNI bridge. " +
		"Scenarios and their checks: `test/nodee2e/scenarios_test.go`; the cluster: `test/nodee2e/node_test.go`.\n\n")
	for _, f := range r.facts {
		fmt.Fprintf(&b, "- %s\n", f)
	}
	b.WriteString("\n")
	if r.fatal != "" {
		fmt.Fprintf(&b, "**The run stopped before the scenarios finished:** %s\n\n", oneLine(r.fatal, 1500))
	}
	b.WriteString("| # | scenario | runc | vm |\n|---|---|---|---|\n")
	cell := func(col, id string) string {
		res, ok := r.results[col+"/"+id]
		if !ok {
			return "not run"
		}
		if res.status == "FAIL" {
			return "**FAIL**"
		}
		return res.status
	}
	counts := map[string]int{}
	for _, s := range scenarioNames {
		var runc, vm string
		switch s.id {
		case "12":
			runc, vm = cell("node", s.id)+" (handler \"\" → runc)", "n/a"
		case "13":
			v := cell("node", s.id)
			runc, vm = v+" (handler `nosuch`)", v
		default:
			runc, vm = cell("runc", s.id), cell("vm", s.id)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.id, s.title, runc, vm)
	}
	for _, res := range r.results {
		counts[res.status]++
	}
	fmt.Fprintf(&b, "\n%d passed, %d failed, %d skipped.\n", counts["pass"], counts["FAIL"], counts["skip"])
	var fails []string
	for _, col := range []string{"runc", "vm", "node"} {
		for _, s := range scenarioNames {
			res, ok := r.results[col+"/"+s.id]
			if !ok || res.status == "pass" {
				continue
			}
			var d []string
			for _, m := range res.details {
				d = append(d, oneLine(m, 1200))
			}
			fails = append(fails, fmt.Sprintf("- **%s %s** (%s): %s", col, s.id, res.status, strings.Join(d, " / ")))
		}
	}
	if len(fails) > 0 {
		b.WriteString("\nFailures and skips, with the kubelet's and crivm's own words:\n\n")
		b.WriteString(strings.Join(fails, "\n"))
		b.WriteString("\n")
	}
	if len(r.notes) > 0 {
		b.WriteString("\nObserved along the way:\n\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", oneLine(n, 1500))
		}
	}
	return b.String()
}

// oneLine folds whitespace (markdown table and list safe) and truncates.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.ReplaceAll(s, "|", "\\|")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

func (r *report) write(t *testing.T, path string) {
	if path == "" {
		return
	}
	if err := os.WriteFile(path, []byte(r.markdown()), 0o644); err != nil {
		t.Logf("writing the report: %v", err)
		return
	}
	t.Logf("report written to %s", path)
}
