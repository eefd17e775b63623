package server

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/store"
)

// cadvisor-style metrics for ListPodSandboxMetrics. Container metrics carry
// the labels in containerLabels, network metrics those in networkLabels.
var (
	containerLabels = []string{"container", "id", "pod", "namespace", "image"}
	networkLabels   = []string{"interface", "pod", "namespace"}

	metricDescriptors = []*runtimeapi.MetricDescriptor{
		{Name: "container_cpu_usage_seconds_total", Help: "Cumulative CPU time consumed, in seconds.", LabelKeys: containerLabels},
		{Name: "container_memory_working_set_bytes", Help: "Current working set, in bytes.", LabelKeys: containerLabels},
		{Name: "container_memory_usage_bytes", Help: "Current memory usage including page cache, in bytes.", LabelKeys: containerLabels},
		{Name: "container_processes", Help: "Number of processes running in the container.", LabelKeys: containerLabels},
		{Name: "container_network_receive_bytes_total", Help: "Cumulative bytes received by the pod.", LabelKeys: networkLabels},
		{Name: "container_network_transmit_bytes_total", Help: "Cumulative bytes transmitted by the pod.", LabelKeys: networkLabels},
		{Name: "container_network_receive_errors_total", Help: "Cumulative receive errors of the pod.", LabelKeys: networkLabels},
		{Name: "container_network_transmit_errors_total", Help: "Cumulative transmit errors of the pod.", LabelKeys: networkLabels},
	}
)

func (s *RuntimeService) ListMetricDescriptors(ctx context.Context, _ *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: metricDescriptors}, nil
}

// ListPodSandboxMetrics reports, for every ready pod, its network counters
// and its running containers' CPU, memory and process counts.
func (s *RuntimeService) ListPodSandboxMetrics(ctx context.Context, _ *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	resp := &runtimeapi.ListPodSandboxMetricsResponse{}
	for _, sb := range s.deps.Store.Sandboxes.List(func(sb *store.Sandbox) bool { return sb.State == store.SandboxReady }) {
		st, err := s.podStats(ctx, sb)
		if err != nil {
			continue // the pod went away during the listing
		}
		resp.PodMetrics = append(resp.PodMetrics, podMetrics(sb, st, s.processCounts(ctx, sb)))
	}
	return resp, nil
}

func podMetrics(sb *store.Sandbox, st *runtimeapi.PodSandboxStats, procs map[string]uint64) *runtimeapi.PodSandboxMetrics {
	now := time.Now().UnixNano()
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: sb.ID}
	metric := func(name string, typ runtimeapi.MetricType, labels []string, v uint64) *runtimeapi.Metric {
		return &runtimeapi.Metric{Name: name, Timestamp: now, MetricType: typ, LabelValues: labels, Value: &runtimeapi.UInt64Value{Value: v}}
	}
	net := st.GetLinux().GetNetwork()
	ifaces := append([]*runtimeapi.NetworkInterfaceUsage{}, net.GetInterfaces()...)
	if d := net.GetDefaultInterface(); d != nil {
		ifaces = append([]*runtimeapi.NetworkInterfaceUsage{d}, ifaces...)
	}
	for _, i := range ifaces {
		labels := []string{i.GetName(), sb.Metadata.Name, sb.Metadata.Namespace}
		pm.Metrics = append(pm.Metrics,
			metric("container_network_receive_bytes_total", runtimeapi.MetricType_COUNTER, labels, i.GetRxBytes().GetValue()),
			metric("container_network_transmit_bytes_total", runtimeapi.MetricType_COUNTER, labels, i.GetTxBytes().GetValue()),
			metric("container_network_receive_errors_total", runtimeapi.MetricType_COUNTER, labels, i.GetRxErrors().GetValue()),
			metric("container_network_transmit_errors_total", runtimeapi.MetricType_COUNTER, labels, i.GetTxErrors().GetValue()))
	}
	for _, c := range st.GetLinux().GetContainers() {
		a := c.GetAttributes()
		labels := []string{a.GetMetadata().GetName(), a.GetId(), sb.Metadata.Name, sb.Metadata.Namespace, a.GetAnnotations()["io.kubernetes.cri.image-name"]}
		cm := &runtimeapi.ContainerMetrics{ContainerId: a.GetId(), Metrics: []*runtimeapi.Metric{
			// The CRI value is an integer: whole seconds, as CRI-O reports it.
			metric("container_cpu_usage_seconds_total", runtimeapi.MetricType_COUNTER, labels, c.GetCpu().GetUsageCoreNanoSeconds().GetValue()/uint64(time.Second)),
			metric("container_memory_working_set_bytes", runtimeapi.MetricType_GAUGE, labels, c.GetMemory().GetWorkingSetBytes().GetValue()),
			metric("container_memory_usage_bytes", runtimeapi.MetricType_GAUGE, labels, c.GetMemory().GetUsageBytes().GetValue()),
			metric("container_processes", runtimeapi.MetricType_GAUGE, labels, procs[a.GetId()]),
		}}
		pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
	}
	return pm
}

// processCounts asks the handler for each running container's process count.
func (s *RuntimeService) processCounts(ctx context.Context, sb *store.Sandbox) map[string]uint64 {
	out := map[string]uint64{}
	h, err := s.sandboxHandler(sb)
	if err != nil {
		return out
	}
	for _, c := range s.deps.Store.Containers.List(func(c *store.Container) bool {
		return c.SandboxID == sb.ID && c.State == store.ContainerRunning
	}) {
		if st, err := h.Stats(ctx, c); err == nil {
			out[c.ID] = st.Processes
		}
	}
	return out
}
