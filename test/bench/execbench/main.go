// Command execbench measures a hosted crivm's ExecSync latency on a runc
// container against the floor of `runc exec` run straight from here
// (interleaved, so both see the same load), and its daemon's resident
// memory (VmRSS, as the peer bench reads it, with its anonymous and
// file-backed parts): with no pods after -idle, then after the workload
// the peer bench runs before its own idle reading (pods, the execs, and
// -big-pulls cold pulls of a -big MiB image), 2 s and -idle after it ends.
//
//	CRIVM_BIN_DIR=$PWD/bin go run -tags "containers_image_openpgp exclude_graphdriver_btrfs" ./test/bench/execbench -n 50
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/test/bench"
	"github.com/crivm/crivm/test/fixtures"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
)

func main() {
	n := flag.Int("n", 50, "ExecSync calls (and as many runc exec calls)")
	idle := flag.Duration("idle", 10*time.Second, "wait before reading the idle RSS")
	cmdFlag := flag.String("cmd", "true", "command to exec, space-separated")
	runc := flag.String("runc", "/usr/sbin/runc", "runc binary timed directly as the floor (empty: skip)")
	pods := flag.Int("pods", 10, "pods running during the execs, started at once; the execs go to the first")
	bigMiB := flag.Int("big", 100, "size of the image pulled after the execs (0: no pulls)")
	bigPulls := flag.Int("big-pulls", 3, "cold pulls of that image")
	level := flag.String("log-level", "info", "the daemon's log level")
	hold := flag.Duration("hold", 0, "keep the daemon this long at the end, to inspect it")
	flag.Parse()
	t := framework.NewMainTB()
	defer t.Close()
	ctx := context.Background()

	reg := framework.StartRegistry(t, registry.Options{})
	bigRef := ""
	if *bigMiB > 0 {
		big, err := fixtures.Big(fixtures.DefaultCacheDir(), *bigMiB)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Push(big, "big", "latest"); err != nil {
			t.Fatal(err)
		}
		bigRef = reg.Ref("big", "latest")
	}
	d := framework.NewDaemon(t, framework.DaemonOptions{})
	d.TrustRegistry(reg.Host)
	d.UsePauseImage(reg.Ref("pause", "latest"))
	d.UseBridgeNetwork()
	d.Start(ctx, "--log-level", *level)
	time.Sleep(*idle)
	fmt.Printf("daemon RSS, fresh, no pods, after %-8v %s\n", *idle, memory(d.Pid()))

	is := d.ImageService(ctx)
	rs := d.RuntimeService(ctx)
	img := reg.Ref("busybox", "latest")
	for _, ref := range []string{img, reg.Ref("pause", "latest")} {
		if _, err := is.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil); err != nil {
			t.Fatalf("pulling %s: %v", ref, err)
		}
	}
	p := &bench.Pods{RS: rs, Image: img, LogDir: t.TempDir(), Prefix: fmt.Sprintf("execbench-%d", time.Now().Unix())}
	started := make([]bench.Started, *pods)
	errs := make([]error, *pods)
	var wg sync.WaitGroup
	for i := range started {
		wg.Go(func() { started[i], _, errs[i] = p.Start(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	s := started[0]
	cmd := strings.Fields(*cmdFlag)
	// One call each first: the first exec of a container pays for cold
	// caches.
	state := filepath.Join(d.Runroot, "handlers", "runc", "state")
	pidFile := filepath.Join(t.TempDir(), "pid")
	runcExec := func() {
		args := append([]string{"--root", state, "exec", "--pid-file", pidFile, "--", s.Container}, cmd...)
		if out, err := exec.Command(*runc, args...).CombinedOutput(); err != nil {
			t.Fatalf("runc exec: %v: %s", err, out)
		}
	}
	if _, _, err := rs.ExecSync(ctx, s.Container, cmd, 10*time.Second); err != nil {
		t.Fatalf("ExecSync: %v", err)
	}
	if *runc != "" {
		runcExec()
	}
	var ds, floor []time.Duration
	for range *n {
		start := time.Now()
		if _, _, err := rs.ExecSync(ctx, s.Container, cmd, 10*time.Second); err != nil {
			t.Fatalf("ExecSync: %v", err)
		}
		ds = append(ds, time.Since(start))
		if *runc == "" {
			continue
		}
		start = time.Now()
		runcExec()
		floor = append(floor, time.Since(start))
	}
	fmt.Printf("exec sync %-31q %s\n", *cmdFlag, bench.Summarize(ds))
	if *runc != "" {
		fmt.Printf("runc exec (floor) %-23q %s\n", *cmdFlag, bench.Summarize(floor))
	}
	for _, s := range started {
		if _, err := p.Teardown(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for range *bigPulls {
		if bigRef == "" {
			break
		}
		is.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: bigRef})
		if _, err := is.PullImage(ctx, &runtimeapi.ImageSpec{Image: bigRef}, nil, nil); err != nil {
			t.Fatalf("pulling %s: %v", bigRef, err)
		}
	}
	time.Sleep(2 * time.Second)
	fmt.Printf("daemon RSS, after the workload, 2 s       %s\n", memory(d.Pid()))
	time.Sleep(*idle - 2*time.Second)
	fmt.Printf("daemon RSS, after the workload, %-9v %s\n", *idle, memory(d.Pid()))
	if *hold > 0 {
		fmt.Fprintf(os.Stderr, "daemon pid %d at %s, log %s, held for %v (SIGINT ends it)\n", d.Pid(), d.Endpoint(), d.LogPath, *hold)
		sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		select {
		case <-sig.Done():
		case <-time.After(*hold):
		}
		stop()
	}
}

// memory reads VmRSS, RssAnon and RssFile from /proc/PID/status.
func memory(pid int) string {
	st := procKB(filepath.Join("/proc", strconv.Itoa(pid), "status"), "VmRSS:", "RssAnon:", "RssFile:")
	mb := func(k string) float64 { return float64(st[k]) * 1024 / 1e6 }
	return fmt.Sprintf("VmRSS %5.1f MB (anon %4.1f, file %4.1f)", mb("VmRSS:"), mb("RssAnon:"), mb("RssFile:"))
}

func procKB(path string, keys ...string) map[string]int64 {
	out := map[string]int64{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		for _, k := range keys {
			if fields[0] == k {
				out[k], _ = strconv.ParseInt(fields[1], 10, 64)
			}
		}
	}
	return out
}
