// Package image pulls, lists, inspects and removes images in
// containers/storage (overlay by default), over go.podman.io/image and
// go.podman.io/storage. It also gives handlers a container's writable
// rootfs. Build with the tags containers_image_openpgp
// exclude_graphdriver_btrfs (the Makefile's TAGS add two that only make
// the binary smaller).
package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"

	"github.com/crivm/crivm/internal/metrics"
)

// Options configure a Service.
type Options struct {
	// Root and Runroot hold the storage (persistent) and its run state.
	Root, Runroot string
	// Driver is "overlay" or "vfs".
	Driver string
	// InsecureRegistries are reached over plain http or unverified TLS.
	InsecureRegistries []string
	// SearchRegistries resolve short names, in order. Empty: docker.io.
	SearchRegistries []string
	// Mirrors maps a registry to mirrors tried before it.
	Mirrors map[string][]string
	// PinnedImages are reported as pinned (the pause image).
	PinnedImages []string
	// Metrics records pulls; nil records nothing.
	Metrics *metrics.Metrics
}

// Service is the image store. Safe for concurrent use.
type Service struct {
	store storage.Store
	opts  Options
	// sys is the base SystemContext; pulls copy it and add credentials.
	sys types.SystemContext

	pulls   pullGroup
	tracker pullTracker

	// mu guards info, the per-image-ID cache of what ListImages reports.
	// Image IDs are content addresses, so an entry never goes stale; it is
	// dropped when the image is deleted.
	mu   sync.Mutex
	info map[string]*imageInfo
}

// New opens (creating if needed) the storage under opts.Root.
func New(ctx context.Context, opts Options) (*Service, error) {
	if opts.Driver == "" {
		opts.Driver = "overlay"
	}
	store, err := storage.GetStore(storage.StoreOptions{
		GraphRoot:       opts.Root,
		RunRoot:         opts.Runroot,
		GraphDriverName: opts.Driver,
	})
	if err != nil {
		return nil, fmt.Errorf("opening %s storage at %s: %w", opts.Driver, opts.Root, err)
	}
	s := &Service{store: store, opts: opts, info: map[string]*imageInfo{}}
	if err := s.writeRegistriesConf(); err != nil {
		store.Shutdown(false)
		return nil, err
	}
	return s, nil
}

// Store is the underlying containers/storage store, for handlers that
// create container layers.
func (s *Service) Store() storage.Store { return s.store }

// Close shuts the storage down. Mounted container layers stay mounted:
// their containers keep running while the daemon is away, and storage says
// so with ErrLayerUsedByContainer, which is expected here.
func (s *Service) Close() error {
	_, err := s.store.Shutdown(false)
	if errors.Is(err, storage.ErrLayerUsedByContainer) {
		return nil
	}
	return err
}

// writeRegistriesConf renders mirrors and insecure registries as a
// registries.conf (v2) private to this daemon, so that nothing under
// /etc/containers changes what crivm pulls.
func (s *Service) writeRegistriesConf() error {
	type mirror struct {
		Location string `toml:"location"`
		Insecure bool   `toml:"insecure"`
	}
	type registry struct {
		Prefix   string   `toml:"prefix"`
		Location string   `toml:"location"`
		Insecure bool     `toml:"insecure"`
		Mirrors  []mirror `toml:"mirror,omitempty"`
	}
	conf := struct {
		Search     []string   `toml:"unqualified-search-registries"`
		Registries []registry `toml:"registry"`
	}{Search: s.opts.SearchRegistries}
	if conf.Search == nil {
		conf.Search = []string{}
	}
	hosts := slices.Clone(s.opts.InsecureRegistries)
	for r := range s.opts.Mirrors {
		hosts = append(hosts, r)
	}
	sort.Strings(hosts)
	hosts = slices.Compact(hosts)
	for _, h := range hosts {
		r := registry{Prefix: h, Location: h, Insecure: s.insecure(h)}
		for _, m := range s.opts.Mirrors[h] {
			r.Mirrors = append(r.Mirrors, mirror{Location: m, Insecure: s.insecure(m)})
		}
		conf.Registries = append(conf.Registries, r)
	}
	dir := filepath.Join(s.opts.Runroot, "registries")
	if err := os.MkdirAll(filepath.Join(dir, "registries.conf.d"), 0o700); err != nil {
		return fmt.Errorf("creating registries dir: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "registries.conf"))
	if err != nil {
		return fmt.Errorf("writing registries.conf: %w", err)
	}
	defer f.Close()
	if err := toml.NewEncoder(f).Encode(conf); err != nil {
		return fmt.Errorf("writing registries.conf: %w", err)
	}
	s.sys = types.SystemContext{
		SystemRegistriesConfPath:    filepath.Join(dir, "registries.conf"),
		SystemRegistriesConfDirPath: filepath.Join(dir, "registries.conf.d"),
		// Only the kubelet's credentials count: no ambient auth files.
		AuthFilePath:         filepath.Join(dir, "no-auth.json"),
		RegistriesDirPath:    filepath.Join(dir, "registries.d"),
		SignaturePolicyPath:  os.DevNull,
		BigFilesTemporaryDir: filepath.Join(s.opts.Root, "tmp"),
	}
	return os.MkdirAll(s.sys.BigFilesTemporaryDir, 0o700)
}

func (s *Service) insecure(host string) bool {
	return slices.ContainsFunc(s.opts.InsecureRegistries, func(h string) bool {
		return h == host || strings.HasPrefix(host, h+"/")
	})
}
