package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/handlers/runc"
	"github.com/crivm/crivm/handlers/vm"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/metrics"
	"github.com/crivm/crivm/oci"
)

// buildHandlers makes one implementation per configured handler. A handler
// whose binaries are missing stays in the registry without an
// implementation, so its pods get FailedPrecondition naming the reason.
func buildHandlers(ctx context.Context, cfg *configs.Config, m *metrics.Metrics) (handlers.Registry, error) {
	host, err := probeHost(cfg)
	if err != nil {
		return nil, err
	}
	reg := handlers.Registry{}
	for _, name := range cfg.HandlerNames() {
		h := cfg.Runtime.Runtimes[name]
		e := &handlers.Entry{Name: name, Type: h.RuntimeType}
		switch h.RuntimeType {
		case configs.RuntimeTypeOCI:
			impl, err := runc.New(runc.Options{Name: name, RuntimePath: h.RuntimePath, MonitorPath: h.MonitorPath,
				Dir: cfg.HandlerDir(name), Host: host, DropInfra: cfg.Runtime.DropInfraCtr})
			if err != nil {
				e.Unavailable = err
				log.G(ctx).Warn("handler not available", "handler", name, "err", err)
			} else {
				e.Handler = impl
			}
		case configs.RuntimeTypeVM:
			impl, err := vm.New(vm.Options{Name: name, Config: h, Dir: cfg.HandlerDir(name),
				CacheDir: filepath.Join(cfg.Root, "vm-assets"), Metrics: m,
				SeccompUseDefaultWhenEmpty: cfg.Runtime.SeccompUseDefaultWhenEmpty, CgroupDriver: cfg.Runtime.CgroupManager})
			if err != nil {
				e.Unavailable = err
				log.G(ctx).Warn("handler not available", "handler", name, "err", err)
			} else {
				e.Handler = impl
			}
		}
		reg[name] = e
	}
	return reg, nil
}

func probeHost(cfg *configs.Config) (oci.Host, error) {
	cg, err := oci.ProbeCgroups()
	if err != nil {
		return oci.Host{}, err
	}
	floor, err := oci.OOMScoreAdjFloor()
	if err != nil {
		return oci.Host{}, fmt.Errorf("reading the oom_score_adj floor: %w", err)
	}
	caps, err := oci.RuntimeCapabilities()
	if err != nil {
		return oci.Host{}, fmt.Errorf("reading the daemon's capabilities: %w", err)
	}
	aa, _ := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return oci.Host{
		CgroupDriver:      cfg.Runtime.CgroupManager,
		Cgroups:           cg,
		DaemonOOMScoreAdj: floor,
		Capabilities:      caps,
		HostHasAppArmor:   strings.TrimSpace(string(aa)) == "Y",

		SeccompUseDefaultWhenEmpty: cfg.Runtime.SeccompUseDefaultWhenEmpty,
	}, nil
}
