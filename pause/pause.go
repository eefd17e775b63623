// Package pause builds crivm's pause program, the infra process of a pod
// sandbox: a tiny static C program (pause.c, after Kubernetes' pause.c) that
// sleeps forever, reaps reparented children and exits 0 on SIGTERM/SIGINT.
package pause

import (
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Version is compiled into the program and printed by `pause -v` as
// "pause <Version>".
const Version = "crivm-1.0"

//go:embed pause.c
var source []byte

// CFlags are the flags Build passes to gcc before the output and source.
var CFlags = []string{"-Os", "-static", "-Wall", "-DPAUSE_VERSION=\"" + Version + "\""}

// Source returns the C source that Build compiles.
func Source() []byte { return append([]byte(nil), source...) }

// Build compiles pause.c with gcc into outDir and returns the binary's path.
// The binary is named after a hash of the source and flags, so a second call
// with the same outDir returns the cached binary without running gcc.
// Concurrent callers (parallel test binaries) are safe: each compiles into a
// private temp dir and renames the result into place.
func Build(outDir string) (string, error) {
	h := sha256.New()
	h.Write(source)
	h.Write([]byte(strings.Join(CFlags, "\x00")))
	out := filepath.Join(outDir, "pause-"+hex.EncodeToString(h.Sum(nil))[:16])
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
	tmp, err := os.MkdirTemp(outDir, ".pause-build-")
	if err != nil {
		return "", fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "pause.c"), source, 0o644); err != nil {
		return "", fmt.Errorf("writing pause.c: %w", err)
	}
	args := append(append([]string(nil), CFlags...), "-o", "pause", "pause.c")
	cmd := exec.Command(gcc, args...)
	cmd.Dir = tmp
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("compiling pause.c (gcc %s): %w\n%s", strings.Join(args, " "), err, b)
	}
	if err := os.Rename(filepath.Join(tmp, "pause"), out); err != nil {
		return "", fmt.Errorf("installing pause binary: %w", err)
	}
	return out, nil
}

// IsStatic reports whether the ELF file at path has no PT_INTERP program
// header, i.e. needs no dynamic loader and runs in an empty rootfs.
func IsStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, fmt.Errorf("reading ELF: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}
