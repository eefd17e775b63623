package main

import (
	"slices"
	"testing"
)

// TestIdleReleaseDue: a release comes on the first quiet period after at
// least a burst's worth of allocation, once per burst; never while the
// daemon is busy nor for a trickle below the burst, however long quiet.
func TestIdleReleaseDue(t *testing.T) {
	const kib = 1 << 10
	tests := []struct {
		name string
		// reads are the cumulative counter, one per period.
		reads []uint64
		want  []bool
	}{
		{"start-up garbage, then quiet", []uint64{3000 * kib, 3000 * kib, 3000 * kib},
			[]bool{false, true, false}},
		{"busy, busy, then quiet", []uint64{1000 * kib, 2000 * kib, 3000 * kib, 3010 * kib, 3010 * kib},
			[]bool{false, false, false, true, false}},
		{"a trickle never reaches a burst", []uint64{100 * kib, 200 * kib, 300 * kib, 400 * kib, 500 * kib},
			[]bool{false, false, false, false, false}},
		{"a trickle adds up to a burst", []uint64{1900 * kib, 2000 * kib, 2100 * kib, 2100 * kib},
			[]bool{false, false, true, false}},
		{"two bursts, two releases", []uint64{5000 * kib, 5000 * kib, 9000 * kib, 9000 * kib, 9000 * kib},
			[]bool{false, true, false, true, false}},
		{"a small burst after a release waits for more", []uint64{5000 * kib, 5000 * kib, 6000 * kib, 6000 * kib},
			[]bool{false, true, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := idleRelease{quiet: 256 * kib, burst: 2048 * kib}
			var got []bool
			for _, a := range tt.reads {
				got = append(got, r.due(a))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
