// Command seed loads the test fixture images (busybox and pause, built in Go
// from busybox-static and the repo's pause program) into crivm's storage
// under the names the default config and the demo use. The demo machine has
// no route to registry.k8s.io or docker.io, so it is seeded the way an
// air-gapped node is: with skopeo, from local OCI layouts.
//
//	seed -root /var/lib/crivm -runroot /run/crivm
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/crivm/crivm/test/fixtures"
)

func main() {
	root := flag.String("root", "/var/lib/crivm", "crivm root")
	runroot := flag.String("runroot", "/run/crivm", "crivm runroot")
	pause := flag.String("pause", "registry.k8s.io/pause:3.10", "name for the pause image")
	busybox := flag.String("busybox", "docker.io/library/busybox:latest", "name for the busybox image")
	flag.Parse()
	imgs, err := fixtures.BuildAll(fixtures.DefaultCacheDir())
	if err != nil {
		fmt.Fprintln(os.Stderr, "seed: building fixtures:", err)
		os.Exit(1)
	}
	store := fmt.Sprintf("containers-storage:[overlay@%s+%s]", filepath.Join(*root, "storage"), filepath.Join(*runroot, "storage"))
	for _, s := range []struct{ fixture, name string }{{fixtures.NamePause, *pause}, {fixtures.NameBusybox, *busybox}} {
		img := imgs[s.fixture]
		out, err := exec.Command("skopeo", "copy", "--quiet", img.OCIRef(), store+s.name).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "seed: copying %s: %v\n%s", s.name, err, out)
			os.Exit(1)
		}
		fmt.Printf("seeded %s (%s)\n", s.name, img.ManifestDigest)
	}
}
