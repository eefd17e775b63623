package assets

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/crivm/crivm/internal/errdefs"
)

// LibrarySearchPath is where BinaryClosure looks for shared libraries (after
// a binary's DT_RUNPATH/DT_RPATH). It is the search order of the default
// directories of a Debian/Ubuntu glibc loader that has no ld.so.cache, as
// in the guest: the multiarch directories first.
var LibrarySearchPath = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// BinaryClosure returns what the guest needs to run the host program bin
// (an absolute path): bin itself, its ELF interpreter (PT_INTERP) and the
// transitive closure of its DT_NEEDED libraries, each as the path the
// guest's loader opens: the interpreter at its PT_INTERP path, a library
// at the first search directory that holds it. The host file behind a
// path may be a symlink; the initrd gets its content. A statically linked
// bin is returned alone. A library found nowhere is FailedPrecondition.
func BinaryClosure(bin string) ([]string, error) {
	if !filepath.IsAbs(bin) {
		return nil, errdefs.InvalidArgument("binary %q: need an absolute path", bin)
	}
	out := []string{bin}
	seen := map[string]bool{bin: true}
	queue := []string{bin}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		interp, needed, runpath, err := elfDeps(cur)
		if err != nil {
			return nil, fmt.Errorf("reading the dependencies of %s: %w", cur, err)
		}
		if interp != "" && !seen[interp] {
			if _, err := os.Stat(interp); err != nil {
				return nil, errdefs.FailedPrecondition("interpreter %s of %s: %w", interp, cur, err)
			}
			seen[interp] = true
			out = append(out, interp)
		}
		for _, lib := range needed {
			p, err := findLibrary(lib, runpath, cur)
			if err != nil {
				return nil, err
			}
			if seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, p)
			queue = append(queue, p)
		}
	}
	return out, nil
}

// elfDeps reads an ELF file's interpreter, DT_NEEDED entries and library
// search path (DT_RUNPATH, else DT_RPATH; $ORIGIN expanded).
func elfDeps(path string) (interp string, needed, runpath []string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", nil, nil, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", nil, nil, fmt.Errorf("reading PT_INTERP: %w", err)
		}
		interp = strings.TrimRight(string(b), "\x00")
	}
	if f.Section(".dynamic") == nil {
		return interp, nil, nil, nil
	}
	if needed, err = f.ImportedLibraries(); err != nil {
		return "", nil, nil, err
	}
	rp, _ := f.DynString(elf.DT_RUNPATH)
	if len(rp) == 0 {
		rp, _ = f.DynString(elf.DT_RPATH)
	}
	origin := filepath.Dir(path)
	for _, r := range rp {
		for _, d := range filepath.SplitList(r) {
			d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin)
			if filepath.IsAbs(d) {
				runpath = append(runpath, d)
			}
		}
	}
	return interp, needed, runpath, nil
}

func findLibrary(lib string, runpath []string, from string) (string, error) {
	if strings.Contains(lib, "/") {
		if _, err := os.Stat(lib); err != nil {
			return "", errdefs.FailedPrecondition("library %s needed by %s: %w", lib, from, err)
		}
		return lib, nil
	}
	for _, d := range append(runpath, LibrarySearchPath...) {
		p := filepath.Join(d, lib)
		st, err := os.Stat(p)
		if err == nil && st.Mode().IsRegular() {
			return p, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("looking for %s: %w", p, err)
		}
	}
	return "", errdefs.FailedPrecondition("library %s needed by %s is in none of %s", lib, from, strings.Join(append(runpath, LibrarySearchPath...), ":"))
}

// resolveExtras returns the closure of every binary, each path once, sorted.
func resolveExtras(bins []string) ([]string, error) {
	set := map[string]bool{}
	for _, b := range bins {
		c, err := BinaryClosure(b)
		if err != nil {
			return nil, err
		}
		for _, p := range c {
			set[p] = true
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}
