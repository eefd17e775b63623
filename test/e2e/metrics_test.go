package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/test/testutil"
)

// Metrics the values of which depend on the machine. Block I/O: the
// container's rootfs is overlay (runc) or a 9p/virtio-fs share (vm), and
// these machines' disks report no per-cgroup I/O. Huge pages: no hugetlb
// controller on this host's v1 hierarchies. Pressure: cgroup v2 PSI (the VM
// guest, or a hybrid host's unified hierarchy).
var machineDependentMetrics = []string{
	"container_blkio_device_usage_total", "container_fs_reads_bytes_total", "container_fs_reads_total",
	"container_fs_writes_bytes_total", "container_fs_writes_total",
	"container_hugetlb_max_usage_bytes", "container_hugetlb_usage_bytes",
	"container_pressure_cpu_stalled_seconds_total", "container_pressure_cpu_waiting_seconds_total",
	"container_pressure_io_stalled_seconds_total", "container_pressure_io_waiting_seconds_total",
	"container_pressure_memory_stalled_seconds_total", "container_pressure_memory_waiting_seconds_total",
}

// TestPodSandboxMetrics: ListMetricDescriptors describes every metric
// critest expects, and ListPodSandboxMetrics reports them with real values
// for a runc pod (host cgroups and /proc) and a VM pod (the guest's, through
// the agent), with the labels their descriptors name.
func TestPodSandboxMetrics(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()

	// 1. Every name critest expects has a descriptor with help and labels.
	descs, err := e.rs.ListMetricDescriptors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*runtimeapi.MetricDescriptor{}
	for _, d := range descs {
		byName[d.Name] = d
		if d.Help == "" || len(d.LabelKeys) == 0 {
			t.Errorf("descriptor %s: help %q, labels %v", d.Name, d.Help, d.LabelKeys)
		}
	}
	for _, n := range testutil.CritestMetricNames {
		if byName[n] == nil {
			t.Errorf("no descriptor for %s", n)
		}
	}

	// The container critest's metrics spec runs: limits set, a file
	// written in its writable layer.
	ctrConfig := func(name string) *runtimeapi.ContainerConfig {
		c := e.containerConfig(name, "sleep", "3600")
		c.Linux.Resources = &runtimeapi.LinuxContainerResources{
			CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 1024,
			MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: 64 << 20,
		}
		return c
	}
	check := func(t *testing.T, sbID, ctrID string, optional []string) {
		// 2. A second of CPU: three seconds busy at half a CPU.
		e.exec(t, ctrID, "sh", "-c", `timeout 3 sh -c 'while :; do :; done'; dd if=/dev/zero of=/written bs=1M count=2 2>/dev/null; true`)

		// 3. The pod's metrics: every critest name (but those this machine
		// cannot measure), labels as described, plausible values.
		var pm *runtimeapi.PodSandboxMetrics
		pms, err := e.rs.ListPodSandboxMetrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range pms {
			if m.PodSandboxId == sbID {
				pm = m
			}
		}
		if pm == nil {
			t.Fatalf("no metrics for pod %s", sbID)
		}
		got := map[string][]*runtimeapi.Metric{}
		for _, m := range pm.Metrics {
			got[m.Name] = append(got[m.Name], m)
		}
		if len(pm.ContainerMetrics) != 1 || pm.ContainerMetrics[0].ContainerId != ctrID {
			t.Fatalf("container metrics of %v, want %s's", pm.ContainerMetrics, ctrID)
		}
		for _, m := range pm.ContainerMetrics[0].Metrics {
			got[m.Name] = append(got[m.Name], m)
		}
		for _, n := range testutil.CritestMetricNames {
			if len(got[n]) == 0 && !slices.Contains(optional, n) {
				t.Errorf("%s missing", n)
			}
		}
		for n, ms := range got {
			d := byName[n]
			if d == nil {
				t.Errorf("%s sent without a descriptor", n)
				continue
			}
			for _, m := range ms {
				if len(m.LabelValues) != len(d.LabelKeys) {
					t.Errorf("%s: labels %v for keys %v", n, m.LabelValues, d.LabelKeys)
				}
			}
		}
		// value returns the metric whose last label values are extra.
		value := func(name string, extra ...string) uint64 {
			for _, m := range got[name] {
				if slices.Equal(m.LabelValues[len(m.LabelValues)-len(extra):], extra) {
					return m.Value.GetValue()
				}
			}
			t.Errorf("no %s%v", name, extra)
			return 0
		}
		for _, m := range got["container_memory_usage_bytes"] {
			if want := []string{ctrID, e.busybox, "e2e"}; !slices.Equal(m.LabelValues[:3], want) || m.LabelValues[4] == "" {
				t.Errorf("labels %v, want id, image, namespace %v, pod and container", m.LabelValues, want)
			}
		}
		now := uint64(time.Now().Unix())
		for _, c := range []struct {
			name  string
			extra []string
			ok    func(uint64) bool
		}{
			{"container_cpu_usage_seconds_total", []string{"total"}, func(v uint64) bool { return v >= 1 }},
			{"container_cpu_user_seconds_total", nil, func(v uint64) bool { return v >= 1 }},
			{"container_cpu_cfs_periods_total", nil, func(v uint64) bool { return v > 0 }},
			{"container_cpu_cfs_throttled_periods_total", nil, func(v uint64) bool { return v > 0 }},
			{"container_memory_usage_bytes", nil, func(v uint64) bool { return v > 0 }},
			{"container_memory_working_set_bytes", nil, func(v uint64) bool { return v > 0 }},
			{"container_memory_max_usage_bytes", nil, func(v uint64) bool { return v > 0 }},
			{"container_memory_rss", nil, func(v uint64) bool { return v > 0 }},
			{"container_memory_failures_total", []string{"pgfault", "container"}, func(v uint64) bool { return v > 0 }},
			{"container_processes", nil, func(v uint64) bool { return v >= 1 }},
			{"container_threads", nil, func(v uint64) bool { return v >= 1 }},
			{"container_file_descriptors", nil, func(v uint64) bool { return v >= 1 }},
			{"container_ulimits_soft", []string{"max_open_files"}, func(v uint64) bool { return v > 0 }},
			{"container_fs_usage_bytes", nil, func(v uint64) bool { return v >= 2<<20 }},
			{"container_fs_limit_bytes", nil, func(v uint64) bool { return v > 2<<20 }},
			{"container_fs_inodes_total", nil, func(v uint64) bool { return v > 0 }},
			{"container_spec_cpu_period", nil, func(v uint64) bool { return v == 100000 }},
			{"container_spec_cpu_quota", nil, func(v uint64) bool { return v == 50000 }},
			// Exactly 1024 on v1; cgroup v2's weight converts back to 998.
			{"container_spec_cpu_shares", nil, func(v uint64) bool { return v == 1024 || v == 998 }},
			{"container_spec_memory_limit_bytes", nil, func(v uint64) bool { return v == 64<<20 }},
			{"container_start_time_seconds", nil, func(v uint64) bool { return v <= now && v > now-600 }},
			{"container_last_seen", nil, func(v uint64) bool { return v <= now && v > now-60 }},
			{"container_network_receive_bytes_total", []string{"eth0"}, func(v uint64) bool { return true }},
		} {
			if v := value(c.name, c.extra...); !c.ok(v) {
				t.Errorf("%s%v = %d: implausible", c.name, c.extra, v)
			}
		}
	}

	t.Run("runc", func(t *testing.T) {
		// 4. A runc pod: the host's cgroups and /proc.
		pod := e.podConfig("metrics-runc")
		sbID, ctrID := e.runPod(t, pod, ctrConfig("busy"))
		check(t, sbID, ctrID, machineDependentMetrics)
	})

	t.Run("vm", func(t *testing.T) {
		// 5. A VM pod: the guest's cgroup v2 and /proc through the agent,
		// network from the pod's netns on the host. The guest has PSI.
		requiresVM(t)
		pod := e.podConfig("metrics-vm")
		pod.Annotations = map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}
		sbID, ctrID := e.runPod(t, pod, ctrConfig("busy"))
		optional := slices.DeleteFunc(slices.Clone(machineDependentMetrics), func(n string) bool {
			return strings.HasPrefix(n, "container_pressure_")
		})
		check(t, sbID, ctrID, optional)
	})
}
