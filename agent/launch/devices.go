package launch

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Device access bits, as the kernel passes them to a device program
// (BPF_DEVCG_ACC_*) in the high half of bpf_cgroup_dev_ctx.access_type.
const (
	accMknod = unix.BPF_DEVCG_ACC_MKNOD
	accRead  = unix.BPF_DEVCG_ACC_READ
	accWrite = unix.BPF_DEVCG_ACC_WRITE
	accAll   = accMknod | accRead | accWrite
)

// wildcard is a major or minor number that matches every number.
const wildcard = -1

// runcDefaultDevices are the rules runc appends to every spec's device
// rules (libcontainer/specconv AllowedDevices): mknod of any character or
// block device, and use of null, random, full, tty, zero, urandom, the
// devpts ptys and ptmx. Being appended, they cannot be taken away by the
// spec; only an opening of a device needs a rule of the spec.
var runcDefaultDevices = []specs.LinuxDeviceCgroup{
	{Allow: true, Type: "c", Access: "m"},
	{Allow: true, Type: "b", Access: "m"},
	devRule("c", 1, 3), devRule("c", 1, 8), devRule("c", 1, 7), devRule("c", 5, 0),
	devRule("c", 1, 5), devRule("c", 1, 9), devRule("c", 136, wildcard), devRule("c", 5, 2),
}

func devRule(typ string, major, minor int64) specs.LinuxDeviceCgroup {
	r := specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Access: "rwm"}
	if minor != wildcard {
		r.Minor = &minor
	}
	return r
}

// devKey is the device (or wildcard range) an exception covers; typ is
// BPF_DEVCG_DEV_BLOCK or BPF_DEVCG_DEV_CHAR.
type devKey struct {
	typ          uint32
	major, minor int64
}

// devicePolicy is the state a cgroup v1 devices controller reaches after
// the rules are written to it in order, which is what the OCI spec's
// rules mean: a default verdict and the exceptions to it, each with the
// accesses it covers.
type devicePolicy struct {
	defaultAllow bool
	exceptions   map[devKey]uint32
}

// newDevicePolicy starts from deny-all, as a cgroup v2 device program
// does, and applies rules and then runcDefaultDevices.
func newDevicePolicy(rules []specs.LinuxDeviceCgroup) (*devicePolicy, error) {
	p := &devicePolicy{exceptions: map[devKey]uint32{}}
	for i, r := range slices.Concat(rules, runcDefaultDevices) {
		if err := p.apply(r); err != nil {
			return nil, fmt.Errorf("device rule %d %+v: %w", i, r, err)
		}
	}
	return p, nil
}

// apply applies one rule with the cgroup v1 semantics: a rule of type "a"
// resets the policy to its verdict; a rule that disagrees with the
// default adds an exception; one that agrees removes the accesses from the
// exception of exactly its device. Removing accesses that a wider wildcard
// exception also covers is refused (v1 would silently keep them), as runc
// refuses it.
func (p *devicePolicy) apply(r specs.LinuxDeviceCgroup) error {
	access, err := parseAccess(r.Access)
	if err != nil {
		return err
	}
	key := devKey{major: wildcard, minor: wildcard}
	switch r.Type {
	case "", "a":
		*p = devicePolicy{defaultAllow: r.Allow, exceptions: map[devKey]uint32{}}
		return nil
	case "b":
		key.typ = unix.BPF_DEVCG_DEV_BLOCK
	case "c":
		key.typ = unix.BPF_DEVCG_DEV_CHAR
	default:
		return fmt.Errorf("unknown device type %q", r.Type)
	}
	if r.Major != nil {
		key.major = *r.Major
	}
	if r.Minor != nil {
		key.minor = *r.Minor
	}
	if r.Allow != p.defaultAllow {
		p.exceptions[key] |= access
		return nil
	}
	for _, wider := range []devKey{{key.typ, wildcard, key.minor}, {key.typ, key.major, wildcard}, {key.typ, wildcard, wildcard}} {
		if wider != key && p.exceptions[wider]&access != 0 {
			return fmt.Errorf("the rule punches a hole in the wildcard exception %+v", wider)
		}
	}
	if left := p.exceptions[key] &^ access; left != 0 {
		p.exceptions[key] = left
	} else {
		delete(p.exceptions, key)
	}
	return nil
}

func parseAccess(s string) (uint32, error) {
	var a uint32
	for _, c := range s {
		switch c {
		case 'r':
			a |= accRead
		case 'w':
			a |= accWrite
		case 'm':
			a |= accMknod
		default:
			return 0, fmt.Errorf("access %q: unknown mode %q", s, c)
		}
	}
	if a == 0 {
		return 0, fmt.Errorf("empty access")
	}
	return a, nil
}

// bpfInsn is struct bpf_insn; regs holds dst_reg in its low and src_reg
// in its high nibble.
type bpfInsn struct {
	code uint8
	regs uint8
	off  int16
	imm  int32
}

// eBPF registers the program uses: R0 the verdict, R1 the context, R2 to
// R5 the request, R6 scratch.
const (
	r0, r1, r2, r3, r4, r5, r6 = 0, 1, 2, 3, 4, 5, 6
)

func ldxw(dst, src uint8, off int16) bpfInsn {
	return bpfInsn{code: unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W, regs: dst | src<<4, off: off}
}

func alu32Imm(op uint8, dst uint8, imm int32) bpfInsn {
	return bpfInsn{code: unix.BPF_ALU | op | unix.BPF_K, regs: dst, imm: imm}
}

func mov32Reg(dst, src uint8) bpfInsn {
	return bpfInsn{code: unix.BPF_ALU | unix.BPF_MOV | unix.BPF_X, regs: dst | src<<4}
}

func mov64Imm(dst uint8, imm int32) bpfInsn {
	return bpfInsn{code: unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K, regs: dst, imm: imm}
}

// jmp32Imm jumps off instructions forward when the low 32 bits of dst
// compare to imm with op.
func jmp32Imm(op uint8, dst uint8, imm int32, off int16) bpfInsn {
	return bpfInsn{code: unix.BPF_JMP32 | op | unix.BPF_K, regs: dst, imm: imm, off: off}
}

func exitInsn() bpfInsn { return bpfInsn{code: unix.BPF_JMP | unix.BPF_EXIT} }

// program compiles p into a BPF_PROG_TYPE_CGROUP_DEVICE program: it
// returns 1 (allow) or 0 (deny) for a bpf_cgroup_dev_ctx. An exception of
// a deny-by-default policy matches a request whose accesses it all
// covers; one of an allow-by-default policy matches a request that asks
// for any access it covers. A matching exception decides against the
// default.
func (p *devicePolicy) program() []bpfInsn {
	prog := []bpfInsn{
		ldxw(r2, r1, 0), // access_type
		mov32Reg(r3, r2),
		alu32Imm(unix.BPF_AND, r3, 0xffff), // R3: device type
		alu32Imm(unix.BPF_RSH, r2, 16),     // R2: accesses
		ldxw(r4, r1, 4),                    // R4: major
		ldxw(r5, r1, 8),                    // R5: minor
	}
	keys := slices.SortedFunc(maps.Keys(p.exceptions), func(a, b devKey) int {
		return cmp.Or(cmp.Compare(a.typ, b.typ), cmp.Compare(a.major, b.major), cmp.Compare(a.minor, b.minor))
	})
	verdict, fallback := int32(0), int32(1)
	if !p.defaultAllow {
		verdict, fallback = 1, 0
	}
	for _, k := range keys {
		access := p.exceptions[k]
		// Each test jumps to the next block on a mismatch: past the
		// tests after it and the two-instruction return.
		var tests [][]bpfInsn
		tests = append(tests, []bpfInsn{jmp32Imm(unix.BPF_JNE, r3, int32(k.typ), 0)})
		switch {
		case access == accAll:
		case p.defaultAllow:
			tests = append(tests, []bpfInsn{mov32Reg(r6, r2), alu32Imm(unix.BPF_AND, r6, int32(access)), jmp32Imm(unix.BPF_JEQ, r6, 0, 0)})
		default:
			tests = append(tests, []bpfInsn{mov32Reg(r6, r2), alu32Imm(unix.BPF_AND, r6, int32(^access&accAll)), jmp32Imm(unix.BPF_JNE, r6, 0, 0)})
		}
		if k.major != wildcard {
			tests = append(tests, []bpfInsn{jmp32Imm(unix.BPF_JNE, r4, int32(k.major), 0)})
		}
		if k.minor != wildcard {
			tests = append(tests, []bpfInsn{jmp32Imm(unix.BPF_JNE, r5, int32(k.minor), 0)})
		}
		left := 2
		for _, t := range tests {
			left += len(t)
		}
		for _, t := range tests {
			left -= len(t)
			t[len(t)-1].off = int16(left)
			prog = append(prog, t...)
		}
		prog = append(prog, mov64Imm(r0, verdict), exitInsn())
	}
	return append(prog, mov64Imm(r0, fallback), exitInsn())
}

// encodeProgram encodes prog as the kernel reads it (little-endian x86).
func encodeProgram(prog []bpfInsn) []byte {
	b := make([]byte, 0, 8*len(prog))
	for _, in := range prog {
		b = append(b, in.code, in.regs)
		b = binary.LittleEndian.AppendUint16(b, uint16(in.off))
		b = binary.LittleEndian.AppendUint32(b, uint32(in.imm))
	}
	return b
}

// bpfProgLoadAttr is the BPF_PROG_LOAD part of union bpf_attr, up to the
// fields this package sets.
type bpfProgLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
	progName    [unix.BPF_OBJ_NAME_LEN]byte
}

// bpfProgAttachAttr is the BPF_PROG_ATTACH part of union bpf_attr.
type bpfProgAttachAttr struct {
	targetFd    uint32
	attachBpfFd uint32
	attachType  uint32
	attachFlags uint32
}

func bpf(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// loadDeviceProgram loads prog and returns its fd (close-on-exec).
func loadDeviceProgram(prog []bpfInsn) (int, error) {
	insns := encodeProgram(prog)
	license := []byte("Apache-2.0\x00")
	attr := bpfProgLoadAttr{
		progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE,
		insnCnt:  uint32(len(prog)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	copy(attr.progName[:], "crivm_devices")
	fd, err := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	if err != nil {
		return -1, fmt.Errorf("loading the device program: %w", err)
	}
	return fd, nil
}

// AttachDeviceFilter attaches to the cgroup v2 directory dir a device
// program that enforces rules (the spec's Linux.Resources.Devices) followed
// by runc's default rules, on a deny-all base: the container's processes
// can mknod and open only the devices these allow. Programs attached
// before stay (BPF_F_ALLOW_MULTI): a device is usable only if every one
// allows it.
func AttachDeviceFilter(dir string, rules []specs.LinuxDeviceCgroup) error {
	p, err := newDevicePolicy(rules)
	if err != nil {
		return fmt.Errorf("building the device filter: %w", err)
	}
	return attachDeviceProgram(dir, p.program())
}

func attachDeviceProgram(dir string, prog []bpfInsn) error {
	pfd, err := loadDeviceProgram(prog)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	cg, err := openCgroup(dir)
	if err != nil {
		return err
	}
	defer unix.Close(cg)
	attr := bpfProgAttachAttr{
		targetFd:    uint32(cg),
		attachBpfFd: uint32(pfd),
		attachType:  unix.BPF_CGROUP_DEVICE,
		attachFlags: unix.BPF_F_ALLOW_MULTI,
	}
	if _, err := bpf(unix.BPF_PROG_ATTACH, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		return fmt.Errorf("attaching the device filter to %s: %w", dir, err)
	}
	return nil
}
