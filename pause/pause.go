// Package pause builds crivm's pause program, the infra process of a pod
// sandbox: a tiny static C program (pause.c, after Kubernetes' pause.c) that
// sleeps forever, reaps reparented children and exits 0 on SIGTERM/SIGINT.
package pause

import (
	"debug/elf"
	_ "embed"
	"fmt"

	"github.com/crivm/crivm/internal/cbuild"
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

// Build compiles pause.c with gcc into outDir and returns the binary's path
// (cached by content; see cbuild.Build).
func Build(outDir string) (string, error) { return cbuild.Build(outDir, "pause", source, CFlags) }

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
