package server

import "testing"

func TestNanoCores(t *testing.T) {
	s := &RuntimeService{}
	tests := []struct {
		name    string
		at      int64
		cpu     uint64
		want    uint64
		wantNil bool
	}{
		{"first sample", 1_000_000_000, 5_000_000_000, 0, true},
		{"half a core for a second", 2_000_000_000, 5_500_000_000, 500_000_000, false},
		{"two cores for half a second", 2_500_000_000, 6_500_000_000, 2_000_000_000, false},
		{"usage went back: a new boundary", 3_000_000_000, 100, 0, true},
		{"same instant", 3_000_000_000, 200, 0, true},
	}
	for _, tt := range tests {
		got := s.nanoCores("pod", tt.at, tt.cpu)
		if (got == nil) != tt.wantNil || (got != nil && got.GetValue() != tt.want) {
			t.Errorf("%s: nanoCores = %v, want %d (nil %v)", tt.name, got, tt.want, tt.wantNil)
		}
	}
}
