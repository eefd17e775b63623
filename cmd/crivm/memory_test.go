package main

import (
	"slices"
	"testing"
)

// TestIdleReleaseDue: a release comes on the first quiet period after at
// least a burst's worth of allocation, once per burst, or when enough of
// the heap is free and resident; never while the daemon is busy nor for a
// trickle below the burst, however long quiet.
func TestIdleReleaseDue(t *testing.T) {
	const kib = 1 << 10
	tests := []struct {
		name string
		// reads are the cumulative counter, one per period.
		reads []uint64
		// free is the free heap at each read; nil: none.
		free []uint64
		want []bool
	}{
		{"start-up garbage, then quiet", []uint64{3000 * kib, 3000 * kib, 3000 * kib}, nil,
			[]bool{false, true, false}},
		{"busy, busy, then quiet", []uint64{1000 * kib, 2000 * kib, 3000 * kib, 3010 * kib, 3010 * kib}, nil,
			[]bool{false, false, false, true, false}},
		{"a trickle never reaches a burst", []uint64{100 * kib, 200 * kib, 300 * kib, 400 * kib, 500 * kib}, nil,
			[]bool{false, false, false, false, false}},
		{"a trickle adds up to a burst", []uint64{1900 * kib, 2000 * kib, 2100 * kib, 2100 * kib}, nil,
			[]bool{false, false, true, false}},
		{"two bursts, two releases", []uint64{5000 * kib, 5000 * kib, 9000 * kib, 9000 * kib, 9000 * kib}, nil,
			[]bool{false, true, false, true, false}},
		{"a small burst after a release waits for more", []uint64{5000 * kib, 5000 * kib, 6000 * kib, 6000 * kib}, nil,
			[]bool{false, true, false, false}},
		{"garbage a GC freed after the release goes while quiet", []uint64{5000 * kib, 5000 * kib, 5100 * kib, 5100 * kib, 5100 * kib}, []uint64{0, 0, 0, 2800 * kib, 0},
			[]bool{false, true, false, true, false}},
		{"free heap waits for a quiet period", []uint64{5000 * kib, 5000 * kib, 5600 * kib, 5700 * kib}, []uint64{0, 0, 2800 * kib, 2800 * kib},
			[]bool{false, true, false, true}},
		{"a little free heap stays", []uint64{100 * kib, 100 * kib}, []uint64{512 * kib, 512 * kib},
			[]bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := idleRelease{quiet: 256 * kib, burst: 2048 * kib, free: 1024 * kib}
			var got []bool
			for i, a := range tt.reads {
				var free uint64
				if tt.free != nil {
					free = tt.free[i]
				}
				got = append(got, r.due(a, free))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
