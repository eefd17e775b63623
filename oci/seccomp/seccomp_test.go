package seccomp

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/oci/seccomp/internal/rules"
)

// verdict evaluates p for one syscall the way libseccomp does for these
// profiles: the first matching rule with all its conditions true decides.
// It returns the action and the errno.
func verdict(p *specs.LinuxSeccomp, name string, args ...uint64) (specs.LinuxSeccompAction, uint) {
	for _, s := range p.Syscalls {
		if !slices.Contains(s.Names, name) {
			continue
		}
		match := true
		for _, a := range s.Args {
			var v uint64
			if int(a.Index) < len(args) {
				v = args[a.Index]
			}
			switch a.Op {
			case specs.OpEqualTo:
				match = match && v == a.Value
			case specs.OpNotEqual:
				match = match && v != a.Value
			case specs.OpLessThan:
				match = match && v < a.Value
			case specs.OpGreaterThan:
				match = match && v > a.Value
			case specs.OpMaskedEqual:
				match = match && v&a.Value == a.ValueTwo
			default:
				panic("operator not modelled: " + a.Op)
			}
		}
		if match {
			errno := uint(0)
			if s.ErrnoRet != nil {
				errno = *s.ErrnoRet
			}
			return s.Action, errno
		}
	}
	return p.DefaultAction, *p.DefaultErrnoRet
}

const (
	cloneNewUser = 0x10000000
	cloneNewNS   = 0x00020000
	cloneThread  = 0x00010000 | 0x00000100 | 0x00000800 // CLONE_THREAD|CLONE_VM|CLONE_SIGHAND
)

func TestDefaultProfile(t *testing.T) {
	var p specs.LinuxSeccomp
	if err := json.Unmarshal(DefaultJSON(), &p); err != nil {
		t.Fatalf("default.json does not parse as specs.LinuxSeccomp: %v", err)
	}
	if p.DefaultAction != specs.ActErrno || p.DefaultErrnoRet == nil || *p.DefaultErrnoRet != 1 {
		t.Fatalf("default action = %s/%v, want SCMP_ACT_ERRNO/1", p.DefaultAction, p.DefaultErrnoRet)
	}
	if err := validate(&p); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		caps   []string
		sys    string
		args   []uint64
		want   specs.LinuxSeccompAction
		errno  uint
		reason string
	}{
		{"read", nil, "read", nil, specs.ActAllow, 0, ""},
		{"write", nil, "write", nil, specs.ActAllow, 0, ""},
		{"execve", nil, "execve", nil, specs.ActAllow, 0, ""},
		{"arch_prctl", nil, "arch_prctl", nil, specs.ActAllow, 0, ""},
		{"ptrace", nil, "ptrace", nil, specs.ActAllow, 0, "allowed on kernels >= 4.8"},
		{"clone thread", nil, "clone", []uint64{cloneThread}, specs.ActAllow, 0, ""},
		{"clone newuser", nil, "clone", []uint64{cloneNewUser}, specs.ActErrno, 1, ""},
		{"clone newns", nil, "clone", []uint64{cloneNewNS | cloneThread}, specs.ActErrno, 1, ""},
		{"clone3", nil, "clone3", nil, specs.ActErrno, 38, "ENOSYS so libc falls back to clone"},
		{"unshare", nil, "unshare", nil, specs.ActErrno, 1, ""},
		{"setns", nil, "setns", nil, specs.ActErrno, 1, ""},
		{"mount", nil, "mount", nil, specs.ActErrno, 1, ""},
		{"keyctl", nil, "keyctl", nil, specs.ActErrno, 1, ""},
		{"bpf", nil, "bpf", nil, specs.ActErrno, 1, ""},
		{"io_uring_setup", nil, "io_uring_setup", nil, specs.ActErrno, 1, ""},
		{"socket inet", nil, "socket", []uint64{2}, specs.ActAllow, 0, ""},
		{"socket unix", nil, "socket", []uint64{1}, specs.ActAllow, 0, ""},
		{"socket netlink", nil, "socket", []uint64{16}, specs.ActAllow, 0, ""},
		{"socket 39", nil, "socket", []uint64{39}, specs.ActAllow, 0, ""},
		{"socket AF_ALG", nil, "socket", []uint64{38}, specs.ActErrno, 1, ""},
		{"socket AF_VSOCK", nil, "socket", []uint64{40}, specs.ActErrno, 1, ""},
		{"socket 44", nil, "socket", []uint64{44}, specs.ActAllow, 0, ""},
		{"personality linux", nil, "personality", []uint64{0}, specs.ActAllow, 0, ""},
		{"personality query", nil, "personality", []uint64{0xffffffff}, specs.ActAllow, 0, ""},
		{"personality addr_no_randomize", nil, "personality", []uint64{0x0040000}, specs.ActErrno, 1, ""},
		{"i386 socketcall", nil, "socketcall", nil, specs.ActAllow, 0, "i386 only, as containerd"},
		{"fchmodat2", nil, "fchmodat2", nil, specs.ActAllow, 0, "in containerd's list since kernel 6.6"},
		{"io_uring_setup", nil, "io_uring_setup", nil, specs.ActErrno, 1, "dropped from containerd's list"},
		{"request_key", nil, "request_key", nil, specs.ActErrno, 1, "keyrings are not namespaced"},
		{"kexec_load", nil, "kexec_load", nil, specs.ActErrno, 1, ""},
		{"userfaultfd", nil, "userfaultfd", nil, specs.ActErrno, 1, ""},
		{"i386 nice", nil, "nice", nil, specs.ActErrno, 1, "not in containerd's list"},
		{"name_to_handle_at", nil, "name_to_handle_at", nil, specs.ActAllow, 0, "in containerd's list"},
		{"process_vm_readv", nil, "process_vm_readv", nil, specs.ActAllow, 0, "allowed on kernels >= 4.8"},
		{"open_by_handle_at", nil, "open_by_handle_at", nil, specs.ActErrno, 1, ""},
		{"dac_read_search open_by_handle_at", []string{"CAP_DAC_READ_SEARCH"}, "open_by_handle_at", nil, specs.ActAllow, 0, ""},
		{"sys_admin mount", []string{"CAP_SYS_ADMIN"}, "mount", nil, specs.ActAllow, 0, ""},
		{"sys_admin bpf", []string{"CAP_SYS_ADMIN"}, "bpf", nil, specs.ActAllow, 0, ""},
		{"cap_bpf bpf", []string{"CAP_BPF"}, "bpf", nil, specs.ActAllow, 0, ""},
		{"sys_nice mbind", []string{"CAP_SYS_NICE"}, "mbind", nil, specs.ActAllow, 0, ""},
		{"no sys_nice mbind", nil, "mbind", nil, specs.ActErrno, 1, ""},
		{"sys_admin unshare", []string{"CAP_SYS_ADMIN"}, "unshare", nil, specs.ActAllow, 0, ""},
		{"sys_admin clone newuser", []string{"CAP_SYS_ADMIN"}, "clone", []uint64{cloneNewUser}, specs.ActAllow, 0, ""},
		{"sys_admin clone3", []string{"CAP_SYS_ADMIN"}, "clone3", nil, specs.ActAllow, 0, ""},
		{"sys_admin keyctl", []string{"CAP_SYS_ADMIN"}, "keyctl", nil, specs.ActErrno, 1, "never allowed"},
		{"sys_time", []string{"CAP_SYS_TIME"}, "clock_settime", nil, specs.ActAllow, 0, ""},
		{"no sys_time", []string{"CAP_CHOWN"}, "clock_settime", nil, specs.ActErrno, 1, ""},
		{"sys_ptrace kcmp", []string{"CAP_SYS_PTRACE"}, "kcmp", nil, specs.ActAllow, 0, ""},
		{"sys_ptrace keeps clone restricted", []string{"CAP_SYS_PTRACE"}, "clone", []uint64{cloneNewUser}, specs.ActErrno, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Default(tt.caps)
			got, errno := verdict(p, tt.sys, tt.args...)
			if got != tt.want || errno != tt.errno {
				t.Errorf("%s%v with caps %v: got %s/%d, want %s/%d %s", tt.sys, tt.args, tt.caps, got, errno, tt.want, tt.errno, tt.reason)
			}
		})
	}
}

// Default must not modify the embedded profile, and each call returns a
// fresh copy.
func TestDefaultIsACopy(t *testing.T) {
	a := Default([]string{"CAP_SYS_ADMIN"})
	a.Syscalls = nil
	b := Default(nil)
	if len(b.Syscalls) == 0 {
		t.Fatal("Default shares state between calls")
	}
	if got, _ := verdict(b, "unshare"); got != specs.ActErrno {
		t.Fatal("CAP_SYS_ADMIN rules leaked into a later profile")
	}
}

// The rules package's conditional syscalls must be absent from the
// unconditional allow list; otherwise they are not conditional at all. The
// list is explicit: a syscall no rule names is denied, whatever the kernel
// headers define.
func TestConditionalSyscallsNotInBaseList(t *testing.T) {
	p := Default(nil)
	base := p.Syscalls[0]
	if base.Action != specs.ActAllow || len(base.Args) != 0 {
		t.Fatalf("first rule is not the unconditional allow list: %+v", base)
	}
	if !slices.Equal(base.Names, slices.Compact(slices.Sorted(slices.Values(rules.Allowed)))) {
		t.Errorf("the allow list is not rules.Allowed, sorted and deduplicated")
	}
	check := func(what string, names []string) {
		for _, n := range names {
			if slices.Contains(base.Names, n) {
				t.Errorf("%s syscall %s is in the unconditional allow list", what, n)
			}
		}
	}
	check("arg-restricted", rules.ArgRestricted)
	for c, names := range rules.ByCapability {
		check(c, names)
	}
	// Syscalls containerd's profile denies whatever the capabilities, and
	// some the kernel headers define: none is named anywhere.
	named := slices.Concat(rules.Allowed, rules.ArgRestricted)
	for _, names := range rules.ByCapability {
		named = append(named, names...)
	}
	for _, n := range []string{"add_key", "keyctl", "request_key", "kexec_file_load", "kexec_load", "swapon", "swapoff",
		"pivot_root", "io_uring_enter", "io_uring_register", "io_uring_setup", "userfaultfd", "migrate_pages", "move_pages",
		"vm86", "vm86old", "_sysctl", "uselib", "ustat", "sysfs", "nfsservctl", "create_module", "query_module", "nice", "signal"} {
		if slices.Contains(named, n) {
			t.Errorf("%s is named by the default profile's rules", n)
		}
	}
	for _, must := range []string{"read", "write", "execve", "openat", "mmap", "futex", "exit_group", "rt_sigreturn", "wait4", "epoll_wait", "close_range", "fchmodat2", "rseq"} {
		if !slices.Contains(base.Names, must) {
			t.Errorf("%s is not allowed", must)
		}
	}
}

func TestLoadAndParse(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		wantErr bool
		check   func(*specs.LinuxSeccomp) bool
	}{
		{
			name: "oci format",
			path: write("oci.json", `{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}`),
			check: func(p *specs.LinuxSeccomp) bool {
				return p.DefaultAction == specs.ActErrno && len(p.Syscalls) == 1 && p.Syscalls[0].Names[0] == "read"
			},
		},
		{
			name: "docker archMap and name",
			path: write("docker.json", `{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],"syscalls":[{"name":"write","action":"SCMP_ACT_ALLOW","includes":{},"excludes":{}}]}`),
			check: func(p *specs.LinuxSeccomp) bool {
				return slices.Equal(p.Architectures, []specs.Arch{specs.ArchX86_64, specs.ArchX86}) && p.Syscalls[0].Names[0] == "write"
			},
		},
		{name: "docker conditional rule", path: write("cond.json", `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}`), wantErr: true},
		{name: "bad action", path: write("bad.json", `{"defaultAction":"SCMP_ACT_MAYBE"}`), wantErr: true},
		{name: "not json", path: write("junk.json", `{`), wantErr: true},
		{name: "missing", path: filepath.Join(dir, "nope.json"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Load(tt.path)
			if tt.wantErr {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.path) {
					t.Fatalf("err = %v, want InvalidArgument naming %s", err, tt.path)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(p) {
				t.Errorf("unexpected profile %+v", p)
			}
		})
	}
}
