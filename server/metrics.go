package server

import (
	"context"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/store"
)

// The CRI metrics are cadvisor's container_* set, named, typed and labelled
// as CRI-O offers them (the set critest expects and the kubelet serves on
// /metrics/cadvisor with PodAndContainerStatsFromCRI). Every metric carries
// baseLabels, then its own extra labels. Container metrics are per running
// container; network metrics are the pod's, one per interface of its netns
// but lo (the host's for a host-network pod), with the sandbox ID as id and
// "POD" as container. A value the handler cannot
// measure is left out rather than sent as zero. The CRI value is an
// integer, so seconds are whole seconds, as in CRI-O.
var baseLabels = []string{"id", "image", "namespace", "pod", "container"}

// metricValue is one sample: the values of the metric's extra labels and
// the value.
type metricValue struct {
	labels []string
	v      uint64
}

// containerSample is what one container's metrics are computed from.
type containerSample struct {
	labels []string // values of baseLabels
	st     *cgroupstat.Stats
	fs     *fsSample // nil when the writable layer could not be measured
	// started is when the container started; now when it was sampled.
	started, now time.Time
}

// fsSample is the container's writable layer and the filesystem under it.
type fsSample struct {
	usage, limit, inodes, inodesFree uint64
}

type containerMetricDef struct {
	name, help string
	typ        runtimeapi.MetricType
	extra      []string
	values     func(*containerSample) []metricValue
}

const (
	metricCounter = runtimeapi.MetricType_COUNTER
	metricGauge   = runtimeapi.MetricType_GAUGE
)

// key emits a measured value divided by div (nanoseconds or microseconds
// to seconds), with extra label values labels.
func key(k cgroupstat.Key, div uint64, labels ...string) func(*containerSample) []metricValue {
	return func(s *containerSample) []metricValue {
		v, ok := s.st.Get(k)
		if !ok {
			return nil
		}
		return []metricValue{{labels: labels, v: v / div}}
	}
}

type keyLabels struct {
	k      cgroupstat.Key
	labels []string
}

// keys emits one value per measured key, each with its label values.
func keys(kv ...keyLabels) func(*containerSample) []metricValue {
	return func(s *containerSample) []metricValue {
		var out []metricValue
		for _, e := range kv {
			if v, ok := s.st.Get(e.k); ok {
				out = append(out, metricValue{labels: e.labels, v: v})
			}
		}
		return out
	}
}

func fsValue(f func(*fsSample) uint64) func(*containerSample) []metricValue {
	return func(s *containerSample) []metricValue {
		if s.fs == nil {
			return nil
		}
		return []metricValue{{v: f(s.fs)}}
	}
}

// ioDevices emits, per block device, the values f makes of it.
func ioDevices(f func(cgroupstat.IODevice) []metricValue) func(*containerSample) []metricValue {
	return func(s *containerSample) []metricValue {
		var out []metricValue
		for _, d := range s.st.IO {
			out = append(out, f(d)...)
		}
		return out
	}
}

func hugetlb(max bool) func(*containerSample) []metricValue {
	return func(s *containerSample) []metricValue {
		var out []metricValue
		for _, h := range s.st.Hugetlb {
			if !max {
				out = append(out, metricValue{labels: []string{h.PageSize}, v: h.Usage})
			} else if h.HasMax {
				out = append(out, metricValue{labels: []string{h.PageSize}, v: h.MaxUsage})
			}
		}
		return out
	}
}

// Divisors from nanoseconds and microseconds to seconds.
const (
	nsPerSecond = uint64(time.Second)
	usPerSecond = uint64(time.Second / time.Microsecond)
)

var containerMetricDefs = []containerMetricDef{
	// CPU.
	{"container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", metricCounter, []string{"cpu"}, key(cgroupstat.CPUUsage, nsPerSecond, "total")},
	{"container_cpu_user_seconds_total", "Cumulative user CPU time consumed in seconds.", metricCounter, nil, key(cgroupstat.CPUUser, nsPerSecond)},
	{"container_cpu_system_seconds_total", "Cumulative system CPU time consumed in seconds.", metricCounter, nil, key(cgroupstat.CPUSystem, nsPerSecond)},
	{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", metricCounter, nil, key(cgroupstat.CPUPeriods, 1)},
	{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", metricCounter, nil, key(cgroupstat.CPUThrottledPeriods, 1)},
	{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", metricCounter, nil, key(cgroupstat.CPUThrottled, nsPerSecond)},

	// Memory.
	{"container_memory_cache", "Number of bytes of page cache memory.", metricGauge, nil, key(cgroupstat.MemoryCache, 1)},
	{"container_memory_rss", "Size of RSS in bytes.", metricGauge, nil, key(cgroupstat.MemoryRSS, 1)},
	{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", metricGauge, nil, key(cgroupstat.MemoryKernel, 1)},
	{"container_memory_mapped_file", "Size of memory mapped files in bytes.", metricGauge, nil, key(cgroupstat.MemoryMappedFile, 1)},
	{"container_memory_swap", "Container swap usage in bytes.", metricGauge, nil, key(cgroupstat.MemorySwap, 1)},
	{"container_memory_failcnt", "Number of memory usage hits limits", metricCounter, nil, key(cgroupstat.MemoryFailcnt, 1)},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", metricGauge, nil, key(cgroupstat.MemoryUsage, 1)},
	{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", metricGauge, nil, key(cgroupstat.MemoryMaxUsage, 1)},
	{"container_memory_working_set_bytes", "Current working set in bytes.", metricGauge, nil, key(cgroupstat.MemoryWorkingSet, 1)},
	{"container_memory_failures_total", "Cumulative count of memory allocation failures.", metricCounter, []string{"failure_type", "scope"}, keys(
		keyLabels{cgroupstat.PgFault, []string{"pgfault", "container"}},
		keyLabels{cgroupstat.PgFaultHierarchy, []string{"pgfault", "hierarchy"}},
		keyLabels{cgroupstat.PgMajFault, []string{"pgmajfault", "container"}},
		keyLabels{cgroupstat.PgMajFaultHierarchy, []string{"pgmajfault", "hierarchy"}},
	)},
	{"container_oom_events_total", "Count of out of memory events observed for the container", metricCounter, nil, key(cgroupstat.OOMKills, 1)},

	// Huge pages.
	{"container_hugetlb_usage_bytes", "Current hugepage usage", metricGauge, []string{"pagesize"}, hugetlb(false)},
	{"container_hugetlb_max_usage_bytes", "Maximum hugepage usages recorded", metricGauge, []string{"pagesize"}, hugetlb(true)},

	// Processes.
	{"container_processes", "Number of processes running inside the container.", metricGauge, nil, key(cgroupstat.Processes, 1)},
	{"container_threads", "Number of threads running inside the container", metricGauge, nil, key(cgroupstat.Threads, 1)},
	{"container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", metricGauge, nil, key(cgroupstat.ThreadsMax, 1)},
	{"container_file_descriptors", "Number of open file descriptors for the container.", metricGauge, nil, key(cgroupstat.FileDescriptors, 1)},
	{"container_sockets", "Number of open sockets for the container.", metricGauge, nil, key(cgroupstat.Sockets, 1)},
	{"container_ulimits_soft", "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice", metricGauge, []string{"ulimit"}, key(cgroupstat.MaxOpenFilesSoft, 1, "max_open_files")},

	// Pressure stall information (cgroup v2, or a hybrid host's unified
	// hierarchy).
	{"container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", metricCounter, nil, key(cgroupstat.PressureCPUFull, usPerSecond)},
	{"container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", metricCounter, nil, key(cgroupstat.PressureCPUSome, usPerSecond)},
	{"container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", metricCounter, nil, key(cgroupstat.PressureMemoryFull, usPerSecond)},
	{"container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", metricCounter, nil, key(cgroupstat.PressureMemorySome, usPerSecond)},
	{"container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", metricCounter, nil, key(cgroupstat.PressureIOFull, usPerSecond)},
	{"container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion.", metricCounter, nil, key(cgroupstat.PressureIOSome, usPerSecond)},

	// Block I/O.
	{"container_fs_reads_bytes_total", "Cumulative count of bytes read", metricCounter, []string{"device"}, ioDevices(func(d cgroupstat.IODevice) []metricValue {
		return []metricValue{{labels: []string{d.Device}, v: d.ReadBytes}}
	})},
	{"container_fs_reads_total", "Cumulative count of reads completed", metricCounter, []string{"device"}, ioDevices(func(d cgroupstat.IODevice) []metricValue {
		return []metricValue{{labels: []string{d.Device}, v: d.Reads}}
	})},
	{"container_fs_writes_bytes_total", "Cumulative count of bytes written", metricCounter, []string{"device"}, ioDevices(func(d cgroupstat.IODevice) []metricValue {
		return []metricValue{{labels: []string{d.Device}, v: d.WriteBytes}}
	})},
	{"container_fs_writes_total", "Cumulative count of writes completed", metricCounter, []string{"device"}, ioDevices(func(d cgroupstat.IODevice) []metricValue {
		return []metricValue{{labels: []string{d.Device}, v: d.Writes}}
	})},
	{"container_blkio_device_usage_total", "Blkio Device bytes usage", metricCounter, []string{"device", "major", "minor", "operation"}, ioDevices(func(d cgroupstat.IODevice) []metricValue {
		maj, mnr := strconv.FormatUint(uint64(d.Major), 10), strconv.FormatUint(uint64(d.Minor), 10)
		return []metricValue{
			{labels: []string{d.Device, maj, mnr, "Read"}, v: d.ReadBytes},
			{labels: []string{d.Device, maj, mnr, "Write"}, v: d.WriteBytes},
		}
	})},

	// The writable layer (for both handlers it is on the host, in crivm's
	// storage) and its filesystem.
	{"container_fs_usage_bytes", "Current filesystem usage in bytes.", metricGauge, nil, fsValue(func(f *fsSample) uint64 { return f.usage })},
	{"container_fs_limit_bytes", "Filesystem limit in bytes.", metricGauge, nil, fsValue(func(f *fsSample) uint64 { return f.limit })},
	{"container_fs_inodes_total", "Total number of inodes.", metricGauge, nil, fsValue(func(f *fsSample) uint64 { return f.inodes })},
	{"container_fs_inodes_free", "Number of free inodes.", metricGauge, nil, fsValue(func(f *fsSample) uint64 { return f.inodesFree })},

	// The limits the container's cgroup enforces.
	{"container_spec_cpu_period", "CPU period of the container.", metricGauge, nil, key(cgroupstat.SpecCPUPeriod, 1)},
	{"container_spec_cpu_quota", "CPU quota of the container.", metricGauge, nil, key(cgroupstat.SpecCPUQuota, 1)},
	{"container_spec_cpu_shares", "CPU share of the container.", metricGauge, nil, key(cgroupstat.SpecCPUShares, 1)},
	{"container_spec_memory_limit_bytes", "Memory limit for the container in bytes.", metricGauge, nil, key(cgroupstat.SpecMemoryLimit, 1)},
	{"container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", metricGauge, nil, key(cgroupstat.SpecMemoryReservation, 1)},
	{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", metricGauge, nil, key(cgroupstat.SpecMemorySwapLimit, 1)},

	{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", metricGauge, nil, func(s *containerSample) []metricValue {
		return []metricValue{{v: uint64(s.started.Unix())}}
	}},
	{"container_last_seen", "Last time a container was seen by the exporter", metricGauge, nil, func(s *containerSample) []metricValue {
		return []metricValue{{v: uint64(s.now.Unix())}}
	}},
}

// netDevice is one interface's counters from /proc/net/dev.
type netDevice struct {
	name                                    string
	rxBytes, rxPackets, rxErrors, rxDropped uint64
	txBytes, txPackets, txErrors, txDropped uint64
}

type networkMetricDef struct {
	name, help string
	value      func(*netDevice) uint64
}

var networkMetricDefs = []networkMetricDef{
	{"container_network_receive_bytes_total", "Cumulative count of bytes received", func(d *netDevice) uint64 { return d.rxBytes }},
	{"container_network_receive_packets_total", "Cumulative count of packets received", func(d *netDevice) uint64 { return d.rxPackets }},
	{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", func(d *netDevice) uint64 { return d.rxDropped }},
	{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", func(d *netDevice) uint64 { return d.rxErrors }},
	{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", func(d *netDevice) uint64 { return d.txBytes }},
	{"container_network_transmit_packets_total", "Cumulative count of packets transmitted", func(d *netDevice) uint64 { return d.txPackets }},
	{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", func(d *netDevice) uint64 { return d.txDropped }},
	{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", func(d *netDevice) uint64 { return d.txErrors }},
}

// metricDescriptors describes every metric ListPodSandboxMetrics can send.
var metricDescriptors = func() []*runtimeapi.MetricDescriptor {
	var out []*runtimeapi.MetricDescriptor
	for _, d := range containerMetricDefs {
		out = append(out, &runtimeapi.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: append(append([]string{}, baseLabels...), d.extra...)})
	}
	for _, d := range networkMetricDefs {
		out = append(out, &runtimeapi.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: append(append([]string{}, baseLabels...), "interface")})
	}
	return out
}()

func (s *RuntimeService) ListMetricDescriptors(ctx context.Context, _ *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: metricDescriptors}, nil
}

// ListPodSandboxMetrics reports, for every ready pod, its network counters
// and its running containers' metrics.
func (s *RuntimeService) ListPodSandboxMetrics(ctx context.Context, _ *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	resp := &runtimeapi.ListPodSandboxMetricsResponse{}
	for _, sb := range s.deps.Store.Sandboxes.List(func(sb *store.Sandbox) bool { return sb.State == store.SandboxReady }) {
		resp.PodMetrics = append(resp.PodMetrics, s.sandboxMetrics(ctx, sb))
	}
	return resp, nil
}

func (s *RuntimeService) sandboxMetrics(ctx context.Context, sb *store.Sandbox) *runtimeapi.PodSandboxMetrics {
	now := time.Now()
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: sb.ID}
	if devs, err := netDev(sb.NetNSPath); err == nil {
		pm.Metrics = networkMetrics([]string{sb.ID, "", sb.Metadata.Namespace, sb.Metadata.Name, "POD"}, devs, now)
	} else {
		log.G(ctx).Debug("no network metrics", "sandbox", sb.ID, "err", err)
	}
	h, err := s.sandboxHandler(sb)
	if err != nil {
		return pm
	}
	for _, c := range s.deps.Store.Containers.List(func(c *store.Container) bool { return c.SandboxID == sb.ID }) {
		c = s.refreshContainer(ctx, c)
		if c.State != store.ContainerRunning {
			continue
		}
		st, err := h.Stats(ctx, c)
		if err != nil {
			log.G(ctx).Debug("no container metrics", "container", c.ID, "err", err)
			continue // exited or removed meanwhile
		}
		started := c.StartedAt
		if started.IsZero() {
			started = c.CreatedAt
		}
		detail := st.Detail
		if detail == nil {
			detail = &cgroupstat.Stats{Values: map[cgroupstat.Key]uint64{
				cgroupstat.CPUUsage: st.CPUUsageNanos, cgroupstat.MemoryUsage: st.MemoryUsageBytes,
				cgroupstat.MemoryWorkingSet: st.MemoryWorkingSetBytes, cgroupstat.Threads: st.Processes,
			}}
		}
		pm.ContainerMetrics = append(pm.ContainerMetrics, &runtimeapi.ContainerMetrics{
			ContainerId: c.ID,
			Metrics: containerMetrics(&containerSample{
				labels: []string{c.ID, c.Image, sb.Metadata.Namespace, sb.Metadata.Name, c.Metadata.Name},
				// The host's clock: a VM's stats carry the guest's.
				st: detail, fs: s.fsSample(c.ID), started: started, now: time.Now(),
			}),
		})
	}
	return pm
}

// fsSample measures a container's writable layer and the filesystem of
// crivm's storage that holds it.
func (s *RuntimeService) fsSample(id string) *fsSample {
	used, err := s.deps.Images.WritableLayerBytes(id)
	if err != nil {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.deps.Config().StorageRoot(), &st); err != nil {
		return nil
	}
	return &fsSample{usage: used, limit: st.Blocks * uint64(st.Bsize), inodes: st.Files, inodesFree: st.Ffree}
}

func containerMetrics(s *containerSample) []*runtimeapi.Metric {
	var out []*runtimeapi.Metric
	ts := s.now.UnixNano()
	for _, d := range containerMetricDefs {
		for _, v := range d.values(s) {
			out = append(out, &runtimeapi.Metric{Name: d.name, Timestamp: ts, MetricType: d.typ,
				LabelValues: append(append([]string{}, s.labels...), v.labels...), Value: &runtimeapi.UInt64Value{Value: v.v}})
		}
	}
	return out
}

func networkMetrics(labels []string, devs []netDevice, now time.Time) []*runtimeapi.Metric {
	var out []*runtimeapi.Metric
	for i := range devs {
		for _, d := range networkMetricDefs {
			out = append(out, &runtimeapi.Metric{Name: d.name, Timestamp: now.UnixNano(), MetricType: metricCounter,
				LabelValues: append(append([]string{}, labels...), devs[i].name), Value: &runtimeapi.UInt64Value{Value: d.value(&devs[i])}})
		}
	}
	return out
}
