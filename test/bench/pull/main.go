// Command pull measures image pull+unpack throughput: a ~100 MiB
// multi-layer image from a loopback registry into cold overlay storage,
// through crivm's PullImage (k8s.io/cri-client against the real daemon), and
// the same copy by `skopeo copy docker://… containers-storage:…` into a
// fresh store, in the same run. It prints both and their ratio.
//
//	go run -tags "containers_image_openpgp exclude_graphdriver_btrfs" ./test/bench/pull -n 5
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/test/bench"
	"github.com/crivm/crivm/test/fixtures"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
)

func main() {
	n := flag.Int("n", 5, "iterations per side")
	mib := flag.Int("mib", 100, "image size in MiB")
	flag.Parse()
	t := framework.NewMainTB()
	defer t.Close()
	if err := run(t, *n, *mib); err != nil {
		fmt.Fprintln(os.Stderr, "pull bench:", err)
		t.Close()
		os.Exit(1)
	}
}

func run(t *framework.MainTB, n, mib int) error {
	ctx := context.Background()
	big, err := fixtures.Big(fixtures.DefaultCacheDir(), mib)
	if err != nil {
		return err
	}
	reg := registry.Start(t, registry.Options{})
	if _, err := reg.Push(big, "big", "latest"); err != nil {
		return err
	}
	ref := reg.Ref("big", "latest")
	fmt.Printf("image %s: %d layers, %.1f MB compressed\n", ref, len(big.Layers), float64(big.Size)/1e6)

	var crivm, skopeo []time.Duration
	for i := 0; i < n; i++ {
		// crivm: a fresh daemon root each time, so storage is cold.
		d := framework.NewDaemon(t, framework.DaemonOptions{})
		d.TrustRegistry(reg.Host)
		d.Start(ctx)
		is := d.ImageService(ctx)
		start := time.Now()
		if _, err := is.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil); err != nil {
			return fmt.Errorf("crivm pull: %w", err)
		}
		crivm = append(crivm, time.Since(start))
		if err := d.Stop(15 * time.Second); err != nil {
			return err
		}

		dir, err := os.MkdirTemp("", "crivm-bench-skopeo-")
		if err != nil {
			return err
		}
		dest := fmt.Sprintf("containers-storage:[overlay@%s+%s]big:latest", filepath.Join(dir, "root"), filepath.Join(dir, "run"))
		start = time.Now()
		out, err := exec.Command("skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://"+ref, dest).CombinedOutput()
		skopeo = append(skopeo, time.Since(start))
		exec.Command("umount", "-R", filepath.Join(dir, "root", "overlay")).Run()
		os.RemoveAll(dir)
		if err != nil {
			return fmt.Errorf("skopeo copy: %v: %s", err, out)
		}
	}
	mb := float64(big.Size) / 1e6
	c, s := bench.Summarize(crivm), bench.Summarize(skopeo)
	fmt.Printf("crivm PullImage   %s  %.0f MB/s at median\n", c, mb/c.Median.Seconds())
	fmt.Printf("skopeo copy       %s  %.0f MB/s at median\n", s, mb/s.Median.Seconds())
	fmt.Printf("ratio crivm/skopeo (median time): %s\n", bench.Ratio(c.Median, s.Median))
	return nil
}
