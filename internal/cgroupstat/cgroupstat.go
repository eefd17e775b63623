// Package cgroupstat reads cgroup (v1 and v2) accounting files. The runc
// handler reads them on the host and the guest agent inside a VM.
package cgroupstat

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Value reads a one-number cgroup file; "max" reads as zero.
func Value(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v := strings.TrimSpace(string(b))
	if v == "max" {
		return 0, nil
	}
	return strconv.ParseUint(v, 10, 64)
}

// Keyed reads "key value" lines (memory.stat, cpu.stat, memory.events).
// Lines whose value is not a number are skipped.
func Keyed(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			m[k] = n
		}
	}
	return m, sc.Err()
}

// WorkingSet is usage minus inactive file pages, as the kubelet counts it.
func WorkingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile > usage {
		return 0
	}
	return usage - inactiveFile
}
