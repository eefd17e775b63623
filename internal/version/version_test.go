package version

import (
	"testing"

	utilversion "k8s.io/apimachinery/pkg/util/version"
)

// TestVersionIsSemver: the kubelet parses RuntimeVersion with
// ParseSemantic and shows crivm://Unknown when that fails (as it did for a
// git hash).
func TestVersionIsSemver(t *testing.T) {
	if _, err := utilversion.ParseSemantic(Version); err != nil {
		t.Errorf("Version %q is not a semantic version: %v", Version, err)
	}
}

func TestString(t *testing.T) {
	defer func(c string) { Commit = c }(Commit)
	tests := []struct{ commit, want string }{
		{"", Version},
		{"607a1fe-dirty", Version + " (commit 607a1fe-dirty)"},
	}
	for _, tt := range tests {
		Commit = tt.commit
		if got := String(); got != tt.want {
			t.Errorf("String() with commit %q = %q, want %q", tt.commit, got, tt.want)
		}
	}
}
