package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The committed default.json must be what the generator makes, so that
// edits to the rules cannot be forgotten.
func TestDefaultJSONIsCurrent(t *testing.T) {
	out := filepath.Join(t.TempDir(), "default.json")
	if err := run(out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../default.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("oci/seccomp/default.json is stale: run `go generate ./oci/seccomp`")
	}
}
