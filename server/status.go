package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/handlers"
)

// Status reports RuntimeReady and NetworkReady from real checks: the default
// handler's binaries are executable, and a CNI config whose plugins exist is
// in network_dir. Verbose info carries the effective config as JSON.
func (s *RuntimeService) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	cfg := s.deps.Config()
	runtimeCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	if err := checkHandlerBinaries(cfg, cfg.Runtime.DefaultRuntime); err != nil {
		runtimeCond.Status = false
		runtimeCond.Reason = "RuntimeBinaryMissing"
		runtimeCond.Message = err.Error()
	}
	netCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if err := checkCNI(cfg.Network); err != nil {
		netCond.Status = false
		netCond.Reason = "NetworkPluginNotReady"
		netCond.Message = err.Error()
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{runtimeCond, netCond}},
		// Both handlers apply SupplementalGroupsPolicy (oci/user.go) and
		// ContainerStatus reports the user the spec starts with.
		Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true},
	}
	resp.RuntimeHandlers = runtimeHandlers(cfg, s.deps.Handlers)
	if req.GetVerbose() {
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, fmt.Errorf("encoding config: %w", err)
		}
		resp.Info = map[string]string{"config": string(b)}
		var rc struct {
			PodCIDR string `json:"podCIDR"`
		}
		if p := s.podCIDR.Load(); p != nil {
			rc.PodCIDR = *p
		}
		if b, err := json.Marshal(rc); err == nil {
			resp.Info["runtimeConfig"] = string(b)
		}
		if s.deps.Registry != nil {
			m, err := metricValues(s.deps.Registry)
			if err != nil {
				return nil, err
			}
			resp.Info["metrics"] = m
		}
	}
	return resp, nil
}

// runtimeHandlers lists the handler names a pod may ask for, with their
// features: first the default handler under the empty name, which the
// kubelet uses for pods without a RuntimeClass (it logs "Unknown runtime
// handler" for a name missing here), then each configured handler and its
// aliases, in name order.
func runtimeHandlers(cfg *configs.Config, reg handlers.Registry) []*runtimeapi.RuntimeHandler {
	out := []*runtimeapi.RuntimeHandler{{Name: "", Features: handlerFeatures(reg, cfg.Runtime.DefaultRuntime)}}
	for _, name := range cfg.HandlerNames() {
		out = append(out, &runtimeapi.RuntimeHandler{Name: name, Features: handlerFeatures(reg, name)})
		for _, alias := range cfg.Runtime.Runtimes[name].Aliases {
			out = append(out, &runtimeapi.RuntimeHandler{Name: alias, Features: handlerFeatures(reg, name)})
		}
	}
	return out
}

// handlerFeatures are what the handler configured as name reports it
// supports of the features the kubelet asks about.
func handlerFeatures(reg handlers.Registry, name string) *runtimeapi.RuntimeHandlerFeatures {
	e, err := reg.Get(name)
	if err != nil {
		return &runtimeapi.RuntimeHandlerFeatures{} // unavailable: offers nothing
	}
	f := e.Features()
	return &runtimeapi.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: f.RecursiveReadOnlyMounts, UserNamespaces: f.UserNamespaces}
}

// metricValues renders counters and gauges as a JSON object of
// "name{label=value,...}": value.
func metricValues(g prometheus.Gatherer) (string, error) {
	fams, err := g.Gather()
	if err != nil {
		return "", fmt.Errorf("gathering metrics: %w", err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// handlerBinaries lists the executables a handler cannot run without.
func handlerBinaries(h *configs.RuntimeHandler) []string {
	if h.RuntimeType == configs.RuntimeTypeVM {
		return []string{h.HypervisorPath}
	}
	return []string{h.RuntimePath, h.MonitorPath}
}

func checkHandlerBinaries(cfg *configs.Config, name string) error {
	h, ok := cfg.Runtime.Runtimes[name]
	if !ok {
		return fmt.Errorf("handler %q is not configured", name)
	}
	var missing []string
	for _, p := range handlerBinaries(h) {
		if unix.Access(p, unix.X_OK) != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("handler %q: not executable: %s", name, strings.Join(missing, ", "))
	}
	return nil
}

// checkCNI succeeds when network_dir holds at least one network config whose
// plugin binaries are all found in the plugin dirs.
func checkCNI(n configs.NetworkConfig) error {
	entries, err := os.ReadDir(n.NetworkDir)
	if err != nil {
		return fmt.Errorf("no CNI configuration: reading %s: %w", n.NetworkDir, err)
	}
	var problems []string
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".conflist" && ext != ".conf" && ext != ".json") {
			continue
		}
		p := filepath.Join(n.NetworkDir, e.Name())
		types, err := cniPluginTypes(p)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if missing := missingPlugins(types, n.CNIPluginDirs); len(missing) > 0 {
			problems = append(problems, fmt.Sprintf("%s: plugins not found in %s: %s", p, strings.Join(n.CNIPluginDirs, ":"), strings.Join(missing, ", ")))
			continue
		}
		return nil
	}
	if len(problems) == 0 {
		return fmt.Errorf("no CNI network configuration in %s", n.NetworkDir)
	}
	return fmt.Errorf("no usable CNI network configuration: %s", strings.Join(problems, "; "))
}

func cniPluginTypes(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var conf struct {
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	var types []string
	if conf.Type != "" {
		types = append(types, conf.Type)
	}
	for _, p := range conf.Plugins {
		types = append(types, p.Type)
	}
	if len(types) == 0 {
		return nil, fmt.Errorf("%s names no plugin", path)
	}
	return types, nil
}

func missingPlugins(types, dirs []string) []string {
	var missing []string
	for _, t := range types {
		found := false
		for _, d := range dirs {
			if unix.Access(filepath.Join(d, t), unix.X_OK) == nil {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, t)
		}
	}
	return missing
}
