// Command podbench measures pod start (RunPodSandbox through a running
// container, image cached), teardown, N pods started at once, and ExecSync
// latency, through k8s.io/cri-client against any CRI endpoint. Without
// --endpoint it hosts its own crivm (real daemon, loopback registry with the
// fixture images, a private CNI bridge) and measures that.
//
//	go run -tags "containers_image_openpgp exclude_graphdriver_btrfs" ./test/bench/podbench -n 20 -parallel 10
//	podbench --endpoint unix:///run/crivm/crivm.sock --image docker.io/library/busybox:latest
//	podbench --endpoint A --peer-endpoint B ...  (prints the ratio A/B per metric)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criclient "k8s.io/cri-client/pkg"

	"github.com/crivm/crivm/test/bench"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
)

var (
	steps  = flag.Bool("steps", false, "with a hosted crivm, print the median time of each start-up step")
	hosted *framework.Daemon
)

func main() {
	endpoint := flag.String("endpoint", "", "CRI endpoint to measure (empty: host a private crivm)")
	peer := flag.String("peer-endpoint", "", "a second endpoint, measured the same way, for ratios")
	image := flag.String("image", "", "container image, pulled before measuring (with --endpoint)")
	peerImage := flag.String("peer-image", "", "image on the peer (default --image)")
	handler := flag.String("runtime-handler", "", "RuntimeClass handler")
	n := flag.Int("n", 20, "serial iterations (and ExecSync calls)")
	par := flag.Int("parallel", 10, "pods started at once")
	flag.Parse()
	t := framework.NewMainTB()
	defer t.Close()
	// Runs before t.Close removes the daemon's dir.
	defer func() {
		if *steps && hosted != nil {
			printSteps(hosted.Log())
		}
	}()
	ctx := context.Background()

	var targets []target
	if *endpoint == "" {
		targets = append(targets, hostCrivm(t, ctx))
	} else {
		targets = append(targets, target{name: *endpoint, rs: connect(t, ctx, *endpoint), image: *image})
	}
	if *peer != "" {
		img := *peerImage
		if img == "" {
			img = *image
		}
		targets = append(targets, target{name: *peer, rs: connect(t, ctx, *peer), image: img})
	}
	var results []bench.Result
	for i, tg := range targets {
		if *endpoint != "" || i > 0 {
			pull(t, ctx, tg.name, tg.image)
		}
		p := &bench.Pods{RS: tg.rs, Image: tg.image, RuntimeHandler: *handler, LogDir: t.TempDir(),
			Prefix: fmt.Sprintf("bench%d-%d", i, time.Now().Unix())}
		r, err := p.Run(ctx, *n, *par)
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		results = append(results, r)
		fmt.Printf("\n%s\n", tg.name)
		fmt.Printf("  pod start (serial)      %s\n", r.Serial)
		fmt.Printf("  teardown                %s\n", r.Teardown)
		fmt.Printf("  pod start (%d at once)  %s  wall %v\n", *par, r.Parallel, r.ParallelWall.Round(time.Millisecond))
		fmt.Printf("  exec sync true          %s\n", r.Exec)
	}
	if len(results) == 2 {
		a, b := results[0], results[1]
		fmt.Printf("\nratio %s / %s (median)\n", targets[0].name, targets[1].name)
		fmt.Printf("  pod start   %s\n  teardown    %s\n  parallel    %s (wall %s)\n  exec        %s\n",
			bench.Ratio(a.Serial.Median, b.Serial.Median), bench.Ratio(a.Teardown.Median, b.Teardown.Median),
			bench.Ratio(a.Parallel.Median, b.Parallel.Median), bench.Ratio(a.ParallelWall, b.ParallelWall),
			bench.Ratio(a.Exec.Median, b.Exec.Median))
	}
}

type target struct {
	name  string
	rs    internalapi.RuntimeService
	image string
}

func connect(t *framework.MainTB, ctx context.Context, ep string) internalapi.RuntimeService {
	rs, err := criclient.NewRemoteRuntimeServiceBuilder().WithEndpoint(ep).WithConnectionTimeout(10 * time.Second).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		t.Fatalf("connecting to %s: %v", ep, err)
	}
	return rs
}

func pull(t *framework.MainTB, ctx context.Context, ep, image string) {
	is, err := criclient.NewRemoteImageServiceBuilder().WithEndpoint(ep).WithConnectionTimeout(10 * time.Second).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		t.Fatalf("connecting to %s: %v", ep, err)
	}
	if _, err := is.PullImage(ctx, &runtimeapi.ImageSpec{Image: image}, nil, nil); err != nil {
		t.Fatalf("pulling %s on %s: %v", image, ep, err)
	}
}

// hostCrivm starts a private crivm with the fixtures and a bridge network.
func hostCrivm(t *framework.MainTB, ctx context.Context) target {
	reg := framework.StartRegistry(t, registry.Options{})
	d := framework.NewDaemon(t, framework.DaemonOptions{Args: nil})
	d.TrustRegistry(reg.Host)
	d.UsePauseImage(reg.Ref("pause", "latest"))
	d.UseBridgeNetwork()
	level := "info"
	if *steps {
		level = "debug"
	}
	d.Start(ctx, "--log-level", level)
	hosted = d
	img := reg.Ref("busybox", "latest")
	pull(t, ctx, d.Endpoint(), img)
	// The pause image is pulled by the first pod; do it now so that every
	// measured start has the image cached.
	pull(t, ctx, d.Endpoint(), reg.Ref("pause", "latest"))
	fmt.Fprintf(os.Stderr, "hosting crivm at %s (registry %s)\n", d.Endpoint(), reg.Host)
	return target{name: "crivm (runc)", rs: d.RuntimeService(ctx), image: img}
}

// printSteps aggregates the daemon's debug "step" lines.
func printSteps(log string) {
	byStep := map[string][]time.Duration{}
	var order []string
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg=step `) {
			continue
		}
		name := bench.LogField(line, "step")
		d, err := time.ParseDuration(bench.LogField(line, "took"))
		if name == "" || err != nil {
			continue
		}
		if _, ok := byStep[name]; !ok {
			order = append(order, name)
		}
		byStep[name] = append(byStep[name], d)
	}
	fmt.Println("\nper step (all runs)")
	for _, n := range order {
		fmt.Printf("  %-28s %s\n", n, bench.Summarize(byStep[n]))
	}
}
