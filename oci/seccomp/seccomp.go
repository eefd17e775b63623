// Package seccomp provides crivm's seccomp profiles in OCI runtime-spec form:
// the default (RuntimeDefault) allowlist shipped as default.json, and loading
// of Localhost profiles.
//
// default.json is generated from the x86 kernel syscall headers by ./gen and
// committed; regenerate it with `go generate ./oci/seccomp`.
package seccomp

//go:generate go run ./gen -o default.json

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/oci/seccomp/internal/rules"
)

//go:embed default.json
var defaultJSON []byte

// DefaultJSON returns the shipped default profile, before capability rules.
func DefaultJSON() []byte { return slices.Clone(defaultJSON) }

// Default returns the RuntimeDefault profile for a process whose bounding
// capability set is caps ("CAP_X" names). Each capability in caps unlocks the
// syscalls rules.ByCapability lists for it; CAP_SYS_ADMIN also allows clone
// with namespace flags and clone3, since such a process may create
// namespaces anyway. The result is a fresh copy the caller may modify.
func Default(caps []string) *specs.LinuxSeccomp {
	var p specs.LinuxSeccomp
	if err := json.Unmarshal(defaultJSON, &p); err != nil {
		// default.json is generated and checked by tests.
		panic(fmt.Sprintf("seccomp: embedded default.json: %v", err))
	}
	var extra []string
	for _, c := range caps {
		extra = append(extra, rules.ByCapability[c]...)
	}
	if len(extra) == 0 {
		return &p
	}
	if slices.Contains(caps, "CAP_SYS_ADMIN") {
		// Drop the restricted clone rule and the clone3 ENOSYS rule: libseccomp
		// refuses two rules with different actions for one syscall, and the
		// unconditional allow below supersedes both.
		p.Syscalls = slices.DeleteFunc(p.Syscalls, func(s specs.LinuxSyscall) bool {
			return slices.Equal(s.Names, []string{"clone"}) || slices.Equal(s.Names, []string{"clone3"})
		})
	}
	slices.Sort(extra)
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: slices.Compact(extra), Action: specs.ActAllow})
	return &p
}

// Load reads a Localhost profile: a JSON file in the format runc accepts
// (specs.LinuxSeccomp). The Docker profile format is accepted as far as it
// maps onto that one: "archMap" supplies the architectures, and syscall
// entries with "includes"/"excludes" conditions are refused, because
// ignoring the conditions would allow more than the profile intends.
// A missing or malformed file is an InvalidArgument error naming it.
func Load(path string) (*specs.LinuxSeccomp, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, errdefs.InvalidArgument("seccomp profile %q does not exist", path)
		}
		return nil, fmt.Errorf("reading seccomp profile %q: %w", path, err)
	}
	return Parse(path, data)
}

// dockerProfile is the superset of the OCI and Docker profile formats that
// Parse reads.
type dockerProfile struct {
	specs.LinuxSeccomp
	ArchMap []struct {
		Arch     specs.Arch   `json:"architecture"`
		SubArchs []specs.Arch `json:"subArchitectures"`
	} `json:"archMap"`
	Syscalls []struct {
		specs.LinuxSyscall
		Name     string          `json:"name"`
		Includes json.RawMessage `json:"includes"`
		Excludes json.RawMessage `json:"excludes"`
	} `json:"syscalls"`
}

// Parse decodes and validates a profile; name is used in error messages.
func Parse(name string, data []byte) (*specs.LinuxSeccomp, error) {
	var dp dockerProfile
	if err := json.Unmarshal(data, &dp); err != nil {
		return nil, errdefs.InvalidArgument("seccomp profile %q: %v", name, err)
	}
	p := dp.LinuxSeccomp
	if len(p.Architectures) == 0 {
		for _, a := range dp.ArchMap {
			p.Architectures = append(p.Architectures, a.Arch)
			p.Architectures = append(p.Architectures, a.SubArchs...)
		}
	}
	p.Syscalls = nil
	for i, s := range dp.Syscalls {
		if conditional(s.Includes) || conditional(s.Excludes) {
			return nil, errdefs.InvalidArgument("seccomp profile %q: syscall rule %d has includes/excludes conditions, which are not supported", name, i)
		}
		sc := s.LinuxSyscall
		if s.Name != "" {
			sc.Names = append(sc.Names, s.Name)
		}
		p.Syscalls = append(p.Syscalls, sc)
	}
	if err := validate(&p); err != nil {
		return nil, errdefs.InvalidArgument("seccomp profile %q: %v", name, err)
	}
	return &p, nil
}

// conditional reports whether an includes/excludes object has content.
func conditional(raw json.RawMessage) bool {
	if len(raw) == 0 || string(raw) == "null" {
		return false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return true
	}
	for _, v := range m {
		switch string(v) {
		case "null", "[]", "{}", "0", `""`:
		default:
			return true
		}
	}
	return false
}

var (
	actions = []specs.LinuxSeccompAction{
		specs.ActKill, specs.ActKillProcess, specs.ActKillThread, specs.ActTrap,
		specs.ActErrno, specs.ActTrace, specs.ActAllow, specs.ActLog, specs.ActNotify,
	}
	operators = []specs.LinuxSeccompOperator{
		specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo,
		specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual,
	}
)

func validate(p *specs.LinuxSeccomp) error {
	if !slices.Contains(actions, p.DefaultAction) {
		return fmt.Errorf("unknown defaultAction %q", p.DefaultAction)
	}
	for i, s := range p.Syscalls {
		if len(s.Names) == 0 {
			return fmt.Errorf("syscall rule %d names no syscall", i)
		}
		if !slices.Contains(actions, s.Action) {
			return fmt.Errorf("syscall rule %d: unknown action %q", i, s.Action)
		}
		for _, a := range s.Args {
			if !slices.Contains(operators, a.Op) {
				return fmt.Errorf("syscall rule %d: unknown operator %q", i, a.Op)
			}
			if a.Index > 5 {
				return fmt.Errorf("syscall rule %d: argument index %d out of range", i, a.Index)
			}
		}
	}
	return nil
}
