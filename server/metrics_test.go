package server

import (
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/test/testutil"
)

// fullSample measured everything: every key (value 1000 + its index),
// one block device, one huge page size with a peak, the writable layer.
func fullSample() *containerSample {
	st := &cgroupstat.Stats{Values: map[cgroupstat.Key]uint64{}}
	for i, k := range cgroupstat.Keys {
		st.Values[k] = uint64(1000 + i)
	}
	st.Values[cgroupstat.CPUUsage] = 2500 * uint64(time.Millisecond)
	st.IO = []cgroupstat.IODevice{{Major: 254, Minor: 0, Device: "/dev/vda", ReadBytes: 1, WriteBytes: 2, Reads: 3, Writes: 4}}
	st.Hugetlb = []cgroupstat.Hugetlb{{PageSize: "2MB", Usage: 5, MaxUsage: 6, HasMax: true}}
	return &containerSample{
		labels: []string{"cid", "busybox", "ns", "pod", "ctr"},
		st:     st, fs: &fsSample{usage: 7, limit: 8, inodes: 9, inodesFree: 10},
		started: time.Unix(1700000000, 0), now: time.Unix(1700000100, 0),
	}
}

func TestMetricDescriptorsMatchMetrics(t *testing.T) {
	descs := map[string]*runtimeapi.MetricDescriptor{}
	for _, d := range metricDescriptors {
		if _, dup := descs[d.Name]; dup {
			t.Errorf("descriptor %s twice", d.Name)
		}
		if d.Help == "" || len(d.LabelKeys) == 0 {
			t.Errorf("descriptor %s lacks help or labels", d.Name)
		}
		descs[d.Name] = d
	}
	for _, name := range testutil.CritestMetricNames {
		if descs[name] == nil {
			t.Errorf("critest expects %s: no descriptor", name)
		}
	}

	emitted := map[string]bool{}
	metrics := containerMetrics(fullSample())
	metrics = append(metrics, networkMetrics([]string{"sbid", "", "ns", "pod", "POD"}, []netDevice{{name: "eth0"}}, time.Now())...)
	for _, m := range metrics {
		emitted[m.Name] = true
		d := descs[m.Name]
		if d == nil {
			t.Errorf("%s emitted without a descriptor", m.Name)
			continue
		}
		if len(m.LabelValues) != len(d.LabelKeys) {
			t.Errorf("%s: %d label values for %d keys %v", m.Name, len(m.LabelValues), len(d.LabelKeys), d.LabelKeys)
		}
		if m.Value == nil || m.Timestamp == 0 {
			t.Errorf("%s: no value or timestamp", m.Name)
		}
		// Cumulative counts are counters; container_fs_inodes_total is the
		// filesystem's inode count, a gauge as in cadvisor.
		if strings.HasSuffix(m.Name, "_total") && m.Name != "container_fs_inodes_total" && m.MetricType != runtimeapi.MetricType_COUNTER {
			t.Errorf("%s is a %v", m.Name, m.MetricType)
		}
	}
	for name := range descs {
		if !emitted[name] {
			t.Errorf("%s has a descriptor but is never emitted", name)
		}
	}
}

func TestContainerMetricValues(t *testing.T) {
	get := func(ms []*runtimeapi.Metric, name string, extra ...string) (uint64, bool) {
		for _, m := range ms {
			if m.Name == name && slices.Equal(m.LabelValues[len(baseLabels):], extra) {
				return m.Value.GetValue(), true
			}
		}
		return 0, false
	}
	full := containerMetrics(fullSample())
	tests := []struct {
		name  string
		extra []string
		want  uint64
	}{
		// 2.5 s truncates to whole seconds.
		{"container_cpu_usage_seconds_total", []string{"total"}, 2},
		{"container_memory_cache", nil, 1000 + uint64(slices.Index(cgroupstat.Keys, cgroupstat.MemoryCache))},
		{"container_memory_failures_total", []string{"pgmajfault", "hierarchy"}, 1000 + uint64(slices.Index(cgroupstat.Keys, cgroupstat.PgMajFaultHierarchy))},
		{"container_ulimits_soft", []string{"max_open_files"}, 1000 + uint64(slices.Index(cgroupstat.Keys, cgroupstat.MaxOpenFilesSoft))},
		{"container_blkio_device_usage_total", []string{"/dev/vda", "254", "0", "Write"}, 2},
		{"container_fs_reads_total", []string{"/dev/vda"}, 3},
		{"container_hugetlb_max_usage_bytes", []string{"2MB"}, 6},
		{"container_fs_inodes_free", nil, 10},
		{"container_start_time_seconds", nil, 1700000000},
		{"container_last_seen", nil, 1700000100},
	}
	for _, tt := range tests {
		if got, ok := get(full, tt.name, tt.extra...); !ok || got != tt.want {
			t.Errorf("%s%v = %d (found %v), want %d", tt.name, tt.extra, got, ok, tt.want)
		}
	}
	for _, m := range full {
		if !slices.Equal(m.LabelValues[:len(baseLabels)], []string{"cid", "busybox", "ns", "pod", "ctr"}) {
			t.Fatalf("%s: base labels %v", m.Name, m.LabelValues)
		}
	}

	// What was not measured is left out, not sent as zero.
	sparse := &containerSample{labels: []string{"c", "i", "n", "p", "x"}, st: &cgroupstat.Stats{Values: map[cgroupstat.Key]uint64{cgroupstat.CPUUsage: 0}},
		started: time.Unix(1, 0), now: time.Unix(2, 0)}
	var names []string
	for _, m := range containerMetrics(sparse) {
		names = append(names, m.Name)
	}
	if want := []string{"container_cpu_usage_seconds_total", "container_start_time_seconds", "container_last_seen"}; !slices.Equal(names, want) {
		t.Errorf("sparse sample: %v, want %v", names, want)
	}
}

func TestParseNetDev(t *testing.T) {
	const data = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
  tap0:      10       1    0    0    0     0          0         0       20       2    0    0    0     0       0          0
  eth0: 1049283     721    1    2    0     0          0         0    63270     601    3    4    0     0       0          0
`
	got := parseNetDev([]byte(data))
	want := []netDevice{
		{name: "eth0", rxBytes: 1049283, rxPackets: 721, rxErrors: 1, rxDropped: 2, txBytes: 63270, txPackets: 601, txErrors: 3, txDropped: 4},
		{name: "tap0", rxBytes: 10, rxPackets: 1, txBytes: 20, txPackets: 2},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseNetDev:\n got %+v\nwant %+v", got, want)
	}
	if parseNetDev(nil) != nil {
		t.Error("empty /proc/net/dev parsed to interfaces")
	}
}
