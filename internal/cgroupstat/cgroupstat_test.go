package cgroupstat

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReaders(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"value", must(Value(write("memory.current", "4096\n"))), 4096},
		{"max", must(Value(write("memory.max", "max\n"))), 0},
		{"working set", WorkingSet(100, 30), 70},
		{"working set floor", WorkingSet(10, 30), 0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, tt.got, tt.want)
		}
	}
	m, err := Keyed(write("memory.stat", "anon 10\ninactive_file 7\nbroken x\n"))
	if err != nil || m["anon"] != 10 || m["inactive_file"] != 7 || len(m) != 2 {
		t.Errorf("Keyed: %v %v", m, err)
	}
}

func must(v uint64, err error) uint64 {
	if err != nil {
		panic(err)
	}
	return v
}
