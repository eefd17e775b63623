// Command vmbench measures VM pods under the machine's accelerator: pod
// start (RunPodSandbox through a running container, image cached) against
// the bare-QEMU floor (the same kernel and agent initrd booted with vmm,
// from QEMU start until the guest agent answers), in the same run; the
// host memory (PSS) of each VM pod's QEMU; and pods started in parallel.
//
//	go run -tags "containers_image_openpgp exclude_graphdriver_btrfs" ./test/bench/vmbench -n 5 -parallel 5
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/test/bench"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
	"github.com/crivm/crivm/vmm"
)

func main() {
	n := flag.Int("n", 5, "serial iterations of each measurement")
	par := flag.Int("parallel", 5, "VM pods started at once")
	sharedFS := flag.String("shared-fs", "9p", "shared_fs of the vm handler: 9p or virtio-fs")
	breakdown := flag.Bool("breakdown", false, "run the daemon at debug level and print the median of each step of the measured pod starts")
	flag.Parse()
	t := framework.NewMainTB()
	defer t.Close()
	ctx := context.Background()

	reg := framework.StartRegistry(t, registry.Options{})
	d := framework.NewDaemon(t, framework.DaemonOptions{})
	d.TrustRegistry(reg.Host)
	d.UsePauseImage(reg.Ref("pause", "latest"))
	d.UseBridgeNetwork()
	conf := fmt.Sprintf("[crivm.runtime.runtimes.vm]\nshared_fs = %q\n", *sharedFS)
	if err := os.WriteFile(filepath.Join(d.DropIn, "30-bench.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	level := "info"
	if *breakdown {
		level = "debug"
	}
	d.Start(ctx, "--log-level", level)
	rs := d.RuntimeService(ctx)
	is := d.ImageService(ctx)
	img := reg.Ref("busybox", "latest")
	if _, err := is.PullImage(ctx, &runtimeapi.ImageSpec{Image: img}, nil, nil); err != nil {
		t.Fatal(err)
	}
	p := &bench.Pods{RS: rs, Image: img, RuntimeHandler: "vm", LogDir: t.TempDir(), Prefix: "vmbench"}

	// 1. The first VM pod builds the guest assets; it is not measured.
	s, _, err := p.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := rs.PodSandboxStatus(ctx, s.Sandbox, true)
	if err != nil {
		t.Fatal(err)
	}
	var first struct {
		Extra map[string]string `json:"extra"`
	}
	json.Unmarshal([]byte(st.Info["info"]), &first)
	accel := first.Extra["accel"]
	fmt.Printf("VMs run under %s, files shared over %s\n", accel, first.Extra["shared_fs"])
	p.Teardown(ctx, s)
	assets := filepath.Join(d.Root, "vm-assets")
	vmlinux := newest(t, filepath.Join(assets, "vmlinux-*"))
	initrd := newest(t, filepath.Join(assets, "initrd-*"))

	// 2. Floor and pod start, interleaved so both see the same load.
	logFrom := len(d.Log())
	var floor, pod, teardown []time.Duration
	for i := 0; i < *n; i++ {
		floor = append(floor, bareBoot(t, ctx, accel, vmlinux, initrd))
		s, dur, err := p.Start(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pod = append(pod, dur)
		td, err := p.Teardown(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		teardown = append(teardown, td)
	}
	f, ps, td := bench.Summarize(floor), bench.Summarize(pod), bench.Summarize(teardown)
	fmt.Printf("\nbare QEMU floor (start → agent answers)  %s\n", f)
	fmt.Printf("VM pod start (→ container running)        %s\n", ps)
	fmt.Printf("VM pod teardown                           %s\n", td)
	fmt.Printf("ratio pod start / floor (median)          %s\n", bench.Ratio(ps.Median, f.Median))
	if *breakdown {
		fmt.Println("\nwhere a pod start goes (daemon debug log, the serial starts):")
		bench.PrintBreakdown(os.Stdout, d.Log()[logFrom:], "RunPodSandbox", "CreateContainer", "StartContainer")
	}

	// 3. Pods at once, and the memory of each.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var started []bench.Started
	var each []time.Duration
	wall := time.Now()
	for i := 0; i < *par; i++ {
		wg.Go(func() {
			s, d, err := p.Start(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Fprintln(os.Stderr, "parallel start:", err)
				return
			}
			started = append(started, s)
			each = append(each, d)
		})
	}
	wg.Wait()
	w := time.Since(wall)
	fmt.Printf("%d VM pods at once                        %s  wall %v\n", *par, bench.Summarize(each), w.Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	var pss []int64
	for _, s := range started {
		st, err := rs.PodSandboxStatus(ctx, s.Sandbox, true)
		if err != nil {
			continue
		}
		var info struct {
			Process struct{ Pid int } `json:"process"`
			Extra   map[string]string `json:"extra"`
		}
		json.Unmarshal([]byte(st.Info["info"]), &info)
		kb := procKB(info.Process.Pid, "Pss:")
		// Host helpers count too: virtiofsd maps the guest's RAM.
		if pid, err := strconv.Atoi(info.Extra["virtiofsd_pid"]); err == nil {
			kb += procKB(pid, "Pss:")
		}
		pss = append(pss, kb)
	}
	var sum int64
	for _, v := range pss {
		sum += v
	}
	if len(pss) > 0 {
		fmt.Printf("host PSS per VM pod (QEMU + helpers), %d running  %.1f MB (256 MiB guests)\n", len(pss), float64(sum)/float64(len(pss))/1024)
	}
	for _, s := range started {
		p.Teardown(ctx, s)
	}
}

// bareBoot boots the assets with vmm alone and returns the time until the
// guest agent answers Health.
func bareBoot(t *framework.MainTB, ctx context.Context, accel, vmlinux, initrd string) time.Duration {
	dir := t.TempDir()
	start := time.Now()
	vm, err := vmm.Start(ctx, vmm.MachineConfig{QEMUPath: "/usr/bin/qemu-system-x86_64", Accel: accel, MemoryMiB: 256, Kernel: vmlinux, Initrd: initrd, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill(ctx)
	c, err := agentproxy.Connect(ctx, &agentproxy.SerialDialer{Path: vm.AgentSocket()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WaitHealthy(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

func newest(t *framework.MainTB, pattern string) string {
	m, _ := filepath.Glob(pattern)
	var best string
	var bestT time.Time
	for _, p := range m {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().After(bestT) && !strings.HasSuffix(p, ".tmp") {
			best, bestT = p, fi.ModTime()
		}
	}
	if best == "" {
		t.Fatalf("no %s", pattern)
	}
	return best
}

func procKB(pid int, key string) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), key) {
			if fields := strings.Fields(sc.Text()); len(fields) > 1 {
				n, _ := strconv.ParseInt(fields[1], 10, 64)
				return n
			}
		}
	}
	return 0
}
