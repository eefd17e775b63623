// Command gen writes crivm's default seccomp profile, oci/seccomp/default.json.
//
// The profile is containerd's default one (see package rules): the explicit
// allowlist rules.Allowed, then the argument-restricted rules for socket,
// personality, clone and clone3. Anything else gets the default action,
// EPERM; the filter compiler answers syscalls newer than every syscall the
// profile names with ENOSYS instead, as runc does, so libc fallbacks work.
// The capability-conditional rules are added per container by
// seccomp.Default.
//
// Run it through `go generate ./oci/seccomp`.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crivm/crivm/oci/seccomp/internal/rules"
)

func main() {
	out := flag.String("o", "default.json", "output file")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	b, err := json.MarshalIndent(profile(), "", "\t")
	if err != nil {
		return fmt.Errorf("encoding profile: %w", err)
	}
	b = append(b, '\n')
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return fmt.Errorf("writing profile: %w", err)
	}
	return nil
}

// profile builds the default profile from the rules package, in
// containerd's rule order.
func profile() *specs.LinuxSeccomp {
	allowed := slices.Clone(rules.Allowed)
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
	// Without CAP_SYS_ADMIN (seccomp.Default drops both otherwise).
	p.Syscalls = append(p.Syscalls,
		specs.LinuxSyscall{Names: []string{"clone"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
			{Index: 0, Value: rules.CloneNewMask, ValueTwo: 0, Op: specs.OpMaskedEqual},
		}},
		specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
	)
	return p
}
