// Command vmbench measures VM pods under the machine's accelerator: pod
// start (RunPodSandbox through a running container, image cached) against
// the bare-QEMU floor (the same kernel and agent initrd booted with vmm,
// from QEMU start until the guest agent answers), in the same run; the
// host memory (PSS) of each VM pod's QEMU; and pods started in parallel;
// for each VM factory (vm_factory none, template and pool), one handler
// each, and a pool of template clones. Each pool holds -parallel VMs, and
// every measurement starts with them full: their refills never run beside
// another measurement.
//
//	go run -tags "containers_image_openpgp exclude_graphdriver_btrfs" ./test/bench/vmbench -n 5 -parallel 10
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/test/bench"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
	"github.com/crivm/crivm/vmm"
	"github.com/crivm/crivm/vmm/assets"
)

func main() {
	n := flag.Int("n", 5, "serial iterations of each measurement")
	par := flag.Int("parallel", 10, "VM pods started at once (and running when PSS is read)")
	sharedFS := flag.String("shared-fs", "9p", "shared_fs of the vm handlers: 9p or virtio-fs")
	only := flag.String("handlers", "", "comma-separated handlers to measure (vm, vm-template, vm-template-tb32, vm-pool, vm-template-pool); empty: all")
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
	// One handler per factory, in one daemon: vm boots each VM, vm-template
	// clones a template, vm-template-tb32 too with half the translation
	// cache (under TCG), vm-pool keeps booted VMs ready, and
	// vm-template-pool keeps clones ready (with the smaller cache).
	type factory struct {
		handler, factory string
		// keys is the handler's configuration beyond runtime_type and
		// shared_fs.
		keys string
	}
	factories := []factory{
		{"vm", "none", ""},
		{"vm-template", "template", `vm_factory = "template"`},
		{"vm-template-tb32", "template, tcg_cache_mib 32", "vm_factory = \"template\"\ntcg_cache_mib = 32"},
		{"vm-pool", fmt.Sprintf("pool, vm_pool_size %d", *par), fmt.Sprintf("vm_factory = \"pool\"\nvm_pool_size = %d", *par)},
		{"vm-template-pool", fmt.Sprintf("template, tcg_cache_mib 32, vm_pool_size %d", *par), fmt.Sprintf("vm_factory = \"template\"\ntcg_cache_mib = 32\nvm_pool_size = %d", *par)},
	}
	if *only != "" {
		want := strings.Split(*only, ",")
		factories = slices.DeleteFunc(factories, func(f factory) bool { return !slices.Contains(want, f.handler) })
	}
	// Only the measured handlers are configured: an idle pool would
	// still boot its VMs beside the measurements.
	conf := ""
	var pooling []string
	for _, f := range factories {
		conf += fmt.Sprintf("[crivm.runtime.runtimes.%s]\nruntime_type = \"vm\"\nshared_fs = %q\n%s\n", f.handler, *sharedFS, f.keys)
		if strings.Contains(f.keys, "vm_pool_size") {
			pooling = append(pooling, f.handler)
		}
	}
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
	// poolFull waits until each pool has made as many VMs as pods took
	// from it, plus its size: it is full again.
	poolFull := func() {
		for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			// Per handler: VMs made minus VMs taken, from one read of
			// the log.
			waiting := map[string]int{}
			for _, line := range strings.Split(d.Log(), "\n") {
				n := 0
				switch {
				case strings.Contains(line, `msg="pooled VM ready"`):
					n = 1
				case strings.Contains(line, `msg="VM taken from the pool"`):
					n = -1
				default:
					continue
				}
				for _, f := range strings.Fields(line) {
					if h, ok := strings.CutPrefix(f, "handler="); ok {
						waiting[h] += n
					}
				}
			}
			full := true
			for _, l := range pooling {
				full = full && waiting[l] >= *par
			}
			if full {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the pools did not refill")
			}
		}
	}
	pods := map[string]*bench.Pods{}
	var accel, podRelease string
	for _, f := range factories {
		p := &bench.Pods{RS: rs, Image: img, RuntimeHandler: f.handler, LogDir: t.TempDir(), Prefix: "vmbench-" + f.handler}
		pods[f.handler] = p
		poolFull()
		// 1. The first pod of each handler builds the guest assets (and
		//    the template); it is not measured.
		s, _, err := p.Start(ctx)
		if err != nil {
			t.Fatal(err)
		}
		info := sandboxInfo(t, ctx, rs, s.Sandbox)
		accel, podRelease = info.Extra["accel"], info.Extra["guest_kernel"]
		fmt.Printf("handler %s (vm_factory %s): VMs run under %s, files shared over %s, first pod's VM: %s\n", f.handler, f.factory, accel, info.Extra["shared_fs"], info.Extra["vm_source"])
		p.Teardown(ctx, s)
	}
	assetDir := filepath.Join(d.Root, "vm-assets")
	vmlinux := newest(t, filepath.Join(assetDir, "vmlinux-*"))
	initrd := newest(t, filepath.Join(assetDir, "initrd-*"))
	// The floor of the distro's kernel too, when the pods boot crivm's:
	// what a VM cost before crivm had its own kernel.
	distro := distroAssets(t, ctx, podRelease)

	// 2. Floor and pod starts, interleaved so all see the same load.
	logFrom := len(d.Log())
	var floor, distroFloor []time.Duration
	start := map[string][]time.Duration{}
	teardown := map[string][]time.Duration{}
	for i := 0; i < *n; i++ {
		poolFull()
		floor = append(floor, bareBoot(t, ctx, accel, vmlinux, initrd))
		if distro != nil {
			distroFloor = append(distroFloor, bareBoot(t, ctx, accel, distro.Vmlinux, distro.Initrd))
		}
		for _, f := range factories {
			poolFull()
			s, dur, err := pods[f.handler].Start(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"vm-template": "clone", "vm-template-tb32": "clone", "vm-pool": "pool", "vm-template-pool": "pool"}[f.handler]
			if src := sandboxInfo(t, ctx, rs, s.Sandbox).Extra["vm_source"]; want != "" && src != want {
				t.Fatalf("a pod of %s has vm_source %s, want %s", f.handler, src, want)
			}

			start[f.handler] = append(start[f.handler], dur)
			td, err := pods[f.handler].Teardown(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			teardown[f.handler] = append(teardown[f.handler], td)
		}
	}
	fl := bench.Summarize(floor)
	fmt.Printf("\nbare QEMU floor (start → agent answers)   %s\n", fl)
	var dfl bench.Summary
	if distro != nil {
		dfl = bench.Summarize(distroFloor)
		fmt.Printf("the same with the distro's kernel %s    %s\n", distro.Release, dfl)
	}
	for _, f := range factories {
		ps := bench.Summarize(start[f.handler])
		fmt.Printf("\nvm_factory %s (handler %s)\n", f.factory, f.handler)
		fmt.Printf("  VM pod start (→ container running)     %s\n", ps)
		fmt.Printf("  ratio pod start / floor (median)       %s\n", bench.Ratio(ps.Median, fl.Median))
		if distro != nil {
			fmt.Printf("  ratio to the distro kernel's floor     %s\n", bench.Ratio(ps.Median, dfl.Median))
		}
		fmt.Printf("  VM pod teardown                        %s\n", bench.Summarize(teardown[f.handler]))
	}
	if *breakdown {
		fmt.Println("\nwhere a pod start goes (daemon debug log, the serial starts of both handlers):")
		bench.PrintBreakdown(os.Stdout, d.Log()[logFrom:], "RunPodSandbox", "CreateContainer", "StartContainer")
	}

	// 3. Pods at once, and the memory of each with all of them running.
	for _, f := range factories {
		p := pods[f.handler]
		poolFull()
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
		if slices.Contains(pooling, f.handler) {
			// Their PSS is read with the pool full again: QEMU's code
			// (and a template's RAM) is shared with its VMs as a pool's
			// pods share it.
			poolFull()
		}
		fmt.Printf("\nvm_factory %s: %d VM pods at once         %s  wall %v\n", f.factory, *par, bench.Summarize(each), w.Round(time.Millisecond))
		time.Sleep(3 * time.Second)
		var sum int64
		var n int
		var parts bench.MemoryParts
		for _, s := range started {
			info := sandboxInfo(t, ctx, rs, s.Sandbox)
			kb := procKB(info.Process.Pid, "Pss:")
			if m, err := bench.VMMemory(info.Process.Pid, 256); err == nil {
				parts.GuestRAM += m.GuestRAM
				parts.TCGBuffer += m.TCGBuffer
				parts.Code += m.Code
				parts.OtherAnon += m.OtherAnon
			}
			// Host helpers count too: virtiofsd maps the guest's RAM.
			if pid, err := strconv.Atoi(info.Extra["virtiofsd_pid"]); err == nil {
				kb += procKB(pid, "Pss:")
			}
			sum += kb
			n++
		}
		if n > 0 {
			fmt.Printf("  host PSS per VM pod (QEMU + helpers), %d running: %.1f MB (256 MiB guests)\n", n, float64(sum)/float64(n)/1024)
			k := int64(n)
			fmt.Printf("  QEMU's PSS per pod by part: %s\n", bench.MemoryParts{GuestRAM: parts.GuestRAM / k, TCGBuffer: parts.TCGBuffer / k, Code: parts.Code / k, OtherAnon: parts.OtherAnon / k})
		}
		if strings.HasPrefix(f.factory, "template") {
			fmt.Printf("  template RAM the daemon holds (sealed memfds of every template, shared by their clones): %.1f MB\n", float64(templateRAMKB(d.Pid()))/1024)
		}
		for _, s := range started {
			p.Teardown(ctx, s)
		}
	}
}

// vmInfo is the verbose PodSandboxStatus info of a VM pod.
type vmInfo struct {
	Process struct{ Pid int } `json:"process"`
	Extra   map[string]string `json:"extra"`
}

func sandboxInfo(t *framework.MainTB, ctx context.Context, rs interface {
	PodSandboxStatus(context.Context, string, bool) (*runtimeapi.PodSandboxStatusResponse, error)
}, id string) vmInfo {
	st, err := rs.PodSandboxStatus(ctx, id, true)
	if err != nil {
		t.Fatal(err)
	}
	var info vmInfo
	json.Unmarshal([]byte(st.Info["info"]), &info)
	return info
}

// templateRAMKB is the memory the daemon's template memfds hold (their
// allocated pages), in KiB.
func templateRAMKB(pid int) int64 {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	var kb int64
	for _, fd := range fds {
		p := filepath.Join(dir, fd.Name())
		if l, _ := os.Readlink(p); !strings.Contains(l, "memfd:crivm-template-") {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			kb += st.Blocks / 2
		}
	}
	return kb
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

// distroAssets builds the distro kernel's vmlinux and initrd (its
// modules in it), or returns nil when there is none or the pods boot it
// (their kernel's release is podRelease).
func distroAssets(t *framework.MainTB, ctx context.Context, podRelease string) *assets.Guest {
	kernel, err := assets.FindHostKernel()
	if err != nil {
		return nil
	}
	rel, err := assets.KernelRelease(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if rel == podRelease {
		return nil
	}
	bin, err := framework.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	g, err := assets.ForKernel(ctx, kernel, assets.InitrdOptions{AgentBinary: filepath.Join(bin, "crivm-agent"), CacheDir: t.TempDir(), Modules: assets.BaseGuestModules})
	if err != nil {
		t.Fatal(err)
	}
	return &g
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
