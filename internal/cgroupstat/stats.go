package cgroupstat

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Key names one value measured for a container. The CRI metrics (the
// container_* set cadvisor defines) are built from these, and the guest
// agent sends them by these names.
type Key string

// The values, by source: v1 file(s) / v2 file(s).
const (
	// CPU time in nanoseconds: cpuacct.usage, cpuacct.usage_user and
	// cpuacct.usage_sys (cpuacct.stat ticks where those are missing) /
	// cpu.stat usage_usec, user_usec, system_usec.
	CPUUsage  Key = "cpu_usage_ns"
	CPUUser   Key = "cpu_user_ns"
	CPUSystem Key = "cpu_system_ns"
	// CFS bandwidth control, cpu.stat nr_periods, nr_throttled and
	// throttled_time (v1, ns) / throttled_usec (v2).
	CPUPeriods          Key = "cpu_periods"
	CPUThrottledPeriods Key = "cpu_throttled_periods"
	CPUThrottled        Key = "cpu_throttled_ns"

	// Memory in bytes.
	MemoryUsage      Key = "memory_usage_bytes"       // memory.usage_in_bytes / memory.current
	MemoryMaxUsage   Key = "memory_max_usage_bytes"   // memory.max_usage_in_bytes / memory.peak (Linux 5.19+)
	MemoryWorkingSet Key = "memory_working_set_bytes" // usage minus memory.stat total_inactive_file / inactive_file
	MemoryCache      Key = "memory_cache_bytes"       // memory.stat total_cache / file
	MemoryRSS        Key = "memory_rss_bytes"         // memory.stat total_rss / anon
	MemorySwap       Key = "memory_swap_bytes"        // memory.stat total_swap (else memsw.usage - usage) / memory.swap.current
	MemoryMappedFile Key = "memory_mapped_file_bytes" // memory.stat total_mapped_file / file_mapped
	MemoryKernel     Key = "memory_kernel_bytes"      // memory.kmem.usage_in_bytes / memory.stat kernel (or its parts)
	// MemoryFailcnt counts hits of the limit: memory.failcnt / memory.events max.
	MemoryFailcnt Key = "memory_failcnt"
	// Page faults of the cgroup itself and of its hierarchy: memory.stat
	// pgfault, pgmajfault and total_pgfault, total_pgmajfault / pgfault and
	// pgmajfault (v2 counts are hierarchical: both scopes read them).
	PgFault             Key = "pgfault"
	PgMajFault          Key = "pgmajfault"
	PgFaultHierarchy    Key = "pgfault_hierarchy"
	PgMajFaultHierarchy Key = "pgmajfault_hierarchy"
	// OOMKills: memory.oom_control oom_kill / memory.events oom_kill.
	OOMKills Key = "oom_kills"

	// Processes is the number of lines of cgroup.procs; Threads
	// pids.current; ThreadsMax pids.max, zero when unlimited.
	Processes  Key = "processes"
	Threads    Key = "threads"
	ThreadsMax Key = "threads_max"
	// From /proc (ReadProcs): open descriptors and sockets of the
	// cgroup's processes, and the soft RLIMIT_NOFILE of the init process.
	FileDescriptors  Key = "file_descriptors"
	Sockets          Key = "sockets"
	MaxOpenFilesSoft Key = "max_open_files_soft"

	// Pressure stall totals in microseconds, cgroup v2 only:
	// {cpu,memory,io}.pressure "some" (waiting) and "full" (stalled).
	PressureCPUSome    Key = "pressure_cpu_some_us"
	PressureCPUFull    Key = "pressure_cpu_full_us"
	PressureMemorySome Key = "pressure_memory_some_us"
	PressureMemoryFull Key = "pressure_memory_full_us"
	PressureIOSome     Key = "pressure_io_some_us"
	PressureIOFull     Key = "pressure_io_full_us"

	// The container's limits as its cgroup enforces them, as cadvisor
	// reads its container_spec_* values: cpu.shares / cpu.weight converted
	// to shares; cpu.cfs_period_us and cpu.cfs_quota_us / cpu.max (the
	// quota is absent when unlimited); memory.limit_in_bytes,
	// memory.memsw.limit_in_bytes, memory.soft_limit_in_bytes / memory.max,
	// memory.swap.max, memory.min. Memory limits read zero when unlimited.
	SpecCPUShares         Key = "spec_cpu_shares"
	SpecCPUPeriod         Key = "spec_cpu_period_us"
	SpecCPUQuota          Key = "spec_cpu_quota_us"
	SpecMemoryLimit       Key = "spec_memory_limit_bytes"
	SpecMemorySwapLimit   Key = "spec_memory_swap_limit_bytes"
	SpecMemoryReservation Key = "spec_memory_reservation_bytes"
)

// Keys lists every Key.
var Keys = []Key{
	CPUUsage, CPUUser, CPUSystem, CPUPeriods, CPUThrottledPeriods, CPUThrottled,
	MemoryUsage, MemoryMaxUsage, MemoryWorkingSet, MemoryCache, MemoryRSS, MemorySwap, MemoryMappedFile, MemoryKernel,
	MemoryFailcnt, PgFault, PgMajFault, PgFaultHierarchy, PgMajFaultHierarchy, OOMKills,
	Processes, Threads, ThreadsMax, FileDescriptors, Sockets, MaxOpenFilesSoft,
	PressureCPUSome, PressureCPUFull, PressureMemorySome, PressureMemoryFull, PressureIOSome, PressureIOFull,
	SpecCPUShares, SpecCPUPeriod, SpecCPUQuota, SpecMemoryLimit, SpecMemorySwapLimit, SpecMemoryReservation,
}

// Stats are a container cgroup's accounting. A value the kernel does not
// offer (a controller that is not there, an older kernel) is absent from
// Values, never a made-up zero.
type Stats struct {
	Values map[Key]uint64
	// IO is per block device, where the cgroup did I/O.
	IO []IODevice
	// Hugetlb is per huge page size the controller offers.
	Hugetlb []Hugetlb
	// Pids are the processes in cgroup.procs (for ReadProcs; not sent by
	// the agent).
	Pids []int
}

// IODevice is a block device's I/O by the cgroup.
type IODevice struct {
	Major, Minor uint32
	// Device is /dev/NAME as sysfs names the device, else "MAJOR:MINOR".
	Device                string
	ReadBytes, WriteBytes uint64
	Reads, Writes         uint64
}

// Hugetlb is the usage of one huge page size ("2MB", "1GB").
type Hugetlb struct {
	PageSize string
	Usage    uint64
	// MaxUsage is the peak usage, cgroup v1 only (HasMax).
	MaxUsage uint64
	HasMax   bool
}

// Get returns a value and whether it was measured.
func (s *Stats) Get(k Key) (uint64, bool) {
	if s == nil {
		return 0, false
	}
	v, ok := s.Values[k]
	return v, ok
}

func (s *Stats) set(k Key, v uint64) {
	if s.Values == nil {
		s.Values = map[Key]uint64{}
	}
	s.Values[k] = v
}

// setFile sets k from a one-number file, if it reads.
func (s *Stats) setFile(k Key, path string) {
	if v, err := Value(path); err == nil {
		s.set(k, v)
	}
}

// setFrom sets k from m[name], if m has it, times mul.
func (s *Stats) setFrom(k Key, m map[string]uint64, name string, mul uint64) {
	if v, ok := m[name]; ok {
		s.set(k, v*mul)
	}
}

// userHZ is the unit of cpuacct.stat (USER_HZ, 100 on every Linux ABI).
const userHZ = 100

// maxMemory is where a memory limit means "unlimited": v1 reports a page
// multiple just under 2^63; cadvisor reports such limits as zero.
const maxMemory = uint64(1) << 62

func memoryLimit(v uint64) uint64 {
	if v > maxMemory {
		return 0
	}
	return v
}

// ReadV1 reads a container's cgroup v1 hierarchies; dir names the
// container's directory in a controller's hierarchy ("cpu", "cpuacct",
// "memory", "pids", "blkio", "hugetlb"). cpuacct.usage and
// memory.usage_in_bytes must read; everything else is optional.
func ReadV1(dir func(controller string) string) (*Stats, error) {
	s := &Stats{}
	acct := dir("cpuacct")
	usage, err := Value(filepath.Join(acct, "cpuacct.usage"))
	if err != nil {
		return nil, fmt.Errorf("reading cpuacct.usage: %w", err)
	}
	s.set(CPUUsage, usage)
	user, uerr := Value(filepath.Join(acct, "cpuacct.usage_user"))
	sys, serr := Value(filepath.Join(acct, "cpuacct.usage_sys"))
	if uerr == nil && serr == nil {
		s.set(CPUUser, user)
		s.set(CPUSystem, sys)
	} else if st, err := Keyed(filepath.Join(acct, "cpuacct.stat")); err == nil {
		s.setFrom(CPUUser, st, "user", 1e9/userHZ)
		s.setFrom(CPUSystem, st, "system", 1e9/userHZ)
	}

	cpu := dir("cpu")
	if st, err := Keyed(filepath.Join(cpu, "cpu.stat")); err == nil {
		s.setFrom(CPUPeriods, st, "nr_periods", 1)
		s.setFrom(CPUThrottledPeriods, st, "nr_throttled", 1)
		s.setFrom(CPUThrottled, st, "throttled_time", 1)
	}
	s.setFile(SpecCPUShares, filepath.Join(cpu, "cpu.shares"))
	s.setFile(SpecCPUPeriod, filepath.Join(cpu, "cpu.cfs_period_us"))
	if q, err := signedValue(filepath.Join(cpu, "cpu.cfs_quota_us")); err == nil && q > 0 {
		s.set(SpecCPUQuota, uint64(q))
	}

	mem := dir("memory")
	musage, err := Value(filepath.Join(mem, "memory.usage_in_bytes"))
	if err != nil {
		return nil, fmt.Errorf("reading memory.usage_in_bytes: %w", err)
	}
	s.set(MemoryUsage, musage)
	s.setFile(MemoryMaxUsage, filepath.Join(mem, "memory.max_usage_in_bytes"))
	s.setFile(MemoryFailcnt, filepath.Join(mem, "memory.failcnt"))
	s.setFile(MemoryKernel, filepath.Join(mem, "memory.kmem.usage_in_bytes"))
	if ms, err := Keyed(filepath.Join(mem, "memory.stat")); err == nil {
		s.set(MemoryWorkingSet, WorkingSet(musage, ms["total_inactive_file"]))
		s.setFrom(MemoryCache, ms, "total_cache", 1)
		s.setFrom(MemoryRSS, ms, "total_rss", 1)
		s.setFrom(MemoryMappedFile, ms, "total_mapped_file", 1)
		s.setFrom(PgFault, ms, "pgfault", 1)
		s.setFrom(PgMajFault, ms, "pgmajfault", 1)
		s.setFrom(PgFaultHierarchy, ms, "total_pgfault", 1)
		s.setFrom(PgMajFaultHierarchy, ms, "total_pgmajfault", 1)
		if sw, ok := ms["total_swap"]; ok {
			s.set(MemorySwap, sw)
		} else if memsw, err := Value(filepath.Join(mem, "memory.memsw.usage_in_bytes")); err == nil {
			s.set(MemorySwap, memsw-min(memsw, musage))
		}
	}
	if oc, err := Keyed(filepath.Join(mem, "memory.oom_control")); err == nil {
		s.setFrom(OOMKills, oc, "oom_kill", 1)
	}
	for k, f := range map[Key]string{SpecMemoryLimit: "memory.limit_in_bytes", SpecMemorySwapLimit: "memory.memsw.limit_in_bytes", SpecMemoryReservation: "memory.soft_limit_in_bytes"} {
		if v, err := Value(filepath.Join(mem, f)); err == nil {
			s.set(k, memoryLimit(v))
		}
	}

	pids := dir("pids")
	s.setFile(Threads, filepath.Join(pids, "pids.current"))
	s.setFile(ThreadsMax, filepath.Join(pids, "pids.max"))
	if err := s.readProcs(pids); err != nil {
		_ = s.readProcs(mem) // no pids hierarchy
	}

	blkio := dir("blkio")
	s.IO = readBlkioV1(blkio)
	s.Hugetlb = readHugetlb(dir("hugetlb"), ".usage_in_bytes", ".max_usage_in_bytes")
	return s, nil
}

// ReadV2 reads a cgroup v2 directory. cpu.stat (every cgroup has one)
// must read; the files of controllers that are not enabled are absent.
func ReadV2(dir string) (*Stats, error) {
	s := &Stats{}
	cpu, err := Keyed(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return nil, fmt.Errorf("reading cpu.stat: %w", err)
	}
	s.setFrom(CPUUsage, cpu, "usage_usec", 1000)
	s.setFrom(CPUUser, cpu, "user_usec", 1000)
	s.setFrom(CPUSystem, cpu, "system_usec", 1000)
	s.setFrom(CPUPeriods, cpu, "nr_periods", 1)
	s.setFrom(CPUThrottledPeriods, cpu, "nr_throttled", 1)
	s.setFrom(CPUThrottled, cpu, "throttled_usec", 1000)
	if w, err := Value(filepath.Join(dir, "cpu.weight")); err == nil && w > 0 {
		s.set(SpecCPUShares, weightToShares(w))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if p, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				s.set(SpecCPUPeriod, p)
			}
			if q, err := strconv.ParseUint(f[0], 10, 64); err == nil { // "max": unlimited
				s.set(SpecCPUQuota, q)
			}
		}
	}

	if usage, err := Value(filepath.Join(dir, "memory.current")); err == nil {
		s.set(MemoryUsage, usage)
		if ms, err := Keyed(filepath.Join(dir, "memory.stat")); err == nil {
			s.set(MemoryWorkingSet, WorkingSet(usage, ms["inactive_file"]))
			s.setFrom(MemoryCache, ms, "file", 1)
			s.setFrom(MemoryRSS, ms, "anon", 1)
			s.setFrom(MemoryMappedFile, ms, "file_mapped", 1)
			s.setFrom(PgFault, ms, "pgfault", 1)
			s.setFrom(PgMajFault, ms, "pgmajfault", 1)
			s.setFrom(PgFaultHierarchy, ms, "pgfault", 1)
			s.setFrom(PgMajFaultHierarchy, ms, "pgmajfault", 1)
			if k, ok := ms["kernel"]; ok {
				s.set(MemoryKernel, k)
			} else if _, ok := ms["kernel_stack"]; ok {
				// Before Linux 6.1 memory.stat has the parts only.
				s.set(MemoryKernel, ms["kernel_stack"]+ms["pagetables"]+ms["percpu"]+ms["sock"]+ms["slab"])
			}
		}
	}
	s.setFile(MemoryMaxUsage, filepath.Join(dir, "memory.peak"))
	s.setFile(MemorySwap, filepath.Join(dir, "memory.swap.current"))
	if ev, err := Keyed(filepath.Join(dir, "memory.events")); err == nil {
		s.setFrom(MemoryFailcnt, ev, "max", 1)
		s.setFrom(OOMKills, ev, "oom_kill", 1)
	}
	for k, f := range map[Key]string{SpecMemoryLimit: "memory.max", SpecMemorySwapLimit: "memory.swap.max", SpecMemoryReservation: "memory.min"} {
		if v, err := Value(filepath.Join(dir, f)); err == nil {
			s.set(k, memoryLimit(v))
		}
	}

	s.setFile(Threads, filepath.Join(dir, "pids.current"))
	s.setFile(ThreadsMax, filepath.Join(dir, "pids.max"))
	_ = s.readProcs(dir)
	s.readPressure(dir)
	s.IO = readIOStat(filepath.Join(dir, "io.stat"))
	s.Hugetlb = readHugetlb(dir, ".current", "")
	return s, nil
}

// ReadUnified adds what a v1 ("hybrid") host's unified hierarchy knows of
// the cgroup, at dir: its pressure stall totals, and its huge page usage
// where the hugetlb controller is bound there rather than to v1.
func (s *Stats) ReadUnified(dir string) {
	s.readPressure(dir)
	if len(s.Hugetlb) == 0 {
		s.Hugetlb = readHugetlb(dir, ".current", "")
	}
}

// readPressure reads the PSI files of a v2 directory.
func (s *Stats) readPressure(dir string) {
	for _, p := range []struct {
		file       string
		some, full Key
	}{
		{"cpu.pressure", PressureCPUSome, PressureCPUFull},
		{"memory.pressure", PressureMemorySome, PressureMemoryFull},
		{"io.pressure", PressureIOSome, PressureIOFull},
	} {
		if some, full, haveFull, err := readPressureFile(filepath.Join(dir, p.file)); err == nil {
			s.set(p.some, some)
			if haveFull { // Linux < 5.13 has no cpu "full" line
				s.set(p.full, full)
			}
		}
	}
}

// weightToShares converts cpu.weight [1, 10000] back to cpu.shares
// [2, 262144], as cadvisor does (the inverse of runc's conversion, so a
// round trip loses precision).
func weightToShares(w uint64) uint64 {
	w = min(w, 10000)
	return 2 + ((w-1)*262142)/9999
}

// readProcs reads dir/cgroup.procs into Pids and Processes.
func (s *Stats) readProcs(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return err
	}
	s.Pids = s.Pids[:0]
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			s.Pids = append(s.Pids, pid)
		}
	}
	s.set(Processes, uint64(len(s.Pids)))
	return nil
}

// ReadProcs counts the open file descriptors and sockets of the cgroup's
// processes (Pids) under procRoot ("/proc"), and reads the soft open-files
// limit of initPid (the container's first process; zero: none). Processes
// that exit meanwhile are skipped.
func (s *Stats) ReadProcs(procRoot string, initPid int) {
	var fds, sockets uint64
	for _, pid := range s.Pids {
		dir := filepath.Join(procRoot, strconv.Itoa(pid), "fd")
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		fds += uint64(len(ents))
		for _, e := range ents {
			if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				sockets++
			}
		}
	}
	s.set(FileDescriptors, fds)
	s.set(Sockets, sockets)
	if initPid > 0 {
		if soft, ok := maxOpenFiles(filepath.Join(procRoot, strconv.Itoa(initPid), "limits")); ok {
			s.set(MaxOpenFilesSoft, soft)
		}
	}
}

// maxOpenFiles reads the soft "Max open files" of a /proc/PID/limits file;
// false when unlimited or unreadable.
func maxOpenFiles(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, false
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		return v, err == nil
	}
	return 0, false
}

// signedValue reads a one-number file that may be negative.
func signedValue(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readPressureFile reads the "total" of a PSI file's "some" and "full"
// lines.
func readPressureFile(path string) (some, full uint64, haveFull bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, false, err
	}
	defer f.Close()
	var haveSome bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		for _, kv := range fields[1:] {
			v, ok := strings.CutPrefix(kv, "total=")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, 0, false, fmt.Errorf("%s: %w", path, err)
			}
			switch fields[0] {
			case "some":
				some, haveSome = n, true
			case "full":
				full, haveFull = n, true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, false, err
	}
	if !haveSome {
		return 0, 0, false, fmt.Errorf("%s: no \"some\" line", path)
	}
	return some, full, haveFull, nil
}

// readBlkioV1 reads the per-device bytes and operations of the blkio
// hierarchy: the proportional-weight files where the kernel has them,
// else the throttle ones (which count every bio).
func readBlkioV1(dir string) []IODevice {
	devs := map[[2]uint32]*IODevice{}
	for _, pair := range [][2]string{
		{"blkio.io_service_bytes_recursive", "blkio.io_serviced_recursive"},
		{"blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"},
		{"blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced"},
	} {
		okBytes := readBlkioFile(filepath.Join(dir, pair[0]), devs, func(d *IODevice, op string, v uint64) {
			switch op {
			case "Read":
				d.ReadBytes = v
			case "Write":
				d.WriteBytes = v
			}
		})
		okOps := readBlkioFile(filepath.Join(dir, pair[1]), devs, func(d *IODevice, op string, v uint64) {
			switch op {
			case "Read":
				d.Reads = v
			case "Write":
				d.Writes = v
			}
		})
		if okBytes || okOps {
			break
		}
	}
	return sortedDevices(devs)
}

// readBlkioFile parses "MAJ:MIN Op value" lines; false when the file does
// not read.
func readBlkioFile(path string, devs map[[2]uint32]*IODevice, set func(*IODevice, string, uint64)) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue // "Total N"
		}
		d := device(devs, f[0])
		if d == nil {
			continue
		}
		if v, err := strconv.ParseUint(f[2], 10, 64); err == nil {
			set(d, f[1], v)
		}
	}
	return true
}

// readIOStat parses io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N ...".
func readIOStat(path string) []IODevice {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	devs := map[[2]uint32]*IODevice{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		d := device(devs, f[0])
		if d == nil {
			continue
		}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rbytes":
				d.ReadBytes = n
			case "wbytes":
				d.WriteBytes = n
			case "rios":
				d.Reads = n
			case "wios":
				d.Writes = n
			}
		}
	}
	return sortedDevices(devs)
}

// device returns the entry of "MAJ:MIN", adding it; nil if malformed.
func device(devs map[[2]uint32]*IODevice, majmin string) *IODevice {
	a, b, ok := strings.Cut(majmin, ":")
	if !ok {
		return nil
	}
	maj, err1 := strconv.ParseUint(a, 10, 32)
	mnr, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return nil
	}
	k := [2]uint32{uint32(maj), uint32(mnr)}
	if d, ok := devs[k]; ok {
		return d
	}
	d := &IODevice{Major: k[0], Minor: k[1], Device: DeviceName(k[0], k[1])}
	devs[k] = d
	return d
}

func sortedDevices(devs map[[2]uint32]*IODevice) []IODevice {
	out := make([]IODevice, 0, len(devs))
	for _, d := range devs {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b IODevice) int {
		if a.Major != b.Major {
			return int(a.Major) - int(b.Major)
		}
		return int(a.Minor) - int(b.Minor)
	})
	if len(out) == 0 {
		return nil
	}
	return out
}

// SysDevBlock is where DeviceName looks block devices up.
var SysDevBlock = "/sys/dev/block"

// DeviceName is "/dev/NAME" for a block device as sysfs names it, else
// "MAJOR:MINOR".
func DeviceName(major, minor uint32) string {
	id := fmt.Sprintf("%d:%d", major, minor)
	if ue, err := os.ReadFile(filepath.Join(SysDevBlock, id, "uevent")); err == nil {
		for _, line := range strings.Split(string(ue), "\n") {
			if name, ok := strings.CutPrefix(line, "DEVNAME="); ok && name != "" {
				return "/dev/" + name
			}
		}
	}
	return id
}

// readHugetlb reads hugetlb.<size><usage> (and <maxUsage>, v1) for every
// page size in dir.
func readHugetlb(dir, usage, maxUsage string) []Hugetlb {
	files, _ := filepath.Glob(filepath.Join(dir, "hugetlb.*"+usage))
	var out []Hugetlb
	for _, f := range files {
		size := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "hugetlb."), usage)
		if size == "" || strings.Contains(size, ".") { // hugetlb.2MB.rsvd.current
			continue
		}
		u, err := Value(f)
		if err != nil {
			continue
		}
		h := Hugetlb{PageSize: size, Usage: u}
		if maxUsage != "" {
			if m, err := Value(filepath.Join(dir, "hugetlb."+size+maxUsage)); err == nil {
				h.MaxUsage, h.HasMax = m, true
			}
		}
		out = append(out, h)
	}
	return out
}
