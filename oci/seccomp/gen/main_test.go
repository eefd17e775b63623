package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The committed default.json must be what the generator makes from this
// machine's headers, so that edits to the rules cannot be forgotten.
func TestDefaultJSONIsCurrent(t *testing.T) {
	const h64 = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
	const h32 = "/usr/include/x86_64-linux-gnu/asm/unistd_32.h"
	for _, h := range []string{h64, h32} {
		if _, err := os.Stat(h); err != nil {
			t.Skipf("no syscall header: %v", err)
		}
	}
	out := filepath.Join(t.TempDir(), "default.json")
	if err := run(h64, h32, out); err != nil {
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

func TestRunRejectsNonHeader(t *testing.T) {
	dir := t.TempDir()
	h := filepath.Join(dir, "x.h")
	if err := os.WriteFile(h, []byte("#define __NR_read 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(h, "", filepath.Join(dir, "out.json")); err == nil {
		t.Fatal("a header without execve/clone/unshare was accepted")
	}
}
