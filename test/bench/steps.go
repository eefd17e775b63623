package bench

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"
)

// stepLog matches a daemon debug line of a finished step, an RPC's end,
// or the guest's CreateContainer round trip.
var stepLog = regexp.MustCompile(`msg=(?:step|"rpc done"|"guest created the container") rpc=(\w+)(?:.*? step="([^"]+)" took=(\S+) ok=true| .*?(?:duration|rpc)=([0-9.]+(?:ns|µs|ms|s))\b)`)

// guestPhasesLog matches the guest's own steps of a CreateContainer,
// which the daemon logs as guest_phases="name=duration ...".
var guestPhasesLog = regexp.MustCompile(`msg="guest created the container" rpc=(\w+).*? guest_phases="([^"]*)"`)

// guestPhasePrefix names a guest step in a breakdown.
const guestPhasePrefix = "(guest) "

// StepBreakdown reads a daemon's debug log and returns, per RPC and step
// (and per RPC as a whole, as step "(rpc)", and the guest's own steps, as
// "(guest) name"), the durations it logged, for a breakdown of where a pod
// start goes.
func StepBreakdown(log string) map[[2]string][]time.Duration {
	out := map[[2]string][]time.Duration{}
	for _, m := range guestPhasesLog.FindAllStringSubmatch(log, -1) {
		for _, f := range strings.Fields(m[2]) {
			name, took, _ := strings.Cut(f, "=")
			if d, err := time.ParseDuration(took); err == nil {
				k := [2]string{m[1], guestPhasePrefix + name}
				out[k] = append(out[k], d)
			}
		}
	}
	for _, m := range stepLog.FindAllStringSubmatch(log, -1) {
		rpc, step, took := m[1], m[2], m[3]
		switch {
		case step != "":
		case strings.Contains(m[0], "guest created the container"):
			step, took = "(guest CreateContainer round trip)", m[4]
		default:
			step, took = "(rpc)", m[4]
		}
		d, err := time.ParseDuration(took)
		if err != nil {
			continue
		}
		k := [2]string{rpc, step}
		out[k] = append(out[k], d)
	}
	return out
}

// PrintBreakdown writes the median of every step of rpcs, in rpcs' order
// and each RPC's steps by first appearance in log.
func PrintBreakdown(w io.Writer, log string, rpcs ...string) {
	b := StepBreakdown(log)
	var keys [][2]string
	for k := range b {
		if slices.Contains(rpcs, k[0]) {
			keys = append(keys, k)
		}
	}
	first := func(k [2]string) int {
		if k[1] == "(rpc)" {
			return -1
		}
		if name, ok := strings.CutPrefix(k[1], guestPhasePrefix); ok {
			// Where the daemon logged them, in the guest's order.
			m := guestPhasesLog.FindStringSubmatchIndex(log)
			fields := strings.Fields(log[m[4]:m[5]])
			return m[4] + slices.IndexFunc(fields, func(f string) bool { return strings.HasPrefix(f, name+"=") })
		}
		return strings.Index(log, `step="`+k[1]+`"`)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		if a[0] != b[0] {
			return slices.Index(rpcs, a[0]) - slices.Index(rpcs, b[0])
		}
		return first(a) - first(b)
	})
	for _, k := range keys {
		s := Summarize(b[k])
		fmt.Fprintf(w, "  %-16s %-42s median %8v  (n=%d)\n", k[0], k[1], s.Median.Round(100*time.Microsecond), s.N)
	}
}

// LogField is key's value in a daemon's slog text line, key=value or
// key="quoted value" ("" when absent).
func LogField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if strings.HasPrefix(line, key+"=") {
		i = -1
	} else if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if j := strings.Index(v[1:], `"`); j >= 0 {
			return v[1 : j+1]
		}
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		return v[:j]
	}
	return v
}
