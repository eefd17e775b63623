package framework

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/crivm/crivm/test/fixtures"
	"github.com/crivm/crivm/test/registry"
)

// Registry is a real docker-registry on loopback with the fixture images
// pushed under their names with tag "latest".
type Registry struct {
	*registry.Registry
	Images  map[string]fixtures.Image
	Digests map[string]string // fixture name -> manifest digest
}

// StartRegistry builds the fixtures (cached across runs), starts a registry
// and pushes them all.
func StartRegistry(t testing.TB, opts registry.Options) *Registry {
	t.Helper()
	imgs, err := fixtures.BuildAll(fixtures.DefaultCacheDir())
	if err != nil {
		t.Fatalf("building fixtures: %v", err)
	}
	r := registry.Start(t, opts)
	return &Registry{Registry: r, Images: imgs, Digests: r.PushAll(t, imgs)}
}

// TrustRegistry writes a drop-in that makes the daemon reach host over
// plain http.
func (d *Daemon) TrustRegistry(host string) {
	d.t.Helper()
	conf := fmt.Sprintf("[crivm.image]\ninsecure_registries = [%q]\n", host)
	if err := os.WriteFile(filepath.Join(d.DropIn, "05-registry.conf"), []byte(conf), 0o644); err != nil {
		d.t.Fatal(err)
	}
}
