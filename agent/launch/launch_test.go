package launch

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/oci/seccomp"
	"github.com/crivm/crivm/test/testutil"
)

func ptr[T any](v T) *T { return &v }

func TestCgroupFiles(t *testing.T) {
	tests := []struct {
		name    string
		res     *specs.LinuxResources
		want    []string
		wantErr bool
	}{
		{"nil", nil, nil, false},
		{"memory", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20)), Reservation: ptr(int64(32 << 20))}},
			[]string{"memory.max=67108864", "memory.low=33554432"}, false},
		{"unlimited memory", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(-1))}}, []string{"memory.max=max"}, false},
		{"swap is memory+swap", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(100)), Swap: ptr(int64(300))}},
			[]string{"memory.max=100", "memory.swap.max=200"}, false},
		{"swap below limit", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(300)), Swap: ptr(int64(100))}}, nil, true},
		{"cpu shares to weight", &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: ptr(uint64(1024))}}, []string{"cpu.weight=39"}, false},
		{"cpu shares floor", &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: ptr(uint64(2))}}, []string{"cpu.weight=1"}, false},
		{"cpu shares ceiling", &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: ptr(uint64(1 << 20))}}, []string{"cpu.weight=10000"}, false},
		{"quota and period", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr(int64(50000)), Period: ptr(uint64(100000))}},
			[]string{"cpu.max=50000 100000"}, false},
		{"period only", &specs.LinuxResources{CPU: &specs.LinuxCPU{Period: ptr(uint64(20000))}}, []string{"cpu.max=max 20000"}, false},
		{"cpuset", &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0-1", Mems: "0"}}, []string{"cpuset.cpus=0-1", "cpuset.mems=0"}, false},
		{"pids", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(int64(100))}}, []string{"pids.max=100"}, false},
		{"hugetlb", &specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}}},
			[]string{"hugetlb.2MB.max=4194304"}, false},
		{"unified", &specs.LinuxResources{Unified: map[string]string{"memory.high": "1000"}}, []string{"memory.high=1000"}, false},
		{"unified escape", &specs.LinuxResources{Unified: map[string]string{"../x": "1"}}, nil, true},
		{"unified cgroup.procs", &specs.LinuxResources{Unified: map[string]string{"cgroup.procs": "1"}}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := cgroupFiles(tt.res)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			var got []string
			for _, f := range files {
				got = append(got, f.name+"="+f.value)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseMountOptions(t *testing.T) {
	tests := []struct {
		opts      []string
		wantFlags uintptr
		wantProp  []uintptr
		wantData  string
	}{
		{[]string{"nosuid", "strictatime", "mode=755", "size=65536k"}, unix.MS_NOSUID | unix.MS_STRICTATIME, nil, "mode=755,size=65536k"},
		{[]string{"rbind", "ro", "rprivate"}, unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, []uintptr{unix.MS_PRIVATE | unix.MS_REC}, ""},
		{[]string{"ro", "rw"}, 0, nil, ""},
		{[]string{"rbind", "rprivate", "rro"}, unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, []uintptr{unix.MS_PRIVATE | unix.MS_REC}, ""},
		{[]string{"nosuid", "suid", "noexec", "newinstance", "ptmxmode=0666"}, unix.MS_NOEXEC, nil, "newinstance,ptmxmode=0666"},
	}
	for _, tt := range tests {
		flags, prop, data := parseMountOptions(tt.opts)
		if flags != tt.wantFlags || !slices.Equal(prop, tt.wantProp) || data != tt.wantData {
			t.Errorf("%v: got %#x %v %q, want %#x %v %q", tt.opts, flags, prop, data, tt.wantFlags, tt.wantProp, tt.wantData)
		}
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), nil, 0o644)
	tests := []struct {
		name, cmd string
		env       []string
		want      string
		wantErr   string
	}{
		{"in PATH", "tool", []string{"PATH=/nonexistent:" + dir}, exe, ""},
		{"absolute", exe, nil, exe, ""},
		{"relative to cwd", "./tool", nil, exe, ""},
		{"not in PATH", "tool", []string{"PATH=/nonexistent"}, "", "not found in $PATH"},
		{"not executable", filepath.Join(dir, "data"), nil, "", "permission denied"},
		{"a directory", dir, nil, "", "permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LookPath(tt.cmd, tt.env, dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestSpecNamespaces(t *testing.T) {
	testutil.RequiresRoot(t)
	other := exec.Command("sleep", "30")
	other.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWIPC}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	otherIPC := fmt.Sprintf("/proc/%d/ns/ipc", other.Process.Pid)

	flags, join, err := SpecNamespaces([]specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
		{Type: specs.NetworkNamespace, Path: "/proc/self/ns/net"}, // the caller's own: nothing to join
		{Type: specs.IPCNamespace, Path: otherIPC},
	})
	if err != nil {
		t.Fatal(err)
	}
	if flags != unix.CLONE_NEWPID|unix.CLONE_NEWNS {
		t.Errorf("flags %#x, want NEWPID|NEWNS", flags)
	}
	if want := []Namespace{{specs.IPCNamespace, otherIPC}}; !slices.Equal(join, want) {
		t.Errorf("join %v, want %v", join, want)
	}
	if _, _, err := SpecNamespaces([]specs.LinuxNamespace{{Type: specs.UserNamespace}}); err == nil {
		t.Error("a user namespace was accepted")
	}
	if _, _, err := SpecNamespaces([]specs.LinuxNamespace{{Type: specs.PIDNamespace, Path: "/nonexistent"}}); err == nil {
		t.Error("a missing namespace path was accepted")
	}
}

func TestCompileSeccompCache(t *testing.T) {
	a := seccomp.Default([]string{"CAP_KILL"})
	b := seccomp.Default([]string{"CAP_SYS_ADMIN"})
	fa, err := compileSeccomp(a)
	if err != nil || len(fa.Prog) == 0 {
		t.Fatalf("compiling: %v, %d instructions", err, len(fa.Prog))
	}
	again, _ := compileSeccomp(seccomp.Default([]string{"CAP_KILL"}))
	if again != fa {
		t.Error("the same profile was compiled twice")
	}
	if fb, _ := compileSeccomp(b); fb == fa {
		t.Error("two different profiles share a program")
	}
	bad := &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_NOPE"}
	if _, err := compileSeccomp(bad); !errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a bad profile: %v, want FailedPrecondition", err)
	}
	if _, err := Spawn(Options{Config: Config{Mode: ModeExec, Spec: &specs.Spec{Linux: &specs.Linux{Seccomp: bad}}, Process: &specs.Process{Args: []string{"true"}}}}); !errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Spawn with a bad profile: %v, want FailedPrecondition before any fork", err)
	}
}
