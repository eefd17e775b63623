package launch

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/test/testutil"
)

// runDeviceProgram interprets the eBPF that devicePolicy.program emits for
// one request and returns R0.
func runDeviceProgram(t *testing.T, prog []bpfInsn, typ, access, major, minor uint32) uint64 {
	t.Helper()
	var reg [11]uint64
	ctx := [3]uint32{access<<16 | typ, major, minor}
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		dst, src := in.regs&0xf, in.regs>>4
		jump := func(taken bool) {
			if taken {
				pc += int(in.off)
			}
		}
		switch in.code {
		case unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W:
			if src != r1 || in.off%4 != 0 || in.off/4 >= 3 {
				t.Fatalf("pc %d: load from r%d%+d", pc, src, in.off)
			}
			reg[dst] = uint64(ctx[in.off/4])
		case unix.BPF_ALU | unix.BPF_MOV | unix.BPF_X:
			reg[dst] = uint64(uint32(reg[src]))
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			reg[dst] = uint64(uint32(reg[dst]) & uint32(in.imm))
		case unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K:
			reg[dst] = uint64(uint32(reg[dst]) >> uint32(in.imm))
		case unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K:
			reg[dst] = uint64(int64(in.imm))
		case unix.BPF_JMP32 | unix.BPF_JNE | unix.BPF_K:
			jump(uint32(reg[dst]) != uint32(in.imm))
		case unix.BPF_JMP32 | unix.BPF_JEQ | unix.BPF_K:
			jump(uint32(reg[dst]) == uint32(in.imm))
		case unix.BPF_JMP | unix.BPF_EXIT:
			return reg[r0]
		default:
			t.Fatalf("pc %d: unexpected instruction %#x", pc, in.code)
		}
	}
	t.Fatalf("ran off the end of a %d-instruction program", len(prog))
	return 0
}

func i64(v int64) *int64 { return &v }

// criRules are the device rules crivm's CRI spec carries for an
// unprivileged container (oci.deviceRules): deny-all, then the defaults.
var criRules = []specs.LinuxDeviceCgroup{
	{Allow: false, Access: "rwm"},
	devRule("c", 1, 3), devRule("c", 1, 5), devRule("c", 1, 7), devRule("c", 1, 8), devRule("c", 1, 9),
	devRule("c", 5, 0), devRule("c", 5, 1), devRule("c", 5, 2), devRule("c", 136, wildcard),
}

// request is one device access: "c 1:3 rw".
type request struct {
	typ          string
	major, minor uint32
	access       string
}

func (r request) String() string {
	return fmt.Sprintf("%s %d:%d %s", r.typ, r.major, r.minor, r.access)
}

func TestDevicePolicy(t *testing.T) {
	type check struct {
		req   request
		allow bool
	}
	tests := []struct {
		name    string
		rules   []specs.LinuxDeviceCgroup
		wantErr string
		checks  []check
	}{
		{
			name:  "CRI defaults",
			rules: criRules,
			checks: []check{
				{request{"c", 1, 3, "rw"}, true},
				{request{"c", 1, 9, "r"}, true},
				{request{"c", 5, 1, "rw"}, true}, // console, from the spec
				{request{"c", 136, 7, "rw"}, true},
				{request{"c", 1, 1, "r"}, false}, // /dev/mem
				{request{"c", 1, 1, "w"}, false},
				{request{"c", 10, 200, "rw"}, false}, // tun: not a default
				{request{"b", 8, 0, "r"}, false},
				// runc's defaults let mknod any char or block device;
				// opening it is what the rules decide.
				{request{"c", 1, 1, "m"}, true},
				{request{"b", 8, 0, "m"}, true},
			},
		},
		{
			name:  "no rules: deny-all base and runc's defaults",
			rules: nil,
			checks: []check{
				{request{"c", 1, 3, "rwm"}, true},
				{request{"c", 5, 1, "rw"}, false},
				{request{"c", 4, 0, "r"}, false},
			},
		},
		{
			name:  "an extra device with partial access",
			rules: append(append([]specs.LinuxDeviceCgroup(nil), criRules...), specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i64(10), Minor: i64(229), Access: "r"}),
			checks: []check{
				{request{"c", 10, 229, "r"}, true},
				{request{"c", 10, 229, "rw"}, false},
				{request{"c", 10, 229, "w"}, false},
			},
		},
		{
			name: "deny removes part of an allow",
			rules: []specs.LinuxDeviceCgroup{
				{Allow: false, Access: "rwm"},
				{Allow: true, Type: "c", Major: i64(10), Minor: i64(229), Access: "rwm"},
				{Allow: false, Type: "c", Major: i64(10), Minor: i64(229), Access: "w"},
			},
			checks: []check{
				{request{"c", 10, 229, "r"}, true},
				{request{"c", 10, 229, "w"}, false},
			},
		},
		{
			name:  "privileged",
			rules: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Access: "rwm"}},
			checks: []check{
				{request{"b", 8, 0, "rw"}, true},
				{request{"c", 1, 1, "rwm"}, true},
			},
		},
		{
			name: "allow-all with exceptions",
			rules: []specs.LinuxDeviceCgroup{
				{Allow: true, Type: "a", Access: "rwm"},
				{Allow: false, Type: "c", Major: i64(1), Minor: i64(1), Access: "rwm"},
				{Allow: false, Type: "b", Access: "w"},
			},
			checks: []check{
				{request{"c", 1, 1, "r"}, false},
				// runc's "c *:* m" cannot lift the narrower exception.
				{request{"c", 1, 1, "m"}, false},
				{request{"c", 1, 2, "rw"}, true},
				{request{"b", 8, 0, "r"}, true},
				// A request is denied if any access it asks for is.
				{request{"b", 8, 0, "rw"}, false},
			},
		},
		{
			name: "a hole in a wildcard",
			rules: []specs.LinuxDeviceCgroup{
				{Allow: false, Access: "rwm"},
				{Allow: true, Type: "c", Access: "rwm"},
				{Allow: false, Type: "c", Major: i64(1), Minor: i64(1), Access: "r"},
			},
			wantErr: "punches a hole",
		},
		{name: "empty access", rules: []specs.LinuxDeviceCgroup{{Allow: true, Type: "c"}}, wantErr: "empty access"},
		{name: "bad access", rules: []specs.LinuxDeviceCgroup{{Allow: true, Type: "c", Access: "rx"}}, wantErr: "unknown mode"},
		{name: "bad type", rules: []specs.LinuxDeviceCgroup{{Allow: true, Type: "p", Access: "r"}}, wantErr: "unknown device type"},
	}
	types := map[string]uint32{"c": unix.BPF_DEVCG_DEV_CHAR, "b": unix.BPF_DEVCG_DEV_BLOCK}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newDevicePolicy(tt.rules)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			prog := p.program()
			for _, c := range tt.checks {
				access, err := parseAccess(c.req.access)
				if err != nil {
					t.Fatal(err)
				}
				got := runDeviceProgram(t, prog, types[c.req.typ], access, c.req.major, c.req.minor) == 1
				if got != c.allow {
					t.Errorf("%s: allowed %v, want %v", c.req, got, c.allow)
				}
			}
		})
	}
}

// The kernel's verifier accepts the programs.
func TestDeviceProgramLoads(t *testing.T) {
	testutil.RequiresRoot(t)
	for name, rules := range map[string][]specs.LinuxDeviceCgroup{
		"none":       nil,
		"CRI":        criRules,
		"privileged": {{Allow: false, Access: "rwm"}, {Allow: true, Access: "rwm"}},
		"allow-all with exceptions": {
			{Allow: true, Access: "rwm"}, {Allow: false, Type: "b", Access: "w"},
		},
	} {
		p, err := newDevicePolicy(rules)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := loadDeviceProgram(p.program())
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		unix.Close(fd)
	}
}

// cgroup2Dir makes a cgroup in the host's cgroup v2 hierarchy for the
// test, removed at its end, and skips the test without one.
func cgroup2Dir(t *testing.T) string {
	t.Helper()
	testutil.RequiresRoot(t)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var root string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				root = fields[4]
			}
		}
	}
	if root == "" {
		t.Skip("no cgroup v2 hierarchy mounted")
	}
	dir, err := os.MkdirTemp(root, "crivm-launch-test-")
	if err != nil {
		t.Skipf("cannot make a cgroup: %v", err)
	}
	t.Cleanup(func() {
		KillCgroup(dir)
		if err := RemoveCgroup(dir, 5e9); err != nil {
			t.Errorf("removing the test cgroup: %v", err)
		}
	})
	return dir
}

// The kernel enforces the program: in a cgroup whose filter lacks the
// mknod access of a device, mknod of it fails with EPERM, while one the
// filter allows is made. (runc's default rules let mknod every device, so
// this filter is made without them.)
func TestDeviceFilterMknod(t *testing.T) {
	dir := cgroup2Dir(t)
	bb := testutil.RequiresBinary(t, "busybox")
	p := &devicePolicy{exceptions: map[devKey]uint32{{unix.BPF_DEVCG_DEV_CHAR, 1, 3}: accAll}}
	if err := attachDeviceProgram(dir, p.program()); err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	nodes := t.TempDir()
	tests := []struct {
		name, major, minor string
		wantErr            bool
	}{
		{"null", "1", "3", false},
		{"mem", "1", "1", true},
		{"sda", "8", "0", true},
	}
	for _, tt := range tests {
		typ := "c"
		if tt.name == "sda" {
			typ = "b"
		}
		cmd := exec.Command(bb, "mknod", filepath.Join(nodes, tt.name), typ, tt.major, tt.minor)
		cmd.SysProcAttr = &unix.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
		out, err := cmd.CombinedOutput()
		if gotErr := err != nil; gotErr != tt.wantErr {
			t.Errorf("mknod %s %s %s:%s: %v %s, want failure %v", tt.name, typ, tt.major, tt.minor, err, out, tt.wantErr)
		}
		if tt.wantErr && !bytes.Contains(out, []byte("Operation not permitted")) {
			t.Errorf("mknod %s: %q, want EPERM", tt.name, out)
		}
	}
}
