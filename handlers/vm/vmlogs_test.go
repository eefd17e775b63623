package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/crivm/crivm/vmm"
)

// TestTrimLogsOnce: every VM dir's logs are bounded, a pooled VM's through
// its own dir (not through the symlink a pod's VM dir name is), and what
// is not a VM dir is left alone.
func TestTrimLogsOnce(t *testing.T) {
	h := &Handler{dir: t.TempDir()}
	big := bytes.Repeat([]byte("x"), vmm.MaxLogBytes+1)
	small := []byte("booted\n")
	for _, d := range []struct {
		dir, log string
		data     []byte
	}{
		{"pool-a", vmm.ConsoleLogName, big},
		{"0123456789abcdef0123456789abcdef", vmm.QEMULogName, big},
		{"0123456789abcdef0123456789abcde0", vmm.ConsoleLogName, small},
	} {
		os.MkdirAll(filepath.Join(h.dir, d.dir), 0o700)
		os.WriteFile(filepath.Join(h.dir, d.dir, d.log), d.data, 0o600)
	}
	os.Symlink("pool-a", filepath.Join(h.dir, "fedcba9876543210fedcba9876543210"))
	os.WriteFile(filepath.Join(h.dir, vmm.ConsoleLogName), big, 0o600) // not in a VM dir

	h.trimLogsOnce(t.Context())

	tests := []struct {
		path    string
		want    int64
		wantOld bool
	}{
		{"pool-a/" + vmm.ConsoleLogName, 0, true},
		{"0123456789abcdef0123456789abcdef/" + vmm.QEMULogName, 0, true},
		{"0123456789abcdef0123456789abcde0/" + vmm.ConsoleLogName, int64(len(small)), false},
		{vmm.ConsoleLogName, int64(len(big)), false},
	}
	for _, tt := range tests {
		st, err := os.Stat(filepath.Join(h.dir, tt.path))
		if err != nil || st.Size() != tt.want {
			t.Errorf("%s: %v, %v; want %d bytes", tt.path, st, err, tt.want)
		}
		old, err := os.Stat(filepath.Join(h.dir, tt.path+".1"))
		if got := err == nil; got != tt.wantOld {
			t.Errorf("%s.1 exists: %v, want %v", tt.path, got, tt.wantOld)
		} else if got && old.Size() != vmm.KeptLogBytes {
			t.Errorf("%s.1: %d bytes, want %d", tt.path, old.Size(), vmm.KeptLogBytes)
		}
	}
}
