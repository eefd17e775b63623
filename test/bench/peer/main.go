// Command peer measures crivm and Debian's containerd (CRI plugin, runc v2
// shim) side by side in one run, with the same workloads, images, registry
// and CNI plugins: pod start, teardown, pods in parallel, exec latency,
// image pull, daemon memory with 0, 10 and 50 pods, and the per-pod host
// overhead of each runtime's helpers. test/bench/peer-containerd.sh installs
// containerd and runs it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criclient "k8s.io/cri-client/pkg"

	"github.com/crivm/crivm/test/bench"
	"github.com/crivm/crivm/test/fixtures"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
)

type runtimeUnderTest struct {
	name     string
	endpoint string
	rs       internalapi.RuntimeService
	is       internalapi.ImageManagerService
	// pid is the daemon's; helpers lists each pod's helper processes.
	pid     int
	helpers func() []int
}

func main() {
	n := flag.Int("n", 20, "serial iterations")
	par := flag.Int("parallel", 10, "pods started at once")
	pods := flag.String("memory-pods", "10,50", "pod counts for the memory measurement")
	flag.Parse()
	t := framework.NewMainTB()
	defer t.Close()
	ctx := context.Background()

	reg := framework.StartRegistry(t, registry.Options{})
	big, err := fixtures.Big(fixtures.DefaultCacheDir(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Push(big, "big", "latest"); err != nil {
		t.Fatal(err)
	}
	busybox, pause := reg.Ref("busybox", "latest"), reg.Ref("pause", "latest")

	d := framework.NewDaemon(t, framework.DaemonOptions{})
	d.TrustRegistry(reg.Host)
	d.UsePauseImage(pause)
	d.UseBridgeNetwork()
	d.Start(ctx, "--log-level", "info")
	crivm := connect(t, ctx, "crivm", d.Endpoint())
	crivm.pid = d.Pid()
	crivm.helpers = func() []int { return pgrep("conmon -b " + d.Dir) }

	cd := startContainerd(t, reg.Host, pause, fmt.Sprintf("crvpeer%d", time.Now().Unix()%10000), "10.237.0.0/24")
	peer := connect(t, ctx, "containerd", cd.endpoint())
	peer.pid = cd.cmd.Process.Pid
	peer.helpers = func() []int { return pgrep("containerd-shim-runc-v2 .*-address " + cd.sock) }

	both := []*runtimeUnderTest{crivm, peer}
	for _, r := range both {
		for _, img := range []string{busybox, pause} {
			if _, err := r.is.PullImage(ctx, &runtimeapi.ImageSpec{Image: img}, nil, nil); err != nil {
				t.Fatalf("%s: pulling %s: %v", r.name, img, err)
			}
		}
	}

	// 1. Pod workloads, one runtime after the other.
	results := map[string]bench.Result{}
	for _, r := range both {
		p := &bench.Pods{RS: r.rs, Image: busybox, LogDir: t.TempDir(), Prefix: "peer-" + r.name}
		res, err := p.Run(ctx, *n, *par)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		results[r.name] = res
	}
	a, b := results["crivm"], results["containerd"]
	fmt.Printf("\n%-28s %-60s %-60s %s\n", "metric", "crivm", "containerd", "crivm/containerd (median)")
	row := func(name string, x, y bench.Summary) {
		fmt.Printf("%-28s %-60s %-60s %s\n", name, x, y, bench.Ratio(x.Median, y.Median))
	}
	row("pod start (serial)", a.Serial, b.Serial)
	row("teardown", a.Teardown, b.Teardown)
	row(fmt.Sprintf("pod start (%d at once)", *par), a.Parallel, b.Parallel)
	fmt.Printf("%-28s %-60v %-60v %s\n", fmt.Sprintf("%d at once, wall", *par), a.ParallelWall.Round(time.Millisecond), b.ParallelWall.Round(time.Millisecond), bench.Ratio(a.ParallelWall, b.ParallelWall))
	row("exec sync true", a.Exec, b.Exec)

	// 2. Image pull + unpack of the 100 MiB image, cold, 3 times each.
	ref := reg.Ref("big", "latest")
	pulls := map[string][]time.Duration{}
	for i := 0; i < 3; i++ {
		for _, r := range both {
			r.is.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: ref})
			start := time.Now()
			if _, err := r.is.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil); err != nil {
				t.Fatalf("%s: pulling %s: %v", r.name, ref, err)
			}
			pulls[r.name] = append(pulls[r.name], time.Since(start))
		}
	}
	row("image pull 100 MiB", bench.Summarize(pulls["crivm"]), bench.Summarize(pulls["containerd"]))

	// 3. Memory: daemon RSS idle and with pods; helper PSS per pod.
	fmt.Printf("\nmemory (RSS of the daemon; PSS of per-pod helpers: conmon+pause for crivm, shim+pause for containerd)\n")
	counts := []int{0}
	for _, f := range strings.Split(*pods, ",") {
		if k, err := strconv.Atoi(f); err == nil {
			counts = append(counts, k)
		}
	}
	for _, r := range both {
		p := &bench.Pods{RS: r.rs, Image: busybox, LogDir: t.TempDir(), Prefix: "mem-" + r.name}
		var running []bench.Started
		for _, k := range counts {
			for len(running) < k {
				s, _, err := p.Start(ctx)
				if err != nil {
					t.Fatalf("%s: %v", r.name, err)
				}
				running = append(running, s)
			}
			time.Sleep(2 * time.Second)
			status := filepath.Join("/proc", strconv.Itoa(r.pid), "status")
			line := fmt.Sprintf("  %-11s %3d pods: daemon RSS %6.1f MB (anon %5.1f, file %5.1f)", r.name, k, float64(rss(r.pid))/1e6,
				float64(procKB(status, "RssAnon:"))*1024/1e6, float64(procKB(status, "RssFile:"))*1024/1e6)
			if k > 0 {
				helpers, pauses := r.helpers(), 0
				var pss int64
				for _, h := range helpers {
					pss += pssOf(h)
					for _, c := range children(h) {
						if comm(c) == "pause" {
							pss += pssOf(c)
							pauses++
						}
					}
				}
				line += fmt.Sprintf("   helpers %d, pause %d, helper+pause PSS per pod %5.2f MB", len(helpers), pauses, float64(pss)/float64(k)/1e6)
			}
			fmt.Println(line)
		}
		for _, s := range running {
			p.Teardown(ctx, s)
		}
	}
}

func connect(t *framework.MainTB, ctx context.Context, name, ep string) *runtimeUnderTest {
	rs, err := criclient.NewRemoteRuntimeServiceBuilder().WithEndpoint(ep).WithConnectionTimeout(30 * time.Second).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		t.Fatalf("connecting to %s: %v", ep, err)
	}
	is, err := criclient.NewRemoteImageServiceBuilder().WithEndpoint(ep).WithConnectionTimeout(30 * time.Second).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		t.Fatalf("connecting to %s: %v", ep, err)
	}
	return &runtimeUnderTest{name: name, endpoint: ep, rs: rs, is: is}
}

func pgrep(pattern string) []int {
	out, _ := exec.Command("pgrep", "-f", pattern).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

func children(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// rss and pssOf read /proc in bytes.
func rss(pid int) int64 {
	return procKB(filepath.Join("/proc", strconv.Itoa(pid), "status"), "VmRSS:") * 1024
}
func pssOf(pid int) int64 {
	return procKB(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"), "Pss:") * 1024
}

func procKB(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), key) {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 {
				n, _ := strconv.ParseInt(fields[1], 10, 64)
				return n
			}
		}
	}
	return 0
}
