// Package metrics holds crivm's Prometheus metrics. One *Metrics lives for
// the daemon's life; every method is safe on a nil receiver, so code paths
// that run without metrics (tests, tools) need no checks.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the daemon's own metrics (the trust classifier registers its
// counters itself).
type Metrics struct {
	rpcs        *prometheus.CounterVec
	rpcDuration *prometheus.HistogramVec
	podStart    *prometheus.HistogramVec
	pullBytes   prometheus.Counter
	pullTime    prometheus.Histogram
	vmBoot      *prometheus.HistogramVec
	vmStarts    *prometheus.CounterVec
	oomKills    *prometheus.CounterVec
	poolReady   *prometheus.GaugeVec
	poolBytes   *prometheus.GaugeVec
}

// New registers crivm's metrics in reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crivm_rpc_requests_total", Help: "CRI RPCs served, by RPC and gRPC code.",
		}, []string{"rpc", "code"}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "crivm_rpc_duration_seconds", Help: "CRI RPC latency, by RPC.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"rpc"}),
		podStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "crivm_pod_start_duration_seconds", Help: "RunPodSandbox latency of pods that started, by handler.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}, []string{"handler"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crivm_image_pull_bytes_total", Help: "Bytes of image blobs downloaded.",
		}),
		pullTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "crivm_image_pull_duration_seconds", Help: "Duration of image pulls that completed.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}),
		vmBoot: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "crivm_vm_boot_duration_seconds", Help: "VM boot until the guest agent answers, by accelerator.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 10),
		}, []string{"accel"}),
		vmStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crivm_vm_starts_total", Help: "VM pod starts by handler, how the VM was made (boot, clone or pool) and, for a boot under a factory, why it was not a clone.",
		}, []string{"handler", "source", "reason"}),
		oomKills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crivm_container_oom_kills_total", Help: "Processes the kernel OOM-killed in containers, by handler (VM guests report each kill).",
		}, []string{"handler"}),
		poolReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "crivm_vm_pool_ready", Help: "Booted VMs a handler's pool (vm_factory = \"pool\") holds for pods to take.",
		}, []string{"handler"}),
		poolBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "crivm_vm_pool_memory_bytes", Help: "Host memory (PSS of QEMU) of the VMs a handler's pool holds, when last refilled or taken from.",
		}, []string{"handler"}),
	}
	for _, c := range []prometheus.Collector{m.rpcs, m.rpcDuration, m.podStart, m.pullBytes, m.pullTime, m.vmBoot, m.vmStarts, m.oomKills, m.poolReady, m.poolBytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// RPC records one served RPC.
func (m *Metrics) RPC(rpc, code string, d time.Duration) {
	if m == nil {
		return
	}
	m.rpcs.WithLabelValues(rpc, code).Inc()
	m.rpcDuration.WithLabelValues(rpc).Observe(d.Seconds())
}

// PodStarted records a successful RunPodSandbox.
func (m *Metrics) PodStarted(handler string, d time.Duration) {
	if m == nil {
		return
	}
	m.podStart.WithLabelValues(handler).Observe(d.Seconds())
}

// Pulled records a completed pull of n downloaded bytes.
func (m *Metrics) Pulled(n uint64, d time.Duration) {
	if m == nil {
		return
	}
	m.pullBytes.Add(float64(n))
	m.pullTime.Observe(d.Seconds())
}

// VMBooted records a VM boot under accel ("kvm" or "tcg").
func (m *Metrics) VMBooted(accel string, d time.Duration) {
	if m == nil {
		return
	}
	m.vmBoot.WithLabelValues(accel).Observe(d.Seconds())
}

// VMStarted records how a VM pod's VM was made: source "boot", "clone"
// or "pool"; reason is why a handler with a factory booted ("" otherwise).
func (m *Metrics) VMStarted(handler, source, reason string) {
	if m == nil {
		return
	}
	m.vmStarts.WithLabelValues(handler, source, reason).Inc()
}

// VMPool records what handler's VM pool holds: ready VMs and their host
// memory.
func (m *Metrics) VMPool(handler string, ready int, bytes int64) {
	if m == nil {
		return
	}
	m.poolReady.WithLabelValues(handler).Set(float64(ready))
	m.poolBytes.WithLabelValues(handler).Set(float64(bytes))
}

// OOMKill records a process OOM-killed in a container of handler.
func (m *Metrics) OOMKill(handler string) {
	if m == nil {
		return
	}
	m.oomKills.WithLabelValues(handler).Inc()
}
