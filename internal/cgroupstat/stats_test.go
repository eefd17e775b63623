package cgroupstat

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// The fixtures under testdata are cgroup files as the kernel writes them:
// v1 from a container cgroup on Linux 6.18 (cpu and cpuacct mounted apart),
// v1-old a kernel without cpuacct.usage_{user,sys}, swap accounting or a
// pids hierarchy, v2 a container in a Linux 6.1 guest with every
// controller, v2-min a cgroup without the cpu, pids or io controllers on a
// kernel whose memory.stat has no "kernel" line, unified what a v1 host's
// unified hierarchy holds for a cgroup.
func TestRead(t *testing.T) {
	// sysfs naming 254:0 "vda"; 253:0 and 11:0 are unknown to it.
	sys := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "254:0"), 0o755)
	os.WriteFile(filepath.Join(sys, "254:0", "uevent"), []byte("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n"), 0o644)
	defer func(old string) { SysDevBlock = old }(SysDevBlock)
	SysDevBlock = sys

	v1 := func(root string) func() (*Stats, error) {
		return func() (*Stats, error) {
			return ReadV1(func(c string) string { return filepath.Join("testdata", root, c) })
		}
	}
	v2 := func(root string) func() (*Stats, error) {
		return func() (*Stats, error) { return ReadV2(filepath.Join("testdata", root)) }
	}
	tests := []struct {
		name    string
		read    func() (*Stats, error)
		values  map[Key]uint64
		io      []IODevice
		hugetlb []Hugetlb
		pids    []int
	}{
		{
			name: "v1",
			read: v1("v1"),
			values: map[Key]uint64{
				CPUUsage: 176119904, CPUUser: 168000000, CPUSystem: 4000000,
				CPUPeriods: 4, CPUThrottledPeriods: 3, CPUThrottled: 118445875,
				SpecCPUShares: 1024, SpecCPUPeriod: 100000, SpecCPUQuota: 50000,
				MemoryUsage: 1900544, MemoryMaxUsage: 2621440, MemoryFailcnt: 0, MemoryKernel: 8192,
				MemoryWorkingSet: 1900544 - 1118208, MemoryCache: 1216512, MemoryRSS: 413696, MemoryMappedFile: 270336,
				MemorySwap: 4096, PgFault: 1520, PgMajFault: 3, PgFaultHierarchy: 1611, PgMajFaultHierarchy: 4, OOMKills: 1,
				// memsw and soft limits are "unlimited" (9223372036854771712).
				SpecMemoryLimit: 64 << 20, SpecMemorySwapLimit: 0, SpecMemoryReservation: 0,
				Threads: 2, ThreadsMax: 100, Processes: 2,
			},
			io:      []IODevice{{Major: 254, Minor: 0, Device: "/dev/vda", ReadBytes: 1 << 20, WriteBytes: 20 << 20, Reads: 16, Writes: 160}},
			hugetlb: []Hugetlb{{PageSize: "2MB", Usage: 4 << 20, MaxUsage: 6 << 20, HasMax: true}},
			pids:    []int{4242, 4250},
		},
		{
			name: "v1 old kernel",
			read: v1("v1-old"),
			values: map[Key]uint64{
				// cpuacct.stat is in USER_HZ ticks.
				CPUUsage: 5e9, CPUUser: 3e9, CPUSystem: 1.5e9,
				MemoryUsage: 1000, MemoryWorkingSet: 0, MemoryRSS: 10,
			},
		},
		{
			// A hybrid host's unified hierarchy adds PSI (here of a kernel
			// without a cpu "full" line, and no io.pressure) and hugetlb.
			name: "v1 with the unified hierarchy",
			read: func() (*Stats, error) {
				s, err := v1("v1-old")()
				if err == nil {
					s.ReadUnified(filepath.Join("testdata", "unified"))
				}
				return s, err
			},
			values: map[Key]uint64{
				CPUUsage: 5e9, CPUUser: 3e9, CPUSystem: 1.5e9,
				MemoryUsage: 1000, MemoryWorkingSet: 0, MemoryRSS: 10,
				PressureCPUSome: 777, PressureMemorySome: 5, PressureMemoryFull: 4,
			},
			hugetlb: []Hugetlb{{PageSize: "1GB", Usage: 1 << 30}},
		},
		{
			name: "v2",
			read: v2("v2"),
			values: map[Key]uint64{
				CPUUsage: 2531245000, CPUUser: 2103871000, CPUSystem: 427374000,
				CPUPeriods: 58, CPUThrottledPeriods: 41, CPUThrottled: 3051824000,
				// cpu.weight 39 is what runc writes for 1024 shares.
				SpecCPUShares: 998, SpecCPUPeriod: 100000, SpecCPUQuota: 20000,
				MemoryUsage: 4325376, MemoryMaxUsage: 9097216, MemoryWorkingSet: 4325376 - 2342912,
				MemoryCache: 2650112, MemoryRSS: 1363968, MemoryMappedFile: 1105920, MemoryKernel: 282624, MemorySwap: 0,
				MemoryFailcnt: 7, OOMKills: 1, PgFault: 4118, PgMajFault: 12, PgFaultHierarchy: 4118, PgMajFaultHierarchy: 12,
				SpecMemoryLimit: 64 << 20, SpecMemorySwapLimit: 0, SpecMemoryReservation: 0,
				Threads: 3, ThreadsMax: 0, Processes: 2,
				PressureCPUSome: 1523012, PressureCPUFull: 1410388, PressureMemorySome: 2307, PressureMemoryFull: 2001,
				PressureIOSome: 15033, PressureIOFull: 14987,
			},
			io: []IODevice{
				{Major: 11, Minor: 0, Device: "11:0"},
				{Major: 253, Minor: 0, Device: "253:0", ReadBytes: 1236992, WriteBytes: 4096, Reads: 57, Writes: 1},
			},
			hugetlb: []Hugetlb{{PageSize: "2MB"}},
			pids:    []int{311, 318},
		},
		{
			name: "v2 without controllers",
			read: v2("v2-min"),
			values: map[Key]uint64{
				CPUUsage: 1000000, CPUUser: 600000, CPUSystem: 400000,
				MemoryUsage: 8192, MemoryWorkingSet: 8192, MemoryCache: 0, MemoryRSS: 4096,
				PgFault: 5, PgMajFault: 0, PgFaultHierarchy: 5, PgMajFaultHierarchy: 0,
				// kernel_stack + pagetables + percpu + sock + slab.
				MemoryKernel: 16384 + 4096 + 8 + 2048,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.read()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range slices.Sorted(maps.Keys(mergeKeys(s.Values, tt.values))) {
				got, gok := s.Values[k]
				want, wok := tt.values[k]
				if got != want || gok != wok {
					t.Errorf("%s = %d (present %v), want %d (present %v)", k, got, gok, want, wok)
				}
			}
			if !reflect.DeepEqual(s.IO, tt.io) {
				t.Errorf("IO = %+v, want %+v", s.IO, tt.io)
			}
			if !reflect.DeepEqual(s.Hugetlb, tt.hugetlb) {
				t.Errorf("Hugetlb = %+v, want %+v", s.Hugetlb, tt.hugetlb)
			}
			if !slices.Equal(s.Pids, tt.pids) {
				t.Errorf("Pids = %v, want %v", s.Pids, tt.pids)
			}
		})
	}
}

func mergeKeys(a, b map[Key]uint64) map[Key]uint64 {
	m := maps.Clone(a)
	maps.Copy(m, b)
	return m
}

func TestReadErrors(t *testing.T) {
	if _, err := ReadV2(filepath.Join("testdata", "none")); err == nil {
		t.Error("ReadV2 of a missing directory: no error")
	}
	if _, err := ReadV1(func(string) string { return filepath.Join("testdata", "none") }); err == nil {
		t.Error("ReadV1 without cpuacct.usage: no error")
	}
	// Every fixture value is a known key.
	for _, dir := range []string{"v2", "v2-min"} {
		s, _ := ReadV2(filepath.Join("testdata", dir))
		for k := range s.Values {
			if !slices.Contains(Keys, k) {
				t.Errorf("%s is not in Keys", k)
			}
		}
	}
}

func TestReadProcs(t *testing.T) {
	proc := t.TempDir()
	mk := func(pid string, fds map[string]string, limits string) {
		dir := filepath.Join(proc, pid, "fd")
		os.MkdirAll(dir, 0o755)
		for fd, target := range fds {
			if err := os.Symlink(target, filepath.Join(dir, fd)); err != nil {
				t.Fatal(err)
			}
		}
		if limits != "" {
			os.WriteFile(filepath.Join(proc, pid, "limits"), []byte(limits), 0o644)
		}
	}
	const header = "Limit                     Soft Limit           Hard Limit           Units     \n" +
		"Max processes             63459                63459                processes \n"
	mk("10", map[string]string{"0": "/dev/null", "1": "socket:[4711]", "2": "pipe:[12]", "3": "anon_inode:[eventpoll]"},
		header+"Max open files            1024                 1048576              files     \n")
	mk("11", map[string]string{"0": "socket:[4712]"}, header+"Max open files            unlimited            unlimited            files     \n")
	tests := []struct {
		name    string
		pids    []int
		init    int
		fds     uint64
		sockets uint64
		soft    uint64
		hasSoft bool
	}{
		{"two processes", []int{10, 11, 99}, 10, 5, 2, 1024, true},
		{"unlimited init", []int{11}, 11, 1, 1, 0, false},
		{"no init", []int{10}, 0, 4, 1, 0, false},
		{"init gone", nil, 99, 0, 0, 0, false},
	}
	for _, tt := range tests {
		s := &Stats{Pids: tt.pids}
		s.ReadProcs(proc, tt.init)
		fds, _ := s.Get(FileDescriptors)
		sockets, _ := s.Get(Sockets)
		soft, hasSoft := s.Get(MaxOpenFilesSoft)
		if fds != tt.fds || sockets != tt.sockets || soft != tt.soft || hasSoft != tt.hasSoft {
			t.Errorf("%s: fds %d sockets %d soft %d (%v), want %d %d %d (%v)", tt.name, fds, sockets, soft, hasSoft, tt.fds, tt.sockets, tt.soft, tt.hasSoft)
		}
	}
}

func TestWeightToShares(t *testing.T) {
	// runc writes weight = 1 + ((shares-2)*9999)/262142.
	for _, tt := range []struct{ weight, shares uint64 }{{1, 2}, {39, 998}, {100, 2597}, {10000, 262144}} {
		if got := weightToShares(tt.weight); got != tt.shares {
			t.Errorf("weight %d: %d shares, want %d", tt.weight, got, tt.shares)
		}
	}
}
