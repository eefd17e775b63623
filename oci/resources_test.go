package oci

import (
	"errors"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestCgroupsPath(t *testing.T) {
	tests := []struct {
		parent, driver, want string
		invalid              bool
	}{
		{"", "", "/crivm/crivm-abc", false},
		{"", "cgroupfs", "/crivm/crivm-abc", false},
		{"/kubepods/burstable/pod123", "cgroupfs", "/kubepods/burstable/pod123/crivm-abc", false},
		{"kubepods/besteffort/pod9", "cgroupfs", "/kubepods/besteffort/pod9/crivm-abc", false},
		{"kubepods-burstable-pod123.slice", "cgroupfs", "", true},
		{"kubepods-burstable-pod123.slice", "systemd", "kubepods-burstable-pod123.slice:crivm:abc", false},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice", "systemd", "kubepods-burstable-pod123.slice:crivm:abc", false},
		{"", "systemd", "system.slice:crivm:abc", false},
		{"/kubepods/burstable/pod123", "systemd", "", true},
		{".slice", "systemd", "", true},
		{"", "cgroupv3", "", true},
	}
	for _, tt := range tests {
		got, err := cgroupsPath(tt.parent, tt.driver, "abc")
		if tt.invalid {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("cgroupsPath(%q, %q): err = %v, want InvalidArgument", tt.parent, tt.driver, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("cgroupsPath(%q, %q) = %q, %v; want %q", tt.parent, tt.driver, got, err, tt.want)
		}
	}
}

func TestLinuxResources(t *testing.T) {
	full := &runtimeapi.LinuxContainerResources{
		CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512,
		MemoryLimitInBytes: 256 << 20, CpusetCpus: "0-1", CpusetMems: "0",
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}},
		Unified:        map[string]string{"memory.high": "200M"},
	}
	cpu := &specs.LinuxCPU{Shares: ptr(uint64(512)), Quota: ptr(int64(50000)), Period: ptr(uint64(100000)), Cpus: "0-1", Mems: "0"}
	huge := []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}}
	tests := []struct {
		name    string
		r       *runtimeapi.LinuxContainerResources
		host    Host
		want    *specs.LinuxResources
		invalid bool
	}{
		{name: "nil", want: &specs.LinuxResources{}},
		{name: "pids limit", host: Host{PidsLimit: 1024}, want: &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(int64(1024))}}},
		{name: "v1 with swap accounting: swap = limit", r: full, host: Host{Cgroups: CgroupFeatures{Swap: true, Hugetlb: true}}, want: &specs.LinuxResources{
			CPU: cpu, Memory: &specs.LinuxMemory{Limit: ptr(int64(256 << 20)), Swap: ptr(int64(256 << 20))}, HugepageLimits: huge}},
		// The kubelet sets a hugepage limit on every container; a host
		// without the hugetlb controller must not pass them to runc.
		{name: "no hugetlb controller: hugepage limits dropped", r: full, host: Host{Cgroups: CgroupFeatures{Swap: true}}, want: &specs.LinuxResources{
			CPU: cpu, Memory: &specs.LinuxMemory{Limit: ptr(int64(256 << 20)), Swap: ptr(int64(256 << 20))}}},
		{name: "v1 without swap accounting: no swap", r: full, host: Host{Cgroups: CgroupFeatures{Hugetlb: true}}, want: &specs.LinuxResources{
			CPU: cpu, Memory: &specs.LinuxMemory{Limit: ptr(int64(256 << 20))}, HugepageLimits: huge}},
		{name: "v2: unified passes through", r: full, host: Host{Cgroups: CgroupFeatures{V2: true, Swap: true, Hugetlb: true}}, want: &specs.LinuxResources{
			CPU: cpu, Memory: &specs.LinuxMemory{Limit: ptr(int64(256 << 20)), Swap: ptr(int64(256 << 20))}, HugepageLimits: huge,
			Unified: map[string]string{"memory.high": "200M"}}},
		{name: "explicit swap", r: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 100, MemorySwapLimitInBytes: 300}, host: Host{Cgroups: CgroupFeatures{Swap: true}},
			want: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(100)), Swap: ptr(int64(300))}}},
		{name: "shares only", r: &runtimeapi.LinuxContainerResources{CpuShares: 2},
			want: &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: ptr(uint64(2))}}},
		{name: "negative memory", r: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -5}, invalid: true},
		{name: "hugepage without size", r: &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{Limit: 1}}}, invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var warned bool
			tt.host.Warnf = func(string, ...any) { warned = true }
			got, err := linuxResources(tt.r, &tt.host)
			if tt.invalid {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, %v\nwant %+v", got, err, tt.want)
			}
			if wantWarn := tt.r == full && !tt.host.Cgroups.V2; warned != wantWarn {
				t.Errorf("warned = %v, want %v (unified on v1)", warned, wantWarn)
			}
		})
	}
}

func TestClampOOMScoreAdj(t *testing.T) {
	tests := []struct{ adj, floor, want int }{
		{-998, 0, 0},       // no CAP_SYS_RESOURCE, daemon at 0
		{-997, -999, -997}, // daemon started by systemd at -999
		{500, 0, 500},
		{-998, -1000, -998}, // daemon holds CAP_SYS_RESOURCE
		{1000, 0, 1000},
	}
	for _, tt := range tests {
		if got := clampOOMScoreAdj(tt.adj, tt.floor); got != tt.want {
			t.Errorf("clampOOMScoreAdj(%d, %d) = %d, want %d", tt.adj, tt.floor, got, tt.want)
		}
	}
}

func TestHostProbes(t *testing.T) {
	floor, err := OOMScoreAdjFloor()
	if err != nil {
		t.Fatal(err)
	}
	if floor < -1000 || floor > 1000 {
		t.Errorf("OOMScoreAdjFloor = %d", floor)
	}
	if _, err := ProbeCgroups(); err != nil {
		t.Fatal(err)
	}
}
