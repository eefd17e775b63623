package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
)

func (s *RuntimeService) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	c, err := s.deps.Store.Containers.Get(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, err := s.containerStats(ctx, s.refreshContainer(ctx, c))
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: st}, nil
}

func (s *RuntimeService) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	ctrs := s.deps.Store.Containers.List(func(c *store.Container) bool {
		return (f.GetId() == "" || strings.HasPrefix(c.ID, f.GetId())) &&
			(f.GetPodSandboxId() == "" || strings.HasPrefix(c.SandboxID, f.GetPodSandboxId())) &&
			labelsMatch(c.Labels, f.GetLabelSelector())
	})
	resp := &runtimeapi.ListContainerStatsResponse{}
	for _, c := range ctrs {
		c = s.refreshContainer(ctx, c)
		if c.State != store.ContainerRunning {
			continue
		}
		st, err := s.containerStats(ctx, c)
		if err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				continue // removed meanwhile
			}
			return nil, err
		}
		resp.Stats = append(resp.Stats, st)
	}
	return resp, nil
}

// containerStats reads cgroup usage through the handler (only for a running
// container) and the writable layer's size from storage.
func (s *RuntimeService) containerStats(ctx context.Context, c *store.Container) (*runtimeapi.ContainerStats, error) {
	now := time.Now().UnixNano()
	st := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id: c.ID, Metadata: &runtimeapi.ContainerMetadata{Name: c.Metadata.Name, Attempt: c.Metadata.Attempt},
			Labels: c.Labels, Annotations: c.Annotations,
		},
	}
	if c.State == store.ContainerRunning {
		sb, err := s.deps.Store.Sandboxes.Get(c.SandboxID)
		if err != nil {
			return nil, err
		}
		h, err := s.sandboxHandler(sb)
		if err != nil {
			return nil, err
		}
		u, err := h.Stats(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("reading stats of %s: %w", c.ID, err)
		}
		ts := u.Timestamp.UnixNano()
		st.Cpu = &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: u.CPUUsageNanos}}
		st.Memory = &runtimeapi.MemoryUsage{Timestamp: ts,
			WorkingSetBytes: &runtimeapi.UInt64Value{Value: u.MemoryWorkingSetBytes},
			UsageBytes:      &runtimeapi.UInt64Value{Value: u.MemoryUsageBytes}}
	}
	if n, err := s.deps.Images.WritableLayerBytes(c.ID); err == nil {
		st.WritableLayer = &runtimeapi.FilesystemUsage{Timestamp: now,
			FsId:      &runtimeapi.FilesystemIdentifier{Mountpoint: s.deps.Config().StorageRoot()},
			UsedBytes: &runtimeapi.UInt64Value{Value: n}}
	}
	return st, nil
}

func (s *RuntimeService) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	sb, err := s.deps.Store.Sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	st, err := s.podStats(ctx, sb)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: st}, nil
}

func (s *RuntimeService) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	resp := &runtimeapi.ListPodSandboxStatsResponse{}
	for _, sb := range s.deps.Store.Sandboxes.List(func(sb *store.Sandbox) bool {
		return sb.State == store.SandboxReady && (f.GetId() == "" || strings.HasPrefix(sb.ID, f.GetId())) &&
			labelsMatch(sb.Labels, f.GetLabelSelector())
	}) {
		st, err := s.podStats(ctx, sb)
		if err != nil {
			continue // the pod went away during the listing
		}
		resp.Stats = append(resp.Stats, st)
	}
	return resp, nil
}

// podStats reports the pod: its boundary's own cost where the handler
// has one (a VM pod's QEMU and virtiofsd, host-side), else the sum of its
// running containers; usage_nano_cores from the previous sample; and the
// pod netns's interface counters.
func (s *RuntimeService) podStats(ctx context.Context, sb *store.Sandbox) (*runtimeapi.PodSandboxStats, error) {
	now := time.Now().UnixNano()
	var cpu, ws, usage uint64
	var ctrStats []*runtimeapi.ContainerStats
	for _, c := range s.deps.Store.Containers.List(func(c *store.Container) bool { return c.SandboxID == sb.ID }) {
		c = s.refreshContainer(ctx, c)
		if c.State != store.ContainerRunning {
			continue
		}
		st, err := s.containerStats(ctx, c)
		if err != nil {
			continue
		}
		ctrStats = append(ctrStats, st)
		cpu += st.GetCpu().GetUsageCoreNanoSeconds().GetValue()
		ws += st.GetMemory().GetWorkingSetBytes().GetValue()
		usage += st.GetMemory().GetUsageBytes().GetValue()
	}
	if h, err := s.sandboxHandler(sb); err == nil && sb.State == store.SandboxReady {
		if own, err := h.SandboxStats(ctx, sb); err != nil {
			log.G(ctx).Debug("reading the pod's own usage", "sandbox", sb.ID, "err", err)
		} else if own != nil {
			cpu, ws, usage = own.CPUUsageNanos, own.MemoryWorkingSetBytes, own.MemoryUsageBytes
		}
	}
	linux := &runtimeapi.LinuxPodSandboxStats{
		Cpu: &runtimeapi.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cpu},
			UsageNanoCores: s.nanoCores(sb.ID, now, cpu)},
		Memory:     &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtimeapi.UInt64Value{Value: ws}, UsageBytes: &runtimeapi.UInt64Value{Value: usage}},
		Containers: ctrStats,
	}
	if sb.NetNSPath != "" && sb.State == store.SandboxReady {
		if ifs, err := netDevStats(sb.NetNSPath); err == nil {
			linux.Network = &runtimeapi.NetworkUsage{Timestamp: now}
			for i, ifc := range ifs {
				if i == 0 {
					linux.Network.DefaultInterface = ifc
				} else {
					linux.Network.Interfaces = append(linux.Network.Interfaces, ifc)
				}
			}
		}
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: sb.ID, Metadata: podMetadata(sb.Metadata), Labels: sb.Labels, Annotations: sb.Annotations},
		Linux:      linux,
	}, nil
}

// cpuSample is a cumulative CPU time at a time.
type cpuSample struct{ at, cpu uint64 }

// nanoCores is the CPU a pod used since its previous sample, in
// nanocores (nil on its first, or when its usage went backwards: a new
// boundary); the sample replaces the previous one.
func (s *RuntimeService) nanoCores(id string, now int64, cpu uint64) *runtimeapi.UInt64Value {
	prev, ok := s.podCPU.Swap(id, cpuSample{at: uint64(now), cpu: cpu})
	if !ok {
		return nil
	}
	p := prev.(cpuSample)
	if uint64(now) <= p.at || cpu < p.cpu {
		return nil
	}
	return &runtimeapi.UInt64Value{Value: (cpu - p.cpu) * 1e9 / (uint64(now) - p.at)}
}

// netDevStats reads rx/tx bytes and errors of the netns's interfaces (lo
// excluded), eth0 first.
func netDevStats(nsPath string) ([]*runtimeapi.NetworkInterfaceUsage, error) {
	devs, err := netDev(nsPath)
	if err != nil {
		return nil, err
	}
	var out []*runtimeapi.NetworkInterfaceUsage
	for _, d := range devs {
		out = append(out, &runtimeapi.NetworkInterfaceUsage{Name: d.name,
			RxBytes: &runtimeapi.UInt64Value{Value: d.rxBytes}, RxErrors: &runtimeapi.UInt64Value{Value: d.rxErrors},
			TxBytes: &runtimeapi.UInt64Value{Value: d.txBytes}, TxErrors: &runtimeapi.UInt64Value{Value: d.txErrors}})
	}
	return out, nil
}

// netDev reads the counters of the interfaces of the netns at nsPath (the
// host's for "", a host-network pod), lo excluded, eth0 first.
// /proc/thread-self/net/dev follows the thread's netns; /sys/class/net
// would show the netns sysfs was mounted in.
func netDev(nsPath string) ([]netDevice, error) {
	var data []byte
	read := func() error {
		var err error
		data, err = os.ReadFile("/proc/thread-self/net/dev")
		return err
	}
	var err error
	if nsPath == "" {
		err = read()
	} else {
		err = netns.Do(nsPath, read)
	}
	if err != nil {
		return nil, err
	}
	return parseNetDev(data), nil
}

// parseNetDev parses /proc/net/dev: two header lines, then "name:" and
// eight receive fields (bytes packets errs drop fifo frame compressed
// multicast) and eight transmit ones (bytes packets errs drop ...).
func parseNetDev(data []byte) []netDevice {
	var out []netDevice
	lines := strings.Split(string(data), "\n")
	if len(lines) < 2 {
		return nil
	}
	for _, line := range lines[2:] {
		name, rest, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if !ok || name == "lo" || len(f) < 12 {
			continue
		}
		n := func(i int) uint64 {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			return v
		}
		d := netDevice{name: name,
			rxBytes: n(0), rxPackets: n(1), rxErrors: n(2), rxDropped: n(3),
			txBytes: n(8), txPackets: n(9), txErrors: n(10), txDropped: n(11)}
		if name == "eth0" {
			out = append([]netDevice{d}, out...)
		} else {
			out = append(out, d)
		}
	}
	return out
}
