package oci

import (
	"errors"
	"slices"
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := capabilities(tt.c)
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
	got := privilegedCapabilities()
	if len(got.Bounding) != 41 || !slices.Equal(got.Bounding, got.Effective) || !slices.Equal(got.Bounding, got.Permitted) {
		t.Errorf("privileged sets: %+v", got)
	}
	if len(got.Inheritable) != 0 || len(got.Ambient) != 0 {
		t.Errorf("privileged inheritable/ambient not empty: %+v", got)
	}
}
