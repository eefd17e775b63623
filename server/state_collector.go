package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/crivm/crivm/store"
)

// StateCollector reports the number of sandboxes and containers by handler
// and state, read from the store at scrape time.
type StateCollector struct {
	Store *store.Store
}

var (
	sandboxesDesc  = prometheus.NewDesc("crivm_sandboxes", "Pod sandboxes by handler and state.", []string{"handler", "state"}, nil)
	containersDesc = prometheus.NewDesc("crivm_containers", "Containers by handler and state.", []string{"handler", "state"}, nil)
)

func (c StateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sandboxesDesc
	ch <- containersDesc
}

func (c StateCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ handler, state string }
	sbs := map[key]int{}
	handlerOf := map[string]string{}
	for _, sb := range c.Store.Sandboxes.List(nil) {
		sbs[key{sb.Handler, string(sb.State)}]++
		handlerOf[sb.ID] = sb.Handler
	}
	ctrs := map[key]int{}
	for _, ct := range c.Store.Containers.List(nil) {
		ctrs[key{handlerOf[ct.SandboxID], string(ct.State)}]++
	}
	for k, n := range sbs {
		ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(n), k.handler, k.state)
	}
	for k, n := range ctrs {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(n), k.handler, k.state)
	}
}
