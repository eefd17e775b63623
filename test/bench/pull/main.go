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
	"strings"
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
	var phases []pullPhases
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
		if ph, err := parsePull(d.Log()); err == nil {
			phases = append(phases, ph)
		} else {
			fmt.Fprintln(os.Stderr, "pull breakdown:", err)
		}
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
	printPhases(phases)
	return nil
}

// pullPhases is where one crivm pull went, from the daemon's log: the
// blobs' transfers (download, decompressed and digested as they stream
// into containers/storage's pending files; a layer is applied as soon as
// it and the ones below it are in, beside the transfers of the next), and
// the tail after the last blob (applying what is left, committing the
// image's metadata).
type pullPhases struct {
	blobs            int
	sumBlobs, window time.Duration // the blobs' durations added up; first start to last done
	tail             time.Duration // last blob done to "pulled image"
}

// parsePull reads the last pull in a daemon's log.
func parsePull(log string) (pullPhases, error) {
	var ph pullPhases
	var first, last, end time.Time
	for _, l := range strings.Split(log, "\n") {
		at, err := time.Parse(time.RFC3339Nano, bench.LogField(l, "time"))
		if err != nil {
			continue
		}
		switch bench.LogField(l, "msg") {
		case "pulling blob":
			if first.IsZero() {
				first = at
			}
		case "pulled blob":
			d, err := time.ParseDuration(bench.LogField(l, "duration"))
			if err != nil {
				return ph, err
			}
			ph.blobs++
			ph.sumBlobs += d
			last = at
		case "pulled image":
			end = at
		}
	}
	if first.IsZero() || last.IsZero() || end.IsZero() {
		return ph, fmt.Errorf("no complete pull in the daemon log")
	}
	ph.window, ph.tail = last.Sub(first), end.Sub(last)
	return ph, nil
}

func printPhases(phases []pullPhases) {
	if len(phases) == 0 {
		return
	}
	var sum, window, tail []time.Duration
	for _, ph := range phases {
		sum, window, tail = append(sum, ph.sumBlobs), append(window, ph.window), append(tail, ph.tail)
	}
	fmt.Printf("where a crivm pull goes (%d blobs, from the daemon log):\n", phases[0].blobs)
	fmt.Printf("  blob transfers, first start to last done  %s\n", bench.Summarize(window))
	fmt.Printf("  the blobs' transfer times added up         %s\n", bench.Summarize(sum))
	fmt.Printf("  after the last blob (last layers applied, image committed)  %s\n", bench.Summarize(tail))
}
