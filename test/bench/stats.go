// Package bench holds crivm's benchmark tools and the statistics they print.
// Numbers are measured side by side with a baseline in the same run and
// written to docs/performance.md by hand; nothing here asserts a speed.
package bench

import (
	"fmt"
	"slices"
	"time"
)

// Summary is min, median, p90 and max of a set of durations.
type Summary struct {
	N                     int
	Min, Median, P90, Max time.Duration
}

// Summarize sorts a copy of ds and returns its summary.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[int(q*float64(len(s)-1)+0.5)] }
	return Summary{N: len(s), Min: s[0], Median: at(0.5), P90: at(0.9), Max: s[len(s)-1]}
}

func (s Summary) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return fmt.Sprintf("n=%d min=%v median=%v p90=%v max=%v", s.N, r(s.Min), r(s.Median), r(s.P90), r(s.Max))
}

// Ratio is a/b as "1.23x".
func Ratio(a, b time.Duration) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}
