package vm

import (
	"strings"
	"testing"

	"github.com/crivm/crivm/agentproxy/api"
)

func TestGuestPhases(t *testing.T) {
	many := make([]*api.Phase, 40)
	for i := range many {
		many[i] = &api.Phase{Name: "p", Ms: 1}
	}
	tests := []struct {
		name   string
		phases []*api.Phase
		want   string
	}{
		{"none", nil, ""},
		{"rounded", []*api.Phase{{Name: "cgroup", Ms: 6.657}, {Name: "fork", Ms: 9.386}}, "cgroup=6.7ms fork=9.4ms"},
		{"sub-millisecond", []*api.Phase{{Name: "lookup", Ms: 0.42}}, "lookup=400µs"},
		{"a hostile name cannot forge fields", []*api.Phase{{Name: "x\nlevel=ERROR msg=\"forged\"", Ms: 1}}, "xlevelERRORmsgforged=1ms"},
		{"a long name is cut", []*api.Phase{{Name: strings.Repeat("a", 100), Ms: 2}}, strings.Repeat("a", maxGuestPhaseName) + "=2ms"},
		{"at most maxGuestPhases", many, strings.TrimSpace(strings.Repeat("p=1ms ", maxGuestPhases))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := guestPhases(tt.phases); got != tt.want {
				t.Errorf("guestPhases = %q, want %q", got, tt.want)
			}
		})
	}
}
