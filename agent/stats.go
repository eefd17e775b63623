package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/internal/errdefs"
)

// cgroupRoot is where the agent mounts the cgroup v2 hierarchy.
const cgroupRoot = "/sys/fs/cgroup"

// StatsContainer reads the container's cgroup v2 files, and counts its
// processes' open files in the guest's /proc.
func (s *Service) StatsContainer(ctx context.Context, req *api.StatsContainerRequest) (*api.StatsContainerResponse, error) {
	c, err := s.lookup(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if c.cgroup == "" {
		return nil, errdefs.FailedPrecondition("stats of %s: its cgroup is unknown", c.id)
	}
	r, err := cgroupStats(c.cgroup, c.init.pid)
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", c.id, err)
	}
	return r, nil
}

// cgroupStats reads the stats of one cgroup v2 directory whose first
// process is initPid. Files of controllers that are not enabled read as
// zero in the fixed fields and are absent from Values.
func cgroupStats(dir string, initPid int) (*api.StatsContainerResponse, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, errdefs.NotFound("cgroup %s: %w", dir, err)
	}
	st, err := cgroupstat.ReadV2(dir)
	if err != nil {
		return nil, err
	}
	st.ReadProcs("/proc", initPid)
	r := &api.StatsContainerResponse{TimestampUnixNano: time.Now().UnixNano(), Values: map[string]uint64{}}
	for k, v := range st.Values {
		r.Values[string(k)] = v
	}
	r.CpuUsageNs, _ = st.Get(cgroupstat.CPUUsage)
	r.CpuUserNs, _ = st.Get(cgroupstat.CPUUser)
	r.CpuSystemNs, _ = st.Get(cgroupstat.CPUSystem)
	r.MemoryUsageBytes, _ = st.Get(cgroupstat.MemoryUsage)
	r.MemoryWorkingSetBytes, _ = st.Get(cgroupstat.MemoryWorkingSet)
	r.MemoryRssBytes, _ = st.Get(cgroupstat.MemoryRSS)
	r.MemoryLimitBytes, _ = cgroupstat.Value(filepath.Join(dir, "memory.max"))
	r.OomKills, _ = st.Get(cgroupstat.OOMKills)
	r.PidsCurrent, _ = st.Get(cgroupstat.Threads)
	for _, d := range st.IO {
		r.Io = append(r.Io, &api.IODeviceStats{Major: d.Major, Minor: d.Minor, Device: d.Device,
			ReadBytes: d.ReadBytes, WriteBytes: d.WriteBytes, Reads: d.Reads, Writes: d.Writes})
	}
	for _, h := range st.Hugetlb {
		r.Hugetlb = append(r.Hugetlb, &api.HugetlbStats{PageSize: h.PageSize, UsageBytes: h.Usage})
	}
	return r, nil
}

// oomKills reads memory.events oom_kill.
func oomKills(dir string) (uint64, error) {
	ev, err := cgroupstat.Keyed(filepath.Join(dir, "memory.events"))
	if err != nil {
		return 0, err
	}
	return ev["oom_kill"], nil
}
