package oci

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestCapabilities(t *testing.T) {
	without := func(drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(allCapabilities), func(c string) bool { return slices.Contains(drop, c) })
	}
	tests := []struct {
		name    string
		c       *runtimeapi.Capability
		want    []string
		ambient []string
		held    []string // Host.Capabilities; nil: every capability
		invalid bool
	}{
		{name: "nil: CRI-O defaults", c: nil, want: inCapabilityOrder(defaultCapabilities)},
		{name: "add with and without prefix, any case", c: &runtimeapi.Capability{AddCapabilities: []string{"net_admin", "CAP_SYS_TIME"}},
			want: inCapabilityOrder(append(slices.Clone(defaultCapabilities), "CAP_NET_ADMIN", "CAP_SYS_TIME"))},
		{name: "drop", c: &runtimeapi.Capability{DropCapabilities: []string{"KILL", "cap_chown"}},
			want: inCapabilityOrder(slices.DeleteFunc(slices.Clone(defaultCapabilities), func(c string) bool { return c == "CAP_KILL" || c == "CAP_CHOWN" }))},
		{name: "drop wins over add", c: &runtimeapi.Capability{AddCapabilities: []string{"NET_RAW"}, DropCapabilities: []string{"NET_RAW"}},
			want: inCapabilityOrder(defaultCapabilities)},
		{name: "drop ALL, add one", c: &runtimeapi.Capability{AddCapabilities: []string{"NET_BIND_SERVICE"}, DropCapabilities: []string{"ALL"}},
			want: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "add ALL, drop one", c: &runtimeapi.Capability{AddCapabilities: []string{"all"}, DropCapabilities: []string{"CHOWN"}},
			want: without("CAP_CHOWN")},
		{name: "add ALL and drop ALL", c: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"ALL"}}, want: nil},
		{name: "ambient", c: &runtimeapi.Capability{AddCapabilities: []string{"NET_RAW"}, AddAmbientCapabilities: []string{"NET_RAW"}},
			want: inCapabilityOrder(append(slices.Clone(defaultCapabilities), "CAP_NET_RAW")), ambient: []string{"CAP_NET_RAW"}},
		{name: "ambient outside the set", c: &runtimeapi.Capability{AddAmbientCapabilities: []string{"SYS_ADMIN"}}, invalid: true},
		{name: "unknown add", c: &runtimeapi.Capability{AddCapabilities: []string{"CAP_FLY"}}, invalid: true},
		{name: "unknown drop", c: &runtimeapi.Capability{DropCapabilities: []string{"NET_RAWW"}}, invalid: true},
		// The runtime lacks CAP_SYS_RESOURCE (these build machines): "ALL"
		// grants what it holds, not what Linux defines.
		{name: "add ALL without SYS_RESOURCE held", c: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}}, held: noSysResource,
			want: without("CAP_SYS_RESOURCE")},
		{name: "add ALL, drop one, without SYS_RESOURCE held", c: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"KILL"}}, held: noSysResource,
			want: without("CAP_SYS_RESOURCE", "CAP_KILL")},
		{name: "defaults do not depend on what is held", c: nil, held: []string{"CAP_CHOWN"}, want: inCapabilityOrder(defaultCapabilities)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := capabilities(tt.c, tt.held)
			if tt.invalid {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, set := range map[string][]string{"bounding": got.Bounding, "effective": got.Effective, "permitted": got.Permitted} {
				if !slices.Equal(set, tt.want) {
					t.Errorf("%s = %v, want %v", name, set, tt.want)
				}
			}
			if !slices.Equal(got.Ambient, tt.ambient) || !slices.Equal(got.Inheritable, tt.ambient) {
				t.Errorf("ambient/inheritable = %v/%v, want %v", got.Ambient, got.Inheritable, tt.ambient)
			}
		})
	}
}

func TestPrivilegedCapabilities(t *testing.T) {
	tests := []struct {
		name string
		held []string
		want []string
	}{
		{"nil: every capability (a VM guest)", nil, allCapabilities},
		{"the runtime's bounding set", noSysResource, slices.DeleteFunc(slices.Clone(allCapabilities), func(c string) bool { return c == "CAP_SYS_RESOURCE" })},
		{"held out of order", []string{"CAP_SYS_ADMIN", "CAP_CHOWN"}, []string{"CAP_CHOWN", "CAP_SYS_ADMIN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := privilegedCapabilities(tt.held)
			if !slices.Equal(got.Bounding, tt.want) || !slices.Equal(got.Bounding, got.Effective) || !slices.Equal(got.Bounding, got.Permitted) {
				t.Errorf("privileged sets: %+v, want %v", got, tt.want)
			}
			if len(got.Inheritable) != 0 || len(got.Ambient) != 0 {
				t.Errorf("privileged inheritable/ambient not empty: %+v", got)
			}
		})
	}
}

// noSysResource is the bounding set of root on the project's build
// machines: CapBnd 0x1fffeffffff, every capability but CAP_SYS_RESOURCE.
var noSysResource = capabilitiesInMask(0x1fffeffffff)

func TestCapabilitiesInMask(t *testing.T) {
	tests := []struct {
		mask uint64
		want []string
	}{
		{0, []string{}},
		{0x1fffeffffff, slices.DeleteFunc(slices.Clone(allCapabilities), func(c string) bool { return c == "CAP_SYS_RESOURCE" })},
		{1<<0 | 1<<21, []string{"CAP_CHOWN", "CAP_SYS_ADMIN"}},
		// Bits above CAP_CHECKPOINT_RESTORE (40) are not named.
		{1<<41 | 1<<63 | 1, []string{"CAP_CHOWN"}},
	}
	for _, tt := range tests {
		if got := capabilitiesInMask(tt.mask); !slices.Equal(got, tt.want) {
			t.Errorf("capabilitiesInMask(%#x) = %v, want %v", tt.mask, got, tt.want)
		}
	}
}

// TestRuntimeCapabilities reads this process's own bounding set.
func TestRuntimeCapabilities(t *testing.T) {
	got, err := RuntimeCapabilities()
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	bnd, err := statusField(status, "CapBnd")
	if err != nil {
		t.Fatal(err)
	}
	mask, err := strconv.ParseUint(bnd, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	for bit, c := range allCapabilities {
		if held := mask&(1<<bit) != 0; held != slices.Contains(got, c) {
			t.Errorf("%s: in CapBnd %v, in RuntimeCapabilities %v", c, held, !held)
		}
	}
}
