// Command critest runs cri-tools' CRI validation suite (critest) against a
// private crivm daemon, twice: with runc as the default handler, then with
// a fresh daemon whose default handler is the vm handler (default_runtime =
// "vm"), so that critest's trusted pods run in VMs.
//
// These machines reach neither gcr.io nor registry.k8s.io: the images
// critest pulls are stand-ins built by test/fixtures (CritestImages),
// pushed to a loopback Distribution registry under their original
// repository paths, which the daemon mirrors gcr.io, registry.k8s.io and
// k8s.gcr.io to (keeping the original names as the images' tags). The
// sandbox image is crivm's pause under another name, not pause:3.9.
//
// The only skips are in skips.go, each with its reason. For each run it
// prints critest's summary line, the failed specs and the wall time; the
// full critest output, its JSON report and the daemon log are kept under
// -artifacts. It exits 1 when a run has failures and -strict is set.
//
//	go run -tags "containers_image_openpgp exclude_graphdriver_btrfs" ./test/critest -tools DIR
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/crivm/crivm/test/fixtures"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
)

// mirrored are the registries whose images critest pulls.
var mirrored = []string{"gcr.io", "registry.k8s.io", "k8s.gcr.io"}

// sandboxPauseRepo is where the sandbox image (fixtures.Pause) is pushed.
const sandboxPauseRepo = "crivm/sandbox-pause"

// hostPorts must be free: critest maps 12000-12002 and the hostnet image
// listens on 12003.
var hostPorts = []int{12000, 12001, 12002, 12003}

type options struct {
	tools  string
	runs   []string
	strict bool
	// strictRuns fail the command on failed specs even when strict is off.
	strictRuns []string
	artifacts  string
	focus      string
	verbose    bool
	timeout    time.Duration
}

func main() {
	var o options
	var runs string
	flag.StringVar(&o.tools, "tools", "", "directory holding critest and crictl (scripts/critest-tools.sh prints it)")
	flag.StringVar(&runs, "runs", "runc,vm", "comma-separated runs: runc (runc default handler), vm (default_runtime = \"vm\")")
	flag.BoolVar(&o.strict, "strict", true, "exit 1 when a run has failed specs")
	flag.Func("strict-runs", "comma-separated runs whose failed specs exit 1 even with -strict=false (make test: runc)", func(v string) error {
		o.strictRuns = strings.Split(v, ",")
		return nil
	})
	flag.StringVar(&o.artifacts, "artifacts", "", "where to keep critest output, JSON reports and daemon logs (default: a new dir under $TMPDIR)")
	flag.StringVar(&o.focus, "focus", "", "only run specs matching this regexp (--ginkgo.focus), for debugging")
	flag.BoolVar(&o.verbose, "v", false, "stream critest's output")
	flag.DurationVar(&o.timeout, "timeout", 45*time.Minute, "critest's suite timeout per run")
	flag.Parse()
	o.runs = strings.Split(runs, ",")
	code, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "critest:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

// result is one critest run.
type result struct {
	run     string
	wall    time.Duration
	summary []string // critest's own summary lines ("Ran N of M Specs ...", "FAIL! -- ...")
	passed  int
	failed  []failure
	skipped int
	// selfSkips counts the specs critest skipped itself (Skip() in the
	// spec: a feature the runtime does not offer), by message.
	selfSkips map[string]int
	exitErr   error
	logPath   string
	reportOK  bool
}

type failure struct {
	spec, message, location string
}

func run(o options) (int, error) {
	if os.Geteuid() != 0 {
		return 0, errors.New("must run as root (it runs crivm, runc, QEMU and a CNI bridge)")
	}
	if o.tools == "" {
		return 0, errors.New("-tools is required (scripts/critest-tools.sh builds critest and crictl and prints their directory)")
	}
	critest := filepath.Join(o.tools, "critest")
	crictl := filepath.Join(o.tools, "crictl")
	for _, b := range []string{critest, crictl, registry.Binary} {
		if _, err := os.Stat(b); err != nil {
			return 0, fmt.Errorf("%s missing: %w (make critest builds cri-tools; make deps installs the registry)", b, err)
		}
	}
	for _, r := range o.runs {
		if r != runRunc && r != runVM {
			return 0, fmt.Errorf("unknown run %q (want runc or vm)", r)
		}
	}
	if o.artifacts == "" {
		d, err := os.MkdirTemp("", "crivm-critest-")
		if err != nil {
			return 0, err
		}
		o.artifacts = d
	}
	if err := os.MkdirAll(o.artifacts, 0o755); err != nil {
		return 0, err
	}
	if err := checkPorts(); err != nil {
		return 0, err
	}
	if _, err := framework.BinDir(); err != nil {
		return 0, err
	}

	// The skip list must still match this critest's specs.
	specs, err := listSpecs(critest, o.artifacts)
	if err != nil {
		return 0, err
	}
	if err := checkSkips(specs); err != nil {
		return 0, err
	}

	tb := framework.NewMainTB()
	defer tb.Close()
	start := time.Now()
	imgs, err := fixtures.CritestImages(fixtures.DefaultCacheDir())
	if err != nil {
		return 0, fmt.Errorf("building the critest stand-in images: %w", err)
	}
	sandboxPause, err := fixtures.Pause(fixtures.DefaultCacheDir())
	if err != nil {
		return 0, fmt.Errorf("building the pause image: %w", err)
	}
	reg := registry.Start(tb, registry.Options{})
	pushed := 0
	for _, img := range imgs {
		for _, ref := range img.Refs {
			repo, tag, err := splitRef(ref)
			if err != nil {
				return 0, err
			}
			if _, err := reg.Push(img.Image, repo, tag); err != nil {
				return 0, err
			}
			pushed++
		}
	}
	if _, err := reg.Push(sandboxPause, sandboxPauseRepo, fixtures.Tag); err != nil {
		return 0, err
	}
	fmt.Printf("critest: %d stand-in images (%d names) built and pushed to %s in %.1fs\n", len(imgs), pushed, reg.Host, time.Since(start).Seconds())

	var results []result
	for _, r := range o.runs {
		res, err := runOnce(o, r, critest, crictl, reg)
		if err != nil {
			return 0, fmt.Errorf("run %s: %w", r, err)
		}
		results = append(results, res)
		printResult(res)
	}

	fmt.Printf("\n==== critest summary, %s in all (artifacts in %s)\n", time.Since(start).Round(time.Second), o.artifacts)
	failed, fatal := false, false
	for _, r := range results {
		status := "ok"
		if len(r.failed) > 0 || r.exitErr != nil && !r.reportOK {
			status = "FAILED"
			failed = true
			fatal = fatal || o.strict || slices.Contains(o.strictRuns, r.run)
		}
		fmt.Printf("%-5s %-6s %3d passed, %3d failed, %3d skipped, wall %s\n", r.run, status, r.passed, len(r.failed), r.skipped, r.wall.Round(time.Second))
	}
	if fatal {
		return 1, nil
	}
	if failed {
		fmt.Println("critest: failures above do not fail this command (strict mode is off for their run)")
	}
	return 0, nil
}

// runOnce starts a fresh daemon for run, runs critest against it and
// collects the result.
func runOnce(o options, run, critest, crictl string, reg *registry.Registry) (result, error) {
	res := result{run: run}
	dir := filepath.Join(o.artifacts, run)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	tb := framework.NewMainTB()
	defer tb.Close()
	conf := ""
	if run == runVM {
		conf = "\n[crivm.runtime]\ndefault_runtime = \"vm\"\n"
	}
	d := framework.NewDaemon(tb, framework.DaemonOptions{Config: conf})
	var b strings.Builder
	fmt.Fprintf(&b, "[crivm.image]\ninsecure_registries = [%q]\n[crivm.image.registry_mirrors]\n", reg.Host)
	for _, m := range mirrored {
		fmt.Fprintf(&b, "%q = [%q]\n", m, reg.Host)
	}
	if err := os.WriteFile(filepath.Join(d.DropIn, "05-registry.conf"), []byte(b.String()), 0o644); err != nil {
		return res, err
	}
	d.UseBridgeNetwork()
	d.UsePauseImage(reg.Ref(sandboxPauseRepo, fixtures.Tag))
	ctx := context.Background()
	if err := d.TryStart(ctx); err != nil {
		return res, err
	}
	defer func() {
		copyFile(d.LogPath, filepath.Join(dir, "daemon.log"))
		if err := d.Stop(60 * time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "critest: stopping crivm after the %s run: %v\n", run, err)
		}
	}()
	// The runtime's status and config as crictl sees them, for the record.
	info, err := exec.Command(crictl, "--runtime-endpoint", d.Endpoint(), "--image-endpoint", d.Endpoint(), "info").CombinedOutput()
	if err != nil {
		return res, fmt.Errorf("crictl info: %v\n%s", err, info)
	}
	os.WriteFile(filepath.Join(dir, "crictl-info.json"), info, 0o644)

	report := filepath.Join(dir, "report.json")
	args := []string{
		"--runtime-endpoint", d.Endpoint(), "--image-endpoint", d.Endpoint(),
		"--ginkgo.no-color", "--ginkgo.json-report", report,
		"--ginkgo.timeout", o.timeout.String(),
	}
	for _, s := range skipsFor(run) {
		args = append(args, "--ginkgo.skip", s.pattern())
	}
	if o.focus != "" {
		args = append(args, "--ginkgo.focus", o.focus)
	}
	res.logPath = filepath.Join(dir, "critest.log")
	logf, err := os.Create(res.logPath)
	if err != nil {
		return res, err
	}
	defer logf.Close()
	fmt.Printf("\n==== critest, %s run: %s\n", run, describeRun(run))
	fmt.Printf("     %s %s\n", critest, strings.Join(args, " "))
	cmd := exec.Command(critest, args...)
	cmd.Dir = dir
	// critest's host paths (log dirs, volumes, a tmpfs) go below the run's
	// artifacts, not loose in /tmp; a failed spec may leave some behind.
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return res, err
	}
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	// critest reads /etc/crictl.yaml when present; the flags above win.
	var out io.Writer = logf
	if o.verbose {
		out = io.MultiWriter(logf, os.Stdout)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	summary := make(chan []string)
	go func() { summary <- scanSummary(pr, out) }()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		return res, err
	}
	res.exitErr = cmd.Wait()
	pw.Close()
	res.wall = time.Since(start)
	res.summary = <-summary
	if err := readReport(report, &res); err != nil {
		fmt.Fprintf(os.Stderr, "critest: reading the %s report: %v\n", run, err)
	} else {
		res.reportOK = true
	}
	return res, nil
}

func describeRun(run string) string {
	if run == runVM {
		return `default_runtime = "vm": every trusted pod gets its own VM (TCG here)`
	}
	return `default_runtime = "runc"`
}

// summaryLine matches critest's (ginkgo's) closing lines.
var summaryLine = regexp.MustCompile(`^(Ran \d+ of \d+ Specs|SUCCESS!|FAIL!|Test Suite (Passed|Failed)|--- FAIL|--- PASS)`)

// scanSummary copies r to out and returns ginkgo's summary lines.
func scanSummary(r io.Reader, out io.Writer) []string {
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		fmt.Fprintln(out, l)
		if summaryLine.MatchString(strings.TrimSpace(l)) {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	io.Copy(out, r)
	return lines
}

// ginkgo's JSON report, the fields used here.
type ginkgoReport struct {
	SpecReports []struct {
		ContainerHierarchyTexts []string
		LeafNodeText            string
		LeafNodeType            string
		State                   string
		Failure                 struct {
			Message  string
			Location struct {
				FileName   string
				LineNumber int
			}
		}
	}
}

func readReport(path string, res *result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var reports []ginkgoReport
	if err := json.Unmarshal(b, &reports); err != nil {
		return err
	}
	for _, rep := range reports {
		for _, s := range rep.SpecReports {
			name := strings.TrimSpace(strings.Join(append(append([]string(nil), s.ContainerHierarchyTexts...), s.LeafNodeText), " "))
			if s.LeafNodeType != "It" {
				name = s.LeafNodeType + " " + name
			}
			switch s.State {
			case "passed":
				if s.LeafNodeType == "It" {
					res.passed++
				}
			case "skipped", "pending":
				if s.LeafNodeType == "It" {
					res.skipped++
					if m := strings.TrimSpace(s.Failure.Message); m != "" {
						if res.selfSkips == nil {
							res.selfSkips = map[string]int{}
						}
						res.selfSkips[m]++
					}
				}
			default: // failed, panicked, timedout, interrupted, aborted
				msg := strings.TrimSpace(s.Failure.Message)
				if i := strings.IndexByte(msg, '\n'); i >= 0 {
					msg = msg[:i]
				}
				res.failed = append(res.failed, failure{
					spec:     name,
					message:  s.State + ": " + msg,
					location: fmt.Sprintf("%s:%d", filepath.Base(s.Failure.Location.FileName), s.Failure.Location.LineNumber),
				})
			}
		}
	}
	sort.Slice(res.failed, func(i, j int) bool { return res.failed[i].spec < res.failed[j].spec })
	return nil
}

func printResult(r result) {
	fmt.Printf("---- %s run: critest took %s; full output %s\n", r.run, r.wall.Round(time.Second), r.logPath)
	for _, l := range r.summary {
		fmt.Println("     " + l)
	}
	if len(r.failed) > 0 {
		fmt.Printf("     %d failed specs:\n", len(r.failed))
		for _, f := range r.failed {
			fmt.Printf("     - %s\n         %s (%s)\n", f.spec, truncate(f.message, 300), f.location)
		}
	}
	if len(r.selfSkips) > 0 {
		msgs := make([]string, 0, len(r.selfSkips))
		for m := range r.selfSkips {
			msgs = append(msgs, m)
		}
		sort.Strings(msgs)
		fmt.Printf("     skipped by critest itself (not in the skip list):\n")
		for _, m := range msgs {
			fmt.Printf("     - %2d: %s\n", r.selfSkips[m], truncate(m, 200))
		}
	}
	if r.exitErr != nil && !r.reportOK {
		fmt.Printf("     critest exited with %v and wrote no report\n", r.exitErr)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// listSpecs dry-runs critest and returns every spec's full text.
func listSpecs(critest, dir string) ([]string, error) {
	report := filepath.Join(dir, "specs.json")
	cmd := exec.Command(critest, "--ginkgo.dry-run", "--ginkgo.no-color", "--ginkgo.json-report", report,
		"--runtime-endpoint", "unix:///nonexistent.sock")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("listing critest's specs: %v\n%s", err, out)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		return nil, err
	}
	var reports []ginkgoReport
	if err := json.Unmarshal(b, &reports); err != nil {
		return nil, err
	}
	var specs []string
	for _, rep := range reports {
		for _, s := range rep.SpecReports {
			if s.LeafNodeType == "It" {
				specs = append(specs, strings.Join(append(append([]string(nil), s.ContainerHierarchyTexts...), s.LeafNodeText), " "))
			}
		}
	}
	return specs, nil
}

// checkSkips fails when a skip entry matches no spec (a stale entry) and
// prints the skip list with what each entry skips.
func checkSkips(specs []string) error {
	fmt.Printf("critest: %d specs; skip list (test/critest/skips.go):\n", len(specs))
	for _, s := range skips {
		n := 0
		for _, sp := range specs {
			if s.matches(sp) {
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("skip entry %q matches no critest spec: update test/critest/skips.go", s.Spec)
		}
		runs := "all runs"
		if s.Runs != nil {
			runs = strings.Join(s.Runs, ",") + " run"
		}
		fmt.Printf("  - %q (%d specs, %s): %s\n", s.Spec, n, runs, s.Reason)
	}
	return nil
}

// splitRef splits "host/path:tag" into the registry repository path and tag.
func splitRef(ref string) (repo, tag string, err error) {
	host, rest, ok := strings.Cut(ref, "/")
	if !ok || !strings.ContainsAny(host, ".:") {
		return "", "", fmt.Errorf("reference %q has no registry host", ref)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 || strings.Contains(rest[i:], "/") {
		return rest, "latest", nil
	}
	return rest[:i], rest[i+1:], nil
}

func checkPorts() error {
	for _, p := range hostPorts {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			return fmt.Errorf("host port %d must be free for critest: %w", p, err)
		}
		l.Close()
	}
	return nil
}

func copyFile(src, dst string) {
	b, err := os.ReadFile(src)
	if err == nil {
		os.WriteFile(dst, b, 0o644)
	}
}
