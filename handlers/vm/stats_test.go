package vm

import (
	"reflect"
	"strings"
	"testing"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/cgroupstat"
)

// A hostile guest's stats reply: unknown keys, a flood of devices, label
// injection in names.
func TestGuestStats(t *testing.T) {
	r := &api.StatsContainerResponse{
		Values: map[string]uint64{"cpu_usage_ns": 5, "file_descriptors": 3, "not_a_key": 9, "": 1},
		Hugetlb: []*api.HugetlbStats{
			{PageSize: "2MB", UsageBytes: 1},
			{PageSize: "1GB\"} evil{", UsageBytes: 2},
		},
	}
	for i := range 100 {
		dev := "/dev/vda"
		if i == 1 {
			dev = strings.Repeat("x", 100)
		}
		r.Io = append(r.Io, &api.IODeviceStats{Major: 253, Minor: uint32(i), Device: dev, ReadBytes: 7})
	}
	d := guestStats(r)
	if want := map[cgroupstat.Key]uint64{cgroupstat.CPUUsage: 5, cgroupstat.FileDescriptors: 3}; !reflect.DeepEqual(d.Values, want) {
		t.Errorf("values %v, want %v", d.Values, want)
	}
	if len(d.IO) != maxGuestIODevices || d.IO[0].Device != "/dev/vda" || d.IO[1].Device != "253:1" || d.IO[0].ReadBytes != 7 {
		t.Errorf("io: %d devices, first two %+v", len(d.IO), d.IO[:2])
	}
	if want := []cgroupstat.Hugetlb{{PageSize: "2MB", Usage: 1}}; !reflect.DeepEqual(d.Hugetlb, want) {
		t.Errorf("hugetlb %+v, want %+v", d.Hugetlb, want)
	}
}
