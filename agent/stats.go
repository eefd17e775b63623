package agent

import (
	"context"
	"fmt"
	"github.com/crivm/crivm/internal/cgroupstat"
	"os"
	"path/filepath"
	"time"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
)

// cgroupRoot is where the agent mounts the cgroup v2 hierarchy.
const cgroupRoot = "/sys/fs/cgroup"

// StatsContainer reads the container's cgroup v2 files.
func (s *Service) StatsContainer(ctx context.Context, req *api.StatsContainerRequest) (*api.StatsContainerResponse, error) {
	c, err := s.lookup(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if c.cgroup == "" {
		return nil, errdefs.FailedPrecondition("stats of %s: its cgroup is unknown", c.id)
	}
	r, err := cgroupStats(c.cgroup)
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", c.id, err)
	}
	return r, nil
}

// cgroupStats reads the stats of one cgroup v2 directory. Files of
// controllers that are not enabled read as zero.
func cgroupStats(dir string) (*api.StatsContainerResponse, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, errdefs.NotFound("cgroup %s: %w", dir, err)
	}
	r := &api.StatsContainerResponse{TimestampUnixNano: time.Now().UnixNano()}
	if cpu, err := cgroupstat.Keyed(filepath.Join(dir, "cpu.stat")); err == nil {
		r.CpuUsageNs = cpu["usage_usec"] * 1000
		r.CpuUserNs = cpu["user_usec"] * 1000
		r.CpuSystemNs = cpu["system_usec"] * 1000
	}
	r.MemoryUsageBytes, _ = cgroupstat.Value(filepath.Join(dir, "memory.current"))
	if ms, err := cgroupstat.Keyed(filepath.Join(dir, "memory.stat")); err == nil {
		r.MemoryRssBytes = ms["anon"]
		r.MemoryWorkingSetBytes = cgroupstat.WorkingSet(r.MemoryUsageBytes, ms["inactive_file"])
	}
	r.MemoryLimitBytes, _ = cgroupstat.Value(filepath.Join(dir, "memory.max"))
	r.OomKills, _ = oomKills(dir)
	r.PidsCurrent, _ = cgroupstat.Value(filepath.Join(dir, "pids.current"))
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
