package ksm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnableRestore: the host's value is recorded once (a restarted
// daemon does not record its own 1), and restored.
func TestEnableRestore(t *testing.T) {
	tests := []struct {
		name, host string
		enables    int
	}{
		{"off", "0", 1},
		{"off, two starts", "0", 2},
		{"unmerge mode", "2", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Control{Dir: t.TempDir(), Runroot: t.TempDir()}
			run := filepath.Join(c.Dir, "run")
			os.WriteFile(run, []byte(tt.host+"\n"), 0o644)
			for range tt.enables {
				if err := c.Enable(); err != nil {
					t.Fatal(err)
				}
				if got := read(t, run); got != "1" {
					t.Fatalf("run after Enable = %q, want 1", got)
				}
			}
			if err := c.Restore(); err != nil {
				t.Fatal(err)
			}
			if got := read(t, run); got != tt.host {
				t.Errorf("run after Restore = %q, want the host's %q", got, tt.host)
			}
			if _, err := os.Stat(filepath.Join(c.Runroot, savedName)); !os.IsNotExist(err) {
				t.Errorf("the record is left after Restore: %v", err)
			}
			if err := c.Restore(); err != nil {
				t.Errorf("a second Restore: %v", err)
			}
		})
	}
}

func TestEnableWithoutKSM(t *testing.T) {
	c := Control{Dir: filepath.Join(t.TempDir(), "none"), Runroot: t.TempDir()}
	if err := c.Enable(); err == nil || !strings.Contains(err.Error(), "ksm = true") {
		t.Errorf("Enable without KSM: %v, want an error naming ksm = true", err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
