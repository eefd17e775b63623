package bench

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, x := range n {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		in   []time.Duration
		want Summary
	}{
		{ms(5, 1, 3), Summary{N: 3, Min: ms(1)[0], Median: ms(3)[0], P90: ms(5)[0], Max: ms(5)[0]}},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), Summary{N: 10, Min: ms(1)[0], Median: ms(6)[0], P90: ms(9)[0], Max: ms(10)[0]}},
		{nil, Summary{}},
	}
	for _, tt := range tests {
		if got := Summarize(tt.in); got != tt.want {
			t.Errorf("Summarize(%v): got %+v, want %+v", tt.in, got, tt.want)
		}
	}
	if got := Ratio(3*time.Second, 2*time.Second); got != "1.50x" {
		t.Errorf("Ratio: got %s", got)
	}
}
