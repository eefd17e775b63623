// Command gen writes crivm's default seccomp profile, oci/seccomp/default.json.
//
// The profile is an allowlist: every syscall the x86 kernel headers name
// (unistd_64.h, plus the i386-only names from unistd_32.h) except those in
// rules.Never, rules.ByCapability and rules.ArgRestricted, followed by the
// argument-restricted rules. Anything else, including syscalls newer than the
// headers, gets the default action, EPERM. (runc answers syscalls newer than
// the newest one the profile names with ENOSYS, so libc fallbacks still work.)
//
// Run it through `go generate ./oci/seccomp`.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crivm/crivm/oci/seccomp/internal/rules"
)

func main() {
	unistd64 := flag.String("unistd64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "x86_64 syscall header")
	unistd32 := flag.String("unistd32", "/usr/include/x86_64-linux-gnu/asm/unistd_32.h", "i386 syscall header (\"\" to skip)")
	out := flag.String("o", "default.json", "output file")
	flag.Parse()

	if err := run(*unistd64, *unistd32, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(unistd64, unistd32, out string) error {
	names, err := syscallNames(unistd64)
	if err != nil {
		return err
	}
	if unistd32 != "" {
		more, err := syscallNames(unistd32)
		if err != nil {
			return err
		}
		names = append(names, more...)
	}
	for _, must := range []string{"read", "write", "execve", "clone", "unshare"} {
		if !slices.Contains(names, must) {
			return fmt.Errorf("%s does not name %s: not a syscall header?", unistd64, must)
		}
	}
	b, err := json.MarshalIndent(profile(names), "", "\t")
	if err != nil {
		return fmt.Errorf("encoding profile: %w", err)
	}
	b = append(b, '\n')
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return fmt.Errorf("writing profile: %w", err)
	}
	return nil
}

// syscallNames returns the NAME of every "#define __NR_NAME NUMBER" line.
func syscallNames(header string) ([]string, error) {
	data, err := os.ReadFile(header)
	if err != nil {
		return nil, fmt.Errorf("reading syscall header: %w", err)
	}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "#define" || !strings.HasPrefix(f[1], "__NR_") {
			continue
		}
		names = append(names, strings.TrimPrefix(f[1], "__NR_"))
	}
	return names, sc.Err()
}

// profile builds the allowlist from the header names and the rules package.
func profile(names []string) *specs.LinuxSeccomp {
	excluded := map[string]bool{}
	for _, n := range rules.Never {
		excluded[n] = true
	}
	for _, ns := range rules.ByCapability {
		for _, n := range ns {
			excluded[n] = true
		}
	}
	for _, n := range rules.ArgRestricted {
		excluded[n] = true
	}
	var allowed []string
	for _, n := range names {
		if !excluded[n] {
			allowed = append(allowed, n)
		}
	}
	slices.Sort(allowed)
	allowed = slices.Compact(allowed)

	eperm := uint(1)
	enosys := uint(rules.ENOSYS)
	p := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: &eperm,
		Architectures:   []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls: []specs.LinuxSyscall{
			{Names: allowed, Action: specs.ActAllow},
			{Names: []string{"clone"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: rules.CloneNewMask, ValueTwo: 0, Op: specs.OpMaskedEqual},
			}},
			{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
			// Three single-condition rules, not one rule with two "!=":
			// runc turns repeated conditions on one argument into separate
			// libseccomp rules, which would OR them.
			{Names: []string{"socket"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: rules.AFALG, Op: specs.OpLessThan},
			}},
			{Names: []string{"socket"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: rules.AFALG + 1, Op: specs.OpEqualTo},
			}},
			{Names: []string{"socket"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: rules.AFVSOCK, Op: specs.OpGreaterThan},
			}},
		},
	}
	for _, per := range rules.Personalities {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names: []string{"personality"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: per, Op: specs.OpEqualTo}},
		})
	}
	return p
}
