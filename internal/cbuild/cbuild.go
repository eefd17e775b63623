// Package cbuild compiles the project's small C programs (the pause
// process, critest's stand-ins) with gcc, cached by content.
package cbuild

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build compiles src (one C file) with gcc and flags into outDir and returns
// the binary's path, named name-<hash of the source and flags>: a second
// call with the same inputs returns the cached binary without running gcc.
// Concurrent callers (parallel test binaries) are safe: each compiles in a
// private temp dir and renames the result into place.
func Build(outDir, name string, src []byte, flags []string) (string, error) {
	h := sha256.New()
	h.Write(src)
	h.Write([]byte(strings.Join(flags, "\x00")))
	out := filepath.Join(outDir, name+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		return out, nil
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", fmt.Errorf("finding gcc (apt-get install gcc libc6-dev): %w", err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("creating output dir: %w", err)
	}
	tmp, err := os.MkdirTemp(outDir, "."+name+"-build-")
	if err != nil {
		return "", fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, name+".c"), src, 0o644); err != nil {
		return "", fmt.Errorf("writing %s.c: %w", name, err)
	}
	args := append(append([]string(nil), flags...), "-o", name, name+".c")
	cmd := exec.Command(gcc, args...)
	cmd.Dir = tmp
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("compiling %s.c (gcc %s): %w\n%s", name, strings.Join(args, " "), err, b)
	}
	if err := os.Rename(filepath.Join(tmp, name), out); err != nil {
		return "", fmt.Errorf("installing the %s binary: %w", name, err)
	}
	return out, nil
}
