package seccompbpf

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/oci/seccomp"
)

// criOCaps is CRI-O's default capability set: no CAP_SYS_ADMIN, so the
// default profile keeps its clone restriction.
var criOCaps = oci.DefaultCapabilities()

// allCaps is every capability up to CAP_CHECKPOINT_RESTORE.
var allCaps = oci.AllCapabilities()

const (
	archX86_64  = unix.AUDIT_ARCH_X86_64
	archI386    = unix.AUDIT_ARCH_I386
	archAArch64 = unix.AUDIT_ARCH_AARCH64

	cloneNewUser = unix.CLONE_NEWUSER
	afVsock      = 40

	allow       = unix.SECCOMP_RET_ALLOW
	killProcess = unix.SECCOMP_RET_KILL_PROCESS
)

func errno(e unix.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e) }

func ptr[T any](v T) *T { return &v }

// x64, i386 and x32 build seccomp_data for a syscall of that ABI, looked up
// by name so that a test fails on a name the tables lack.
func x64(t *testing.T, name string, args ...uint64) seccompData {
	return data(t, syscallsX86_64, archX86_64, name, args)
}

func i386(t *testing.T, name string, args ...uint64) seccompData {
	return data(t, syscallsI386, archI386, name, args)
}

func x32(t *testing.T, name string, args ...uint64) seccompData {
	return data(t, syscallsX32, archX86_64, name, args)
}

func data(t *testing.T, table map[string]uint32, arch uint32, name string, args []uint64) seccompData {
	t.Helper()
	nr, ok := table[name]
	if !ok {
		t.Fatalf("no syscall %q in the table", name)
	}
	d := seccompData{nr: nr, arch: arch}
	copy(d.args[:], args)
	return d
}

func mustCompile(t *testing.T, p *specs.LinuxSeccomp) []unix.SockFilter {
	t.Helper()
	prog, err := Compile(p)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if err := check(prog); err != nil {
		t.Fatalf("compiled program fails the kernel's checks: %v", err)
	}
	return prog
}

func mustRun(t *testing.T, prog []unix.SockFilter, d seccompData) uint32 {
	t.Helper()
	got, err := run(prog, d)
	if err != nil {
		t.Fatalf("running filter on %+v: %v", d, err)
	}
	return got
}

func TestTables(t *testing.T) {
	tests := []struct {
		table map[string]uint32
		name  string
		want  uint32
	}{
		{syscallsX86_64, "read", 0},
		{syscallsX86_64, "clone", 56},
		{syscallsX86_64, "getcwd", 79},
		{syscallsX86_64, "clone3", 435},
		{syscallsI386, "read", 3},
		{syscallsI386, "socketcall", 102},
		{syscallsI386, "clone", 120},
		{syscallsI386, "getcwd", 183},
		{syscallsX32, "read", x32SyscallBit},
		{syscallsX32, "ioctl", x32SyscallBit + 514},
	}
	for _, tt := range tests {
		if got, ok := tt.table[tt.name]; !ok || got != tt.want {
			t.Errorf("%s = %d (known %t), want %d", tt.name, got, ok, tt.want)
		}
	}
	if _, ok := syscallsX86_64["socketcall"]; ok {
		t.Error("socketcall in the x86_64 table")
	}
}

type actionCase struct {
	name string
	in   seccompData
	want uint32
}

func runCases(t *testing.T, prog []unix.SockFilter, cases []actionCase) {
	t.Helper()
	for _, tt := range cases {
		if got := mustRun(t, prog, tt.in); got != tt.want {
			t.Errorf("%s: action %#x, want %#x", tt.name, got, tt.want)
		}
	}
}

func TestDefaultProfile(t *testing.T) {
	const clone3ENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	prog := mustCompile(t, seccomp.Default(criOCaps))
	t.Logf("default profile: %d instructions", len(prog))
	runCases(t, prog, []actionCase{
		{"read", x64(t, "read"), allow},
		{"getcwd", x64(t, "getcwd"), allow},
		{"kexec_load", x64(t, "kexec_load"), errno(unix.EPERM)},
		{"mount without CAP_SYS_ADMIN", x64(t, "mount"), errno(unix.EPERM)},
		{"number past every syscall", seccompData{nr: 999, arch: archX86_64}, errno(unix.ENOSYS)},
		{"clone(SIGCHLD)", x64(t, "clone", uint64(unix.SIGCHLD)), allow},
		{"clone(CLONE_NEWUSER)", x64(t, "clone", cloneNewUser|uint64(unix.SIGCHLD)), errno(unix.EPERM)},
		{"clone with a high word the mask ignores", x64(t, "clone", 1<<32|uint64(unix.SIGCHLD)), allow},
		{"clone3", x64(t, "clone3"), clone3ENOSYS},
		{"socket(AF_INET)", x64(t, "socket", unix.AF_INET), allow},
		{"socket(AF_ALG)", x64(t, "socket", unix.AF_ALG), errno(unix.EPERM)},
		{"socket(39)", x64(t, "socket", 39), allow},
		{"socket(AF_VSOCK)", x64(t, "socket", afVsock), errno(unix.EPERM)},
		{"socket(41)", x64(t, "socket", 41), allow},
		{"socket(AF_VSOCK) with the high word set", x64(t, "socket", 1<<32|afVsock), allow},
		{"personality(0)", x64(t, "personality", 0), allow},
		{"personality(0xffff)", x64(t, "personality", 0xffff), errno(unix.EPERM)},
		{"personality(0xffffffff)", x64(t, "personality", 0xffffffff), allow},
		{"personality, only the high word differs", x64(t, "personality", 1<<32|0xffffffff), errno(unix.EPERM)},
		{"personality(8), only the high word differs", x64(t, "personality", 1<<32|8), errno(unix.EPERM)},

		{"i386 read", i386(t, "read"), allow},
		{"i386 getcwd", i386(t, "getcwd"), allow},
		{"i386 socketcall", i386(t, "socketcall"), allow},
		{"i386 kexec_load", i386(t, "kexec_load"), errno(unix.EPERM)},
		{"i386 clone(CLONE_NEWUSER)", i386(t, "clone", cloneNewUser), errno(unix.EPERM)},
		{"i386 clone(SIGCHLD)", i386(t, "clone", uint64(unix.SIGCHLD)), allow},
		{"i386 personality compares the low word only", i386(t, "personality", 1<<32|0xffffffff), allow},
		{"i386 socket(AF_VSOCK)", i386(t, "socket", afVsock), errno(unix.EPERM)},

		{"x32 read", x32(t, "read"), allow},
		{"x32 ioctl", x32(t, "ioctl"), allow},
		{"x32 number of no x32 syscall", seccompData{nr: x32SyscallBit + 16, arch: archX86_64}, errno(unix.EPERM)},
		{"x32 kexec_load", x32(t, "kexec_load"), errno(unix.EPERM)},
		{"syscall -1, past every x32 syscall", seccompData{nr: 0xffffffff, arch: archX86_64}, errno(unix.ENOSYS)},

		{"aarch64", seccompData{nr: 63, arch: archAArch64}, killProcess},
		{"arch 0", seccompData{nr: 0, arch: 0}, killProcess},
	})

	prog = mustCompile(t, seccomp.Default(allCaps))
	runCases(t, prog, []actionCase{
		{"clone(CLONE_NEWUSER) with CAP_SYS_ADMIN", x64(t, "clone", cloneNewUser), allow},
		{"clone3 with CAP_SYS_ADMIN", x64(t, "clone3"), allow},
		{"mount with CAP_SYS_ADMIN", x64(t, "mount"), allow},
		{"kexec_load with every capability", x64(t, "kexec_load"), errno(unix.EPERM)},
	})
}

// TestENOSYS checks runc's -ENOSYS stub semantics: a syscall number above
// every one the profile names for its ABI answers ENOSYS, so that libc
// falls back from a syscall the profile predates (glibc 2.39 falls back
// from fchmodat2 on ENOSYS only); a known syscall the profile denies gets
// the profile's errno; a default action that lets syscalls through has no
// stub.
func TestENOSYS(t *testing.T) {
	const (
		fchmodat2 = 452 // Linux 6.6, newer than the tables
		past      = 999
	)
	enosys := errno(unix.ENOSYS)
	if _, ok := syscallsX86_64["fchmodat2"]; ok {
		t.Fatal("the tables know fchmodat2: pick a number past them")
	}
	// The highest x86_64 syscall named below is kexec_load (246).
	named := []specs.LinuxSyscall{
		{Names: []string{"read", "getppid"}, Action: specs.ActAllow},
		{Names: []string{"kexec_load"}, Action: specs.ActErrno, ErrnoRet: ptr(uint(unix.EXDEV))},
	}
	tests := []struct {
		name    string
		profile *specs.LinuxSeccomp
		cases   []actionCase
	}{
		{"default profile", seccomp.Default(criOCaps), []actionCase{
			{"fchmodat2", seccompData{nr: fchmodat2, arch: archX86_64}, enosys},
			{"past every syscall", seccompData{nr: past, arch: archX86_64}, enosys},
			{"known, denied: kexec_load", x64(t, "kexec_load"), errno(unix.EPERM)},
			{"known, denied: keyctl", x64(t, "keyctl"), errno(unix.EPERM)},
			{"known, allowed: futex_waitv, the highest named", x64(t, "futex_waitv"), allow},
			{"clone3, named with ENOSYS", x64(t, "clone3"), enosys},
			{"i386 past every syscall", seccompData{nr: fchmodat2, arch: archI386}, enosys},
			{"i386 known, denied", i386(t, "kexec_load"), errno(unix.EPERM)},
			{"x32 past every syscall", seccompData{nr: x32SyscallBit + 600, arch: archX86_64}, enosys},
			{"x32 known, denied", x32(t, "kexec_load"), errno(unix.EPERM)},
		}},
		{"errno default", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: ptr(uint(unix.EACCES)), Syscalls: named}, []actionCase{
			{"unnamed below the highest", x64(t, "getpid"), errno(unix.EACCES)},
			{"named", x64(t, "kexec_load"), errno(unix.EXDEV)},
			{"the number after the highest", seccompData{nr: 247, arch: archX86_64}, enosys},
			{"fchmodat2", seccompData{nr: fchmodat2, arch: archX86_64}, enosys},
		}},
		{"kill default", &specs.LinuxSeccomp{DefaultAction: specs.ActKillProcess, Syscalls: named}, []actionCase{
			{"unnamed below the highest", x64(t, "getpid"), killProcess},
			{"fchmodat2", seccompData{nr: fchmodat2, arch: archX86_64}, enosys},
		}},
		{"allow default", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: named}, []actionCase{
			{"fchmodat2", seccompData{nr: fchmodat2, arch: archX86_64}, allow},
		}},
		{"log default", &specs.LinuxSeccomp{DefaultAction: specs.ActLog, Syscalls: named}, []actionCase{
			{"fchmodat2", seccompData{nr: fchmodat2, arch: archX86_64}, unix.SECCOMP_RET_LOG},
		}},
		{"trace default", &specs.LinuxSeccomp{DefaultAction: specs.ActTrace, Syscalls: named}, []actionCase{
			{"fchmodat2", seccompData{nr: fchmodat2, arch: archX86_64}, unix.SECCOMP_RET_TRACE | uint32(unix.EPERM)},
		}},
		{"nothing named", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}, []actionCase{
			{"fchmodat2", seccompData{nr: fchmodat2, arch: archX86_64}, errno(unix.EPERM)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runCases(t, mustCompile(t, tt.profile), tt.cases)
		})
	}
}

// The default profile names syscalls newer than the tables (the upstream
// list follows newer kernels): exactly these, so that a typo in the list,
// which the compiler would skip as well, fails here.
func TestDefaultProfileUnknownSyscalls(t *testing.T) {
	want := []string{
		"cachestat", "fchmodat2", "futex_requeue", "futex_wait", "futex_wake", "getxattrat", "listmount",
		"listxattrat", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "map_shadow_stack",
		"mseal", "recv", "removexattrat", "send", "setxattrat", "statmount", "uretprobe",
	}
	if got := UnknownSyscalls(seccomp.Default(allCaps)); !slices.Equal(got, want) {
		t.Errorf("UnknownSyscalls(default profile) = %q, want %q", got, want)
	}
}

func TestArchitectures(t *testing.T) {
	rules := []specs.LinuxSyscall{{Names: []string{"read", "socketcall"}, Action: specs.ActAllow}}
	tests := []struct {
		name   string
		arches []specs.Arch
		cases  []actionCase
	}{
		{
			name: "native only",
			cases: []actionCase{
				{"x86_64 read", x64(t, "read"), allow},
				{"x86_64 write, past every named syscall", x64(t, "write"), errno(unix.ENOSYS)},
				{"i386 read", i386(t, "read"), killProcess},
				{"x32 read", x32(t, "read"), killProcess},
				{"x32 bit alone", seccompData{nr: x32SyscallBit, arch: archX86_64}, killProcess},
				{"syscall -1", seccompData{nr: 0xffffffff, arch: archX86_64}, killProcess},
			},
		},
		{
			name:   "i386 and foreign arches",
			arches: []specs.Arch{specs.ArchX86, specs.ArchAARCH64, specs.ArchS390X},
			cases: []actionCase{
				{"x86_64 read", x64(t, "read"), allow},
				{"i386 read", i386(t, "read"), allow},
				{"i386 socketcall", i386(t, "socketcall"), allow},
				{"i386 write", i386(t, "write"), errno(unix.EPERM)},
				{"i386 number 0", seccompData{nr: 0, arch: archI386}, errno(unix.EPERM)},
				{"x32 read", x32(t, "read"), killProcess},
				{"aarch64", seccompData{nr: 63, arch: archAArch64}, killProcess},
			},
		},
		{
			name:   "x32",
			arches: []specs.Arch{specs.ArchX86_64, specs.ArchX32},
			cases: []actionCase{
				{"x86_64 read", x64(t, "read"), allow},
				{"x32 read", x32(t, "read"), allow},
				{"x32 write, past every named syscall", x32(t, "write"), errno(unix.ENOSYS)},
				{"i386 read", i386(t, "read"), killProcess},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog := mustCompile(t, &specs.LinuxSeccomp{
				DefaultAction: specs.ActErrno,
				Architectures: tt.arches,
				Syscalls:      rules,
			})
			runCases(t, prog, tt.cases)
		})
	}
}

func TestActions(t *testing.T) {
	tests := []struct {
		action   specs.LinuxSeccompAction
		errnoRet *uint
		want     uint32
	}{
		{specs.ActKill, nil, unix.SECCOMP_RET_KILL_THREAD},
		{specs.ActKillThread, nil, unix.SECCOMP_RET_KILL_THREAD},
		{specs.ActKillProcess, nil, unix.SECCOMP_RET_KILL_PROCESS},
		{specs.ActTrap, nil, unix.SECCOMP_RET_TRAP},
		{specs.ActErrno, nil, errno(unix.EPERM)},
		{specs.ActErrno, ptr(uint(unix.EXDEV)), errno(unix.EXDEV)},
		{specs.ActTrace, nil, unix.SECCOMP_RET_TRACE | uint32(unix.EPERM)},
		{specs.ActTrace, ptr(uint(7)), unix.SECCOMP_RET_TRACE | 7},
		{specs.ActLog, nil, unix.SECCOMP_RET_LOG},
	}
	for _, tt := range tests {
		t.Run(string(tt.action), func(t *testing.T) {
			prog := mustCompile(t, &specs.LinuxSeccomp{
				DefaultAction: specs.ActAllow,
				Syscalls:      []specs.LinuxSyscall{{Names: []string{"getpid"}, Action: tt.action, ErrnoRet: tt.errnoRet}},
			})
			runCases(t, prog, []actionCase{
				{"getpid", x64(t, "getpid"), tt.want},
				{"getppid", x64(t, "getppid"), allow},
			})

			// getpid (39) is below getppid (110), the highest named
			// syscall: the default action, not ENOSYS, answers it.
			prog = mustCompile(t, &specs.LinuxSeccomp{
				DefaultAction:   tt.action,
				DefaultErrnoRet: tt.errnoRet,
				Syscalls:        []specs.LinuxSyscall{{Names: []string{"getppid"}, Action: specs.ActAllow}},
			})
			runCases(t, prog, []actionCase{
				{"getppid", x64(t, "getppid"), allow},
				{"getpid by default", x64(t, "getpid"), tt.want},
			})
		})
	}
}

func TestDefaultErrnoRet(t *testing.T) {
	prog := mustCompile(t, &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: ptr(uint(unix.EACCES)),
		Architectures:   []specs.Arch{specs.ArchX86},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActAllow},
			{Names: []string{"getpid"}, Action: specs.ActErrno},
			{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: ptr(uint(unix.EACCES))},
		},
	})
	runCases(t, prog, []actionCase{
		{"read", x64(t, "read"), allow},
		{"unlisted write", x64(t, "write"), errno(unix.EACCES)},
		{"i386 unlisted write", i386(t, "write"), errno(unix.EACCES)},
		{"rule errno defaults to EPERM, not defaultErrnoRet", x64(t, "getpid"), errno(unix.EPERM)},
		{"rule with the default action", x64(t, "getppid"), errno(unix.EACCES)},
	})
}

func TestOperators(t *testing.T) {
	const hi = 1 << 32
	tests := []struct {
		name  string
		arg   specs.LinuxSeccompArg
		cases map[uint64]bool // argument → whether the rule matches
		// i386 is what the rule gives on i386, which compares low words.
		i386 map[uint64]bool
	}{
		{
			name:  "EQ",
			arg:   specs.LinuxSeccompArg{Index: 1, Value: hi | 5, Op: specs.OpEqualTo},
			cases: map[uint64]bool{hi | 5: true, 5: false, 2*hi | 5: false, hi | 4: false, hi | 6: false},
			i386:  map[uint64]bool{5: true, 4: false},
		},
		{
			name:  "NE",
			arg:   specs.LinuxSeccompArg{Index: 0, Value: 7, Op: specs.OpNotEqual},
			cases: map[uint64]bool{7: false, 8: true, 6: true, hi | 7: true, 0: true},
			i386:  map[uint64]bool{7: false, 8: true},
		},
		{
			name: "LT",
			arg:  specs.LinuxSeccompArg{Index: 2, Value: hi, Op: specs.OpLessThan},
			cases: map[uint64]bool{
				0: true, hi - 1: true, hi: false, hi + 1: false, 2 * hi: false, ^uint64(0): false,
			},
			// The low word of hi is 0: nothing is below it.
			i386: map[uint64]bool{0: false, 5: false},
		},
		{
			name:  "LT small",
			arg:   specs.LinuxSeccompArg{Index: 0, Value: 38, Op: specs.OpLessThan},
			cases: map[uint64]bool{0: true, 37: true, 38: false, 39: false, hi | 1: false},
			i386:  map[uint64]bool{37: true, 38: false},
		},
		{
			name:  "LE",
			arg:   specs.LinuxSeccompArg{Index: 3, Value: hi | 10, Op: specs.OpLessEqual},
			cases: map[uint64]bool{hi | 10: true, hi | 11: false, hi | 9: true, 0xffffffff: true, 2*hi | 0: false},
			i386:  map[uint64]bool{10: true, 11: false, 0xffffffff: false},
		},
		{
			name:  "GT",
			arg:   specs.LinuxSeccompArg{Index: 4, Value: hi | 5, Op: specs.OpGreaterThan},
			cases: map[uint64]bool{hi | 5: false, hi | 6: true, 2 * hi: true, hi | 4: false, 0xffffffff: false},
			i386:  map[uint64]bool{5: false, 6: true, 0xffffffff: true},
		},
		{
			name:  "GE",
			arg:   specs.LinuxSeccompArg{Index: 5, Value: 5, Op: specs.OpGreaterEqual},
			cases: map[uint64]bool{4: false, 5: true, 6: true, hi: true, ^uint64(0): true},
			i386:  map[uint64]bool{4: false, 5: true},
		},
		{
			name:  "GE 0",
			arg:   specs.LinuxSeccompArg{Index: 0, Value: 0, Op: specs.OpGreaterEqual},
			cases: map[uint64]bool{0: true, ^uint64(0): true},
			i386:  map[uint64]bool{0: true},
		},
		{
			name:  "MASKED_EQ low mask",
			arg:   specs.LinuxSeccompArg{Index: 0, Value: 0xff00, ValueTwo: 0x1200, Op: specs.OpMaskedEqual},
			cases: map[uint64]bool{0x1200: true, 0x12ab: true, 0x13ab: false, hi | 0x12ff: true, 0: false},
			i386:  map[uint64]bool{0x12ab: true, 0x13ab: false},
		},
		{
			name:  "MASKED_EQ high mask",
			arg:   specs.LinuxSeccompArg{Index: 1, Value: hi | 1, ValueTwo: hi, Op: specs.OpMaskedEqual},
			cases: map[uint64]bool{hi: true, hi | 2: true, hi | 1: false, 0: false, 2 * hi: false},
			i386:  map[uint64]bool{0: true, 1: false},
		},
		{
			name:  "MASKED_EQ zero expected",
			arg:   specs.LinuxSeccompArg{Index: 0, Value: cloneNewUser, Op: specs.OpMaskedEqual},
			cases: map[uint64]bool{0: true, cloneNewUser: false, cloneNewUser | 17: false, 17: true, hi: true},
			i386:  map[uint64]bool{17: true, cloneNewUser: false},
		},
		{
			name:  "MASKED_EQ unreachable value",
			arg:   specs.LinuxSeccompArg{Index: 0, Value: 0xf, ValueTwo: 0x10, Op: specs.OpMaskedEqual},
			cases: map[uint64]bool{0x10: false, 0x1f: false, 0: false},
			i386:  map[uint64]bool{0x10: false},
		},
	}
	const matched = unix.SECCOMP_RET_ERRNO | uint32(unix.EXDEV)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog := mustCompile(t, &specs.LinuxSeccomp{
				DefaultAction: specs.ActAllow,
				Architectures: []specs.Arch{specs.ArchX86},
				Syscalls: []specs.LinuxSyscall{{
					Names:    []string{"ioctl"},
					Action:   specs.ActErrno,
					ErrnoRet: ptr(uint(unix.EXDEV)),
					Args:     []specs.LinuxSeccompArg{tt.arg},
				}},
			})
			try := func(abi string, d seccompData, v uint64, match bool) {
				d.args[tt.arg.Index] = v
				want := uint32(allow)
				if match {
					want = matched
				}
				if got := mustRun(t, prog, d); got != want {
					t.Errorf("%s %s(arg%d=%#x): action %#x, want %#x", abi, tt.arg.Op, tt.arg.Index, v, got, want)
				}
			}
			for v, match := range tt.cases {
				try("x86_64", x64(t, "ioctl"), v, match)
			}
			for v, match := range tt.i386 {
				try("i386", i386(t, "ioctl"), v, match)
			}
		})
	}
}

func TestRuleOrder(t *testing.T) {
	const magic = 0x5401 // TCGETS
	conditional := specs.LinuxSyscall{
		Names: []string{"ioctl"}, Action: specs.ActErrno, ErrnoRet: ptr(uint(unix.ENOTTY)),
		Args: []specs.LinuxSeccompArg{{Index: 1, Value: magic, Op: specs.OpEqualTo}},
	}
	unconditional := specs.LinuxSyscall{Names: []string{"ioctl"}, Action: specs.ActAllow}
	both := specs.LinuxSyscall{
		Names: []string{"ioctl", "fcntl"}, Action: specs.ActTrap,
		Args: []specs.LinuxSeccompArg{
			{Index: 0, Value: 3, Op: specs.OpEqualTo},
			{Index: 1, Value: 2, Op: specs.OpGreaterEqual},
		},
	}
	tests := []struct {
		name  string
		rules []specs.LinuxSyscall
		cases []actionCase
	}{
		{
			name:  "conditional first",
			rules: []specs.LinuxSyscall{conditional, unconditional},
			cases: []actionCase{
				{"matching", x64(t, "ioctl", 1, magic), errno(unix.ENOTTY)},
				{"not matching", x64(t, "ioctl", 1, magic+1), allow},
			},
		},
		{
			name:  "unconditional first",
			rules: []specs.LinuxSyscall{unconditional, conditional},
			cases: []actionCase{
				{"matching", x64(t, "ioctl", 1, magic), allow},
				{"not matching", x64(t, "ioctl", 1, magic+1), allow},
			},
		},
		{
			name:  "conditions are ANDed",
			rules: []specs.LinuxSyscall{both, conditional},
			cases: []actionCase{
				{"both hold", x64(t, "ioctl", 3, magic), unix.SECCOMP_RET_TRAP},
				{"first fails", x64(t, "ioctl", 4, magic), errno(unix.ENOTTY)},
				{"second fails", x64(t, "ioctl", 3, 1), unix.SECCOMP_RET_KILL_THREAD},
				{"fcntl both hold", x64(t, "fcntl", 3, 2), unix.SECCOMP_RET_TRAP},
				{"fcntl second fails", x64(t, "fcntl", 3, 1), unix.SECCOMP_RET_KILL_THREAD},
			},
		},
		{
			name: "rules with the default action are dropped",
			rules: []specs.LinuxSyscall{
				{Names: []string{"ioctl"}, Action: specs.ActKill, Args: conditional.Args},
				unconditional,
			},
			cases: []actionCase{
				{"matching the dropped rule", x64(t, "ioctl", 1, magic), allow},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog := mustCompile(t, &specs.LinuxSeccomp{DefaultAction: specs.ActKillThread, Syscalls: tt.rules})
			runCases(t, prog, tt.cases)
		})
	}
}

func TestUnknownSyscalls(t *testing.T) {
	p := &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read", "no_such_syscall", "socketcall", "waitpid"}, Action: specs.ActAllow},
			{Names: []string{"socketcall"}, Action: specs.ActTrap},
		},
	}
	if got, want := UnknownSyscalls(p), []string{"no_such_syscall", "socketcall", "waitpid"}; !slices.Equal(got, want) {
		t.Errorf("UnknownSyscalls, native only = %q, want %q", got, want)
	}
	prog := mustCompile(t, p)
	runCases(t, prog, []actionCase{{"read", x64(t, "read"), allow}})

	p.Architectures = []specs.Arch{specs.ArchX86}
	if got, want := UnknownSyscalls(p), []string{"no_such_syscall"}; !slices.Equal(got, want) {
		t.Errorf("UnknownSyscalls with i386 = %q, want %q", got, want)
	}
	prog = mustCompile(t, p)
	runCases(t, prog, []actionCase{
		{"i386 socketcall", i386(t, "socketcall"), allow},
		{"i386 waitpid", i386(t, "waitpid"), allow},
		{"x86_64 read", x64(t, "read"), allow},
	})
}

// TestFarJumps compiles a profile whose rule blocks lie more than 255
// instructions from the dispatch, so that branches need BPF_JA trampolines.
func TestFarJumps(t *testing.T) {
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Architectures: []specs.Arch{specs.ArchX86}}
	names := make([]string, 0, len(syscallsX86_64))
	for name := range syscallsX86_64 {
		names = append(names, name)
	}
	slices.Sort(names)
	names = names[:250]
	for i, name := range names {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names: []string{name}, Action: specs.ActErrno, ErrnoRet: ptr(uint(i + 1)),
			Args: []specs.LinuxSeccompArg{{Index: uint(i % 6), Value: uint64(i), Op: specs.OpEqualTo}},
		})
	}
	prog := mustCompile(t, p)
	ja := 0
	for _, ins := range prog {
		if ins.Code == unix.BPF_JMP|unix.BPF_JA {
			ja++
		}
	}
	if ja == 0 {
		t.Errorf("no BPF_JA in a %d-instruction program", len(prog))
	}
	for i, name := range names {
		d := x64(t, name)
		d.args[i%6] = uint64(i)
		if got, want := mustRun(t, prog, d), unix.SECCOMP_RET_ERRNO|uint32(i+1); got != want {
			t.Errorf("%s(arg%d=%d): action %#x, want %#x", name, i%6, i, got, want)
		}
		d.args[i%6]++
		if got := mustRun(t, prog, d); got != allow {
			t.Errorf("%s(arg%d=%d): action %#x, want allow", name, i%6, i+1, got)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	allowRead := []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow}}
	sixArgs := make([]specs.LinuxSeccompArg, 6)
	for i := range sixArgs {
		sixArgs[i] = specs.LinuxSeccompArg{Index: uint(i), Value: uint64(i), Op: specs.OpLessEqual}
	}
	var tooLong []specs.LinuxSyscall
	for name := range syscallsX86_64 {
		tooLong = append(tooLong, specs.LinuxSyscall{Names: []string{name}, Action: specs.ActAllow, Args: sixArgs})
	}
	tests := []struct {
		name string
		p    *specs.LinuxSeccomp
		want error
	}{
		{"unknown default action", &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_MAYBE"}, errUnknownAction},
		{"unknown rule action", &specs.LinuxSeccomp{
			DefaultAction: specs.ActErrno,
			Syscalls:      []specs.LinuxSyscall{{Names: []string{"read"}, Action: "SCMP_ACT_MAYBE"}},
		}, errUnknownAction},
		{"notify default", &specs.LinuxSeccomp{DefaultAction: specs.ActNotify}, errNotify},
		{"notify rule", &specs.LinuxSeccomp{
			DefaultAction: specs.ActErrno,
			Syscalls:      []specs.LinuxSyscall{{Names: []string{"ioctl"}, Action: specs.ActNotify}},
		}, errNotify},
		{"arg index 6", &specs.LinuxSeccomp{
			DefaultAction: specs.ActErrno,
			Syscalls: []specs.LinuxSyscall{{
				Names: []string{"read"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}},
			}},
		}, errArgIndex},
		{"unknown operator", &specs.LinuxSeccomp{
			DefaultAction: specs.ActErrno,
			Syscalls: []specs.LinuxSyscall{{
				Names: []string{"read"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_ROUGHLY"}},
			}},
		}, errUnknownOp},
		{"errno out of range", &specs.LinuxSeccomp{
			DefaultAction: specs.ActErrno, DefaultErrnoRet: ptr(uint(0x10000)),
		}, errErrnoRange},
		{"unknown flag", &specs.LinuxSeccomp{
			DefaultAction: specs.ActErrno, Syscalls: allowRead,
			Flags: []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog, "SECCOMP_FILTER_FLAG_MAYBE"},
		}, errUnknownFlag},
		{"too long", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: tooLong}, errTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog, err := Compile(tt.p)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Compile = %d instructions, error %v; want error %v", len(prog), err, tt.want)
			}
		})
	}
	if _, err := Compile(nil); err == nil {
		t.Error("Compile(nil) succeeded")
	}
}

func TestFlags(t *testing.T) {
	tests := []struct {
		flags []specs.LinuxSeccompFlag
		want  uint
	}{
		{nil, 0},
		{[]specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog}, unix.SECCOMP_FILTER_FLAG_LOG},
		{[]specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow}, unix.SECCOMP_FILTER_FLAG_LOG | unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW},
		{[]specs.LinuxSeccompFlag{specs.LinuxSeccompFlagWaitKillableRecv}, 0},
		{[]specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_TSYNC"}, 0},
	}
	for _, tt := range tests {
		got, err := Flags(&specs.LinuxSeccomp{Flags: tt.flags})
		if err != nil || got != tt.want {
			t.Errorf("Flags(%q) = %#x, %v; want %#x", tt.flags, got, err, tt.want)
		}
	}
	if _, err := Flags(&specs.LinuxSeccomp{Flags: []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_NEW_LISTENER"}}); !errors.Is(err, errUnknownFlag) {
		t.Errorf("Flags(NEW_LISTENER) error = %v, want %v", err, errUnknownFlag)
	}
}

// reference decides like the filter Compile builds for p should, straight
// from the profile and without BPF.
func reference(p *specs.LinuxSeccomp, d seccompData) uint32 {
	table, wide := syscallsX86_64, true
	switch {
	case d.arch == archX86_64 && d.nr < x32SyscallBit:
	case d.arch == archX86_64 && slices.Contains(p.Architectures, specs.ArchX32):
		table, wide = syscallsX32, false
	case d.arch == archI386 && slices.Contains(p.Architectures, specs.ArchX86):
		table, wide = syscallsI386, false
	default:
		return killProcess
	}
	def := referenceAction(p.DefaultAction, p.DefaultErrnoRet)
	if !slices.Contains([]specs.LinuxSeccompAction{specs.ActAllow, specs.ActLog, specs.ActTrace}, p.DefaultAction) {
		known, last := false, uint32(0)
		for _, s := range p.Syscalls {
			for _, n := range s.Names {
				if nr, ok := table[n]; ok {
					known, last = true, max(last, nr)
				}
			}
		}
		if known && d.nr > last {
			return unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
		}
	}
	for _, s := range p.Syscalls {
		ret := referenceAction(s.Action, s.ErrnoRet)
		if ret == def || !slices.ContainsFunc(s.Names, func(n string) bool { nr, ok := table[n]; return ok && nr == d.nr }) {
			continue
		}
		if !slices.ContainsFunc(s.Args, func(a specs.LinuxSeccompArg) bool { return !referenceHolds(a, d.args[a.Index], wide) }) {
			return ret
		}
	}
	return def
}

func referenceAction(a specs.LinuxSeccompAction, errnoRet *uint) uint32 {
	e := uint32(unix.EPERM)
	if errnoRet != nil {
		e = uint32(*errnoRet)
	}
	switch a {
	case specs.ActAllow:
		return allow
	case specs.ActErrno:
		return unix.SECCOMP_RET_ERRNO | e
	case specs.ActTrace:
		return unix.SECCOMP_RET_TRACE | e
	case specs.ActKillProcess:
		return killProcess
	case specs.ActTrap:
		return unix.SECCOMP_RET_TRAP
	case specs.ActLog:
		return unix.SECCOMP_RET_LOG
	default:
		return unix.SECCOMP_RET_KILL_THREAD
	}
}

func referenceHolds(a specs.LinuxSeccompArg, v uint64, wide bool) bool {
	value, two := a.Value, a.ValueTwo
	if !wide {
		v, value, two = uint64(uint32(v)), uint64(uint32(value)), uint64(uint32(two))
	}
	switch a.Op {
	case specs.OpEqualTo:
		return v == value
	case specs.OpNotEqual:
		return v != value
	case specs.OpLessThan:
		return v < value
	case specs.OpLessEqual:
		return v <= value
	case specs.OpGreaterThan:
		return v > value
	case specs.OpGreaterEqual:
		return v >= value
	case specs.OpMaskedEqual:
		return v&value == two
	}
	panic("unknown operator " + a.Op)
}

// TestMatchesReference runs compiled profiles over every syscall number of
// every ABI, and around them, with assorted arguments, and compares each
// action with reference's.
func TestMatchesReference(t *testing.T) {
	random := rand.New(rand.NewPCG(1, 2))
	randomRules := func() []specs.LinuxSyscall {
		ops := []specs.LinuxSeccompOperator{
			specs.OpEqualTo, specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual,
			specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpMaskedEqual,
		}
		actions := []specs.LinuxSeccompAction{specs.ActAllow, specs.ActErrno, specs.ActTrap, specs.ActLog, specs.ActKillProcess}
		names := []string{"read", "write", "ioctl", "socket", "clone", "socketcall", "waitpid", "personality"}
		var rules []specs.LinuxSyscall
		for range 40 {
			s := specs.LinuxSyscall{
				Names:    []string{names[random.IntN(len(names))], names[random.IntN(len(names))]},
				Action:   actions[random.IntN(len(actions))],
				ErrnoRet: ptr(uint(random.IntN(4))),
			}
			for range random.IntN(3) {
				s.Args = append(s.Args, specs.LinuxSeccompArg{
					Index:    uint(random.IntN(2)),
					Value:    [...]uint64{0, 1, 2, 1 << 32, 3<<32 | 1}[random.IntN(5)],
					ValueTwo: [...]uint64{0, 1, 1 << 32}[random.IntN(3)],
					Op:       ops[random.IntN(len(ops))],
				})
			}
			rules = append(rules, s)
		}
		return rules
	}
	profiles := map[string]*specs.LinuxSeccomp{
		"default":              seccomp.Default(criOCaps),
		"default, every cap":   seccomp.Default(allCaps),
		"random, native":       {DefaultAction: specs.ActErrno, Syscalls: randomRules()},
		"random, all x86 ABIs": {DefaultAction: specs.ActAllow, Architectures: []specs.Arch{specs.ArchX86, specs.ArchX32}, Syscalls: randomRules()},
	}
	args := []uint64{0, 1, 2, 3, 17, 38, 39, 40, 41, 0xffff, 0xffffffff, 1 << 32, 1<<32 | 1, 3<<32 | 1, cloneNewUser, ^uint64(0)}
	for name, p := range profiles {
		t.Run(name, func(t *testing.T) {
			prog := mustCompile(t, p)
			var inputs []seccompData
			for _, arch := range []uint32{archX86_64, archI386, archAArch64} {
				for _, table := range []map[string]uint32{syscallsX86_64, syscallsI386, syscallsX32} {
					for _, nr := range table {
						for _, n := range []uint32{nr - 1, nr, nr + 1} {
							inputs = append(inputs, seccompData{nr: n, arch: arch})
							for range 4 {
								a0, a1 := args[random.IntN(len(args))], args[random.IntN(len(args))]
								inputs = append(inputs, seccompData{nr: n, arch: arch, args: [6]uint64{a0, a1}})
							}
						}
					}
				}
			}
			failures := 0
			for _, d := range inputs {
				got, want := mustRun(t, prog, d), reference(p, d)
				if got != want {
					t.Errorf("arch %#x nr %#x args %#x: action %#x, want %#x", d.arch, d.nr, d.args[:2], got, want)
					if failures++; failures > 20 {
						t.Fatal("too many failures")
					}
				}
			}
		})
	}
}

func ExampleCompile() {
	prog, err := Compile(&specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"read", "write", "exit_group"}, Action: specs.ActAllow}},
	})
	if err != nil {
		panic(err)
	}
	for _, ins := range prog {
		fmt.Printf("%#x %d %d %#x\n", ins.Code, ins.Jt, ins.Jf, ins.K)
	}
	// Output:
	// 0x20 0 0 0x4
	// 0x15 1 0 0xc000003e
	// 0x6 0 0 0x80000000
	// 0x20 0 0 0x0
	// 0x35 6 0 0x40000000
	// 0x35 1 0 0xe7
	// 0x35 2 1 0x2
	// 0x35 2 0 0xe8
	// 0x6 0 0 0x7fff0000
	// 0x6 0 0 0x50001
	// 0x6 0 0 0x50026
	// 0x6 0 0 0x80000000
}
