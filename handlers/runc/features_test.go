package runc

import (
	"os/exec"
	"testing"

	"github.com/crivm/crivm/handlers"
)

func TestParseFeatures(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want handlers.Features
	}{
		{"rro listed", `{"mountOptions": ["bind", "rro", "ro"]}`, handlers.Features{RecursiveReadOnlyMounts: true}},
		{"no rro", `{"mountOptions": ["bind", "ro"]}`, handlers.Features{}},
		{"not JSON (a runtime without the command)", "unknown command features", handlers.Features{}},
	}
	for _, tt := range tests {
		f, _ := parseFeatures([]byte(tt.doc))
		if got := (handlers.Features{RecursiveReadOnlyMounts: f.hasRRO()}); got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// runc 1.1+ lists rro; this host's runc is 1.1.5.
func TestProbeFeaturesRunc(t *testing.T) {
	path, err := exec.LookPath("runc")
	if err != nil {
		t.Skipf("requires runc: %v", err)
	}
	if got, err := probeFeatures(path); err != nil || !got.hasRRO() {
		t.Errorf("runc features: %+v, %v, want recursive read-only mounts", got, err)
	}
	if got, err := probeFeatures("/bin/false"); err == nil || got.hasRRO() || got.hasUserns() {
		t.Errorf("a runtime whose features command fails: %+v, %v, want none and an error", got, err)
	}
}
