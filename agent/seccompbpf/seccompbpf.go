// Package seccompbpf compiles OCI runtime-spec seccomp profiles into classic
// BPF seccomp filters for x86_64 kernels, and loads them, without cgo or
// libseccomp. The filters decide like the ones runc builds with libseccomp
// for the profiles container runtimes generate:
//
//   - the x86_64 ABI is always filtered; the i386 and x32 ABIs are filtered
//     when the profile lists SCMP_ARCH_X86 or SCMP_ARCH_X32, and killed
//     (SECCOMP_RET_KILL_PROCESS) otherwise, as is any other audit arch;
//   - syscall names resolve per ABI through tables generated from the kernel
//     headers; a name an ABI lacks is skipped for that ABI, and a name no
//     filtered ABI knows is skipped altogether (see UnknownSyscalls);
//   - a rule whose action is the default action is dropped, as runc does;
//   - the rules naming a syscall are tried in profile order, and the first
//     whose argument conditions all hold decides; when none does, the
//     default action does;
//   - argument conditions compare the full 64-bit argument for x86_64 and
//     only its low 32 bits for the 32-bit ABIs (i386, x32), as libseccomp
//     does;
//   - a syscall number above the highest one the profile names for its ABI
//     answers ENOSYS, not the default action, unless that action lets
//     syscalls through (SCMP_ACT_ALLOW, SCMP_ACT_LOG, SCMP_ACT_TRACE): a
//     syscall newer than the profile is one the kernel might lack, and
//     libc falls back from it on ENOSYS only (as runc's -ENOSYS stub, which
//     it prepends to libseccomp's filter, does).
//
// The program dispatches on the syscall number with a binary search over
// number ranges that share an outcome, so it stays short and the kernel's
// constant-action cache covers every unconditionally allowed syscall.
package seccompbpf

//go:generate go run gen.go -o zsyscalls.go

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const (
	// x32SyscallBit is set in the number of every x32 syscall.
	x32SyscallBit = 0x40000000

	// maxInsns is BPF_MAXINSNS, the kernel's limit on a filter's length.
	maxInsns = 4096

	// badArchAction answers syscalls of an ABI the filter does not cover.
	badArchAction = unix.SECCOMP_RET_KILL_PROCESS

	// Offsets into struct seccomp_data.
	offsetNr   = 0
	offsetArch = 4
	offsetArgs = 16

	// numArgs is the number of syscall arguments seccomp_data holds.
	numArgs = 6
)

// flagTsync is accepted and ignored, like runc does: Load filters the
// calling thread only.
const flagTsync specs.LinuxSeccompFlag = "SECCOMP_FILTER_FLAG_TSYNC"

var (
	errUnknownAction = errors.New("unknown action")
	errNotify        = errors.New("SCMP_ACT_NOTIFY is not supported")
	errUnknownOp     = errors.New("unknown operator")
	errArgIndex      = errors.New("argument index out of range")
	errErrnoRange    = errors.New("errno out of range")
	errUnknownFlag   = errors.New("unknown flag")
	errTooLong       = errors.New("filter longer than BPF_MAXINSNS")
)

// Compile turns p into a seccomp filter program for the running kernel's
// native arch (x86_64).
func Compile(p *specs.LinuxSeccomp) ([]unix.SockFilter, error) {
	c, err := newCompiler(p)
	if err != nil {
		return nil, err
	}
	prog, err := c.compile()
	if err != nil {
		return nil, fmt.Errorf("assembling seccomp filter: %w", err)
	}
	if len(prog) > maxInsns {
		return nil, fmt.Errorf("assembling seccomp filter: %w: %d instructions", errTooLong, len(prog))
	}
	return prog, nil
}

// Flags returns the seccomp(2) filter flags p asks for.
// SECCOMP_FILTER_FLAG_TSYNC is ignored, as runc ignores it, and
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is accepted but left out: the
// kernel takes it only with SECCOMP_FILTER_FLAG_NEW_LISTENER, which this
// package never sets since it does not support SCMP_ACT_NOTIFY.
func Flags(p *specs.LinuxSeccomp) (uint, error) {
	var flags uint
	for _, f := range p.Flags {
		switch f {
		case flagTsync, specs.LinuxSeccompFlagWaitKillableRecv:
		case specs.LinuxSeccompFlagLog:
			flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case specs.LinuxSeccompFlagSpecAllow:
			flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		default:
			return 0, fmt.Errorf("translating seccomp flags: %w %q", errUnknownFlag, f)
		}
	}
	return flags, nil
}

// UnknownSyscalls returns, sorted, the syscall names p's rules use that no
// ABI the filter covers knows. Compile skips them.
func UnknownSyscalls(p *specs.LinuxSeccomp) []string {
	abis := enabledABIs(p)
	var unknown []string
	for _, s := range p.Syscalls {
		for _, name := range s.Names {
			if !slices.ContainsFunc(abis, func(a abi) bool { _, ok := a.table[name]; return ok }) {
				unknown = append(unknown, name)
			}
		}
	}
	slices.Sort(unknown)
	return slices.Compact(unknown)
}

// abi is one of the syscall ABIs an x86_64 kernel serves.
type abi struct {
	table map[string]uint32
	// wide reports whether arguments are 64 bits wide; for the others only
	// the low word of seccomp_data.args[i] is compared.
	wide bool
}

var (
	abiX86_64 = abi{table: syscallsX86_64, wide: true}
	abiX32    = abi{table: syscallsX32}
	abiI386   = abi{table: syscallsI386}
)

// enabledABIs returns the ABIs p's filter covers: x86_64 always, like
// libseccomp's native arch, then those of p.Architectures. Other
// architectures can never match on an x86_64 kernel and are ignored.
func enabledABIs(p *specs.LinuxSeccomp) []abi {
	abis := []abi{abiX86_64}
	if slices.Contains(p.Architectures, specs.ArchX32) {
		abis = append(abis, abiX32)
	}
	if slices.Contains(p.Architectures, specs.ArchX86) {
		abis = append(abis, abiI386)
	}
	return abis
}

// rule is a compiled specs.LinuxSyscall.
type rule struct {
	names []string
	ret   uint32 // SECCOMP_RET_* action with its data
	args  []specs.LinuxSeccompArg
}

type compiler struct {
	def      uint32 // default action
	rules    []*rule
	names    []string // every syscall the profile names, rules dropped or not
	enosys   bool     // numbers above the highest named one answer ENOSYS
	x32      bool
	i386     bool
	a        assembler
	retLabel map[uint32]label // per section: the shared "ret k" of each action
	rets     []uint32         // per section: retLabel's keys in first-use order
}

func newCompiler(p *specs.LinuxSeccomp) (*compiler, error) {
	if p == nil {
		return nil, errors.New("compiling seccomp profile: no profile")
	}
	if _, err := Flags(p); err != nil {
		return nil, err
	}
	def, err := action(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("compiling default action: %w", err)
	}
	c := &compiler{
		def:    def,
		enosys: !slices.Contains([]specs.LinuxSeccompAction{specs.ActAllow, specs.ActLog, specs.ActTrace}, p.DefaultAction),
		x32:    slices.Contains(p.Architectures, specs.ArchX32),
		i386:   slices.Contains(p.Architectures, specs.ArchX86),
	}
	for i, s := range p.Syscalls {
		r, err := compileRule(s)
		if err != nil {
			return nil, fmt.Errorf("compiling rule %d for %s: %w", i, describe(s.Names), err)
		}
		c.names = append(c.names, s.Names...)
		if r.ret != def {
			c.rules = append(c.rules, r)
		}
	}
	return c, nil
}

// lastNamed returns the highest number of the syscalls the profile names
// that abi knows, and whether it knows any.
func (c *compiler) lastNamed(abi abi) (uint32, bool) {
	var last uint32
	known := false
	for _, name := range c.names {
		if nr, ok := abi.table[name]; ok && (!known || nr > last) {
			last, known = nr, true
		}
	}
	return last, known
}

// describe names a rule's syscalls in an error message.
func describe(names []string) string {
	switch len(names) {
	case 0:
		return "no syscall"
	case 1, 2, 3:
		return strings.Join(names, ", ")
	default:
		return fmt.Sprintf("%s and %d more", strings.Join(names[:3], ", "), len(names)-3)
	}
}

func compileRule(s specs.LinuxSyscall) (*rule, error) {
	ret, err := action(s.Action, s.ErrnoRet)
	if err != nil {
		return nil, err
	}
	for _, arg := range s.Args {
		if arg.Index >= numArgs {
			return nil, fmt.Errorf("%w: %d", errArgIndex, arg.Index)
		}
		if _, ok := operators[arg.Op]; !ok {
			return nil, fmt.Errorf("%w %q", errUnknownOp, arg.Op)
		}
	}
	return &rule{names: s.Names, ret: ret, args: s.Args}, nil
}

// action returns the SECCOMP_RET_* value of a, with errnoRet as its data for
// SCMP_ACT_ERRNO and SCMP_ACT_TRACE (EPERM when nil, as runc does).
func action(a specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	data := func() (uint32, error) {
		if errnoRet == nil {
			return uint32(unix.EPERM), nil
		}
		if *errnoRet > unix.SECCOMP_RET_DATA {
			return 0, fmt.Errorf("%w: %d", errErrnoRange, *errnoRet)
		}
		return uint32(*errnoRet), nil
	}
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD, nil
	case specs.ActKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case specs.ActTrap:
		return unix.SECCOMP_RET_TRAP, nil
	case specs.ActErrno:
		d, err := data()
		return unix.SECCOMP_RET_ERRNO | d, err
	case specs.ActTrace:
		d, err := data()
		return unix.SECCOMP_RET_TRACE | d, err
	case specs.ActAllow:
		return unix.SECCOMP_RET_ALLOW, nil
	case specs.ActLog:
		return unix.SECCOMP_RET_LOG, nil
	case specs.ActNotify:
		return 0, errNotify
	default:
		return 0, fmt.Errorf("%w %q", errUnknownAction, a)
	}
}

// operator describes how a condition compares an argument with Value: the
// low words are compared with jmp, whose holding means the condition holds
// unless invert. For ordered operators a greater high word decides
// (against the condition when invert); for the others unequal high words
// do.
type operator struct {
	jmp     uint16
	invert  bool
	ordered bool
	masked  bool // compare arg & Value with ValueTwo
}

var operators = map[specs.LinuxSeccompOperator]operator{
	specs.OpEqualTo:      {jmp: unix.BPF_JEQ},
	specs.OpNotEqual:     {jmp: unix.BPF_JEQ, invert: true},
	specs.OpGreaterThan:  {jmp: unix.BPF_JGT, ordered: true},
	specs.OpGreaterEqual: {jmp: unix.BPF_JGE, ordered: true},
	specs.OpLessThan:     {jmp: unix.BPF_JGE, ordered: true, invert: true},
	specs.OpLessEqual:    {jmp: unix.BPF_JGT, ordered: true, invert: true},
	specs.OpMaskedEqual:  {jmp: unix.BPF_JEQ, masked: true},
}

// compile lays out the whole program: the arch dispatch, then one section
// per ABI, each entered with the syscall number in A.
func (c *compiler) compile() ([]unix.SockFilter, error) {
	a := &c.a
	entry64, entry386 := a.newLabel(), label(-1)
	a.load(offsetArch)
	next := a.newLabel()
	a.jump(unix.BPF_JEQ, unix.AUDIT_ARCH_X86_64, entry64, next)
	a.bind(next)
	if c.i386 {
		entry386 = a.newLabel()
		next := a.newLabel()
		a.jump(unix.BPF_JEQ, unix.AUDIT_ARCH_I386, entry386, next)
		a.bind(next)
	}
	a.ret(badArchAction)

	a.bind(entry64)
	a.load(offsetNr)
	x32, body := a.newLabel(), a.newLabel()
	a.jump(unix.BPF_JGE, x32SyscallBit, x32, body)
	a.bind(body)
	c.section(abiX86_64)
	a.bind(x32)
	if c.x32 {
		c.section(abiX32)
	} else {
		a.ret(badArchAction)
	}

	if c.i386 {
		a.bind(entry386)
		a.load(offsetNr)
		c.section(abiI386)
	}
	return a.resolve()
}

// outcome is what a syscall number leads to: either the rule block
// blocks[block], or when block < 0 the action ret.
type outcome struct {
	ret   uint32
	block int
}

// segment is the range of syscall numbers from start to the next
// segment's start, all leading to out.
type segment struct {
	start uint32
	out   outcome
}

// section emits the filter of one ABI, entered with the syscall number in
// A: a binary search over segments, then the rule blocks of the syscalls
// with argument conditions, then the shared returns. Every path ends in a
// return, so nothing falls through into what follows.
func (c *compiler) section(abi abi) {
	byNr := map[uint32][]*rule{}
	for _, r := range c.rules {
		for _, name := range r.names {
			nr, ok := abi.table[name]
			if !ok {
				continue
			}
			if rs := byNr[nr]; len(rs) > 0 && rs[len(rs)-1] == r {
				continue
			}
			byNr[nr] = append(byNr[nr], r)
		}
	}
	nrs := make([]uint32, 0, len(byNr))
	for nr := range byNr {
		nrs = append(nrs, nr)
	}
	slices.Sort(nrs)

	def := outcome{ret: c.def, block: -1}
	segs := []segment{{0, def}}
	// add starts a segment at start, merging it with the last one when
	// both lead to the same outcome.
	add := func(start uint32, out outcome) {
		if segs[len(segs)-1].start == start {
			segs = segs[:len(segs)-1]
		}
		if len(segs) > 0 && segs[len(segs)-1].out == out {
			return
		}
		segs = append(segs, segment{start, out})
	}
	var blocks [][]*rule
	for _, nr := range nrs {
		rs := byNr[nr]
		// Rules after an unconditional one are unreachable.
		if i := slices.IndexFunc(rs, func(r *rule) bool { return len(r.args) == 0 }); i >= 0 {
			rs = rs[:i+1]
		}
		if len(rs[0].args) == 0 {
			add(nr, outcome{ret: rs[0].ret, block: -1})
		} else {
			add(nr, outcome{block: len(blocks)})
			blocks = append(blocks, rs)
		}
		if nr < ^uint32(0) {
			add(nr+1, def)
		}
	}
	if last, ok := c.lastNamed(abi); c.enosys && ok && last < ^uint32(0) {
		// last is at least every rule's number: this segment comes last.
		add(last+1, outcome{ret: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS), block: -1})
	}

	c.retLabel, c.rets = map[uint32]label{}, nil
	blockLabels := make([]label, len(blocks))
	for i := range blockLabels {
		blockLabels[i] = c.a.newLabel()
	}
	target := func(segs []segment) label {
		if len(segs) > 1 {
			return c.a.newLabel()
		}
		if out := segs[0].out; out.block >= 0 {
			return blockLabels[out.block]
		}
		return c.retTo(segs[0].out.ret)
	}
	var tree func(segs []segment, self label)
	tree = func(segs []segment, self label) {
		c.a.bind(self)
		mid := len(segs) / 2
		left, right := segs[:mid], segs[mid:]
		lt, rt := target(left), target(right)
		c.a.jump(unix.BPF_JGE, right[0].start, rt, lt)
		if len(left) > 1 {
			tree(left, lt)
		}
		if len(right) > 1 {
			tree(right, rt)
		}
	}
	if len(segs) == 1 {
		c.a.ja(target(segs))
	} else {
		tree(segs, c.a.newLabel())
	}

	for i, rs := range blocks {
		c.a.bind(blockLabels[i])
		for _, r := range rs {
			next := c.a.newLabel()
			for _, arg := range r.args {
				pass := c.a.newLabel()
				c.cond(arg, abi.wide, pass, next)
				c.a.bind(pass)
			}
			c.a.ret(r.ret)
			c.a.bind(next)
		}
		if len(rs[len(rs)-1].args) > 0 {
			c.a.ret(c.def)
		}
	}

	for _, ret := range c.rets {
		c.a.bind(c.retLabel[ret])
		c.a.ret(ret)
	}
}

// retTo returns the label of the current section's shared "ret k".
func (c *compiler) retTo(k uint32) label {
	l, ok := c.retLabel[k]
	if !ok {
		l = c.a.newLabel()
		c.retLabel[k] = l
		c.rets = append(c.rets, k)
	}
	return l
}

// cond emits a test of one argument condition that jumps to pass when it
// holds and to fail otherwise. It clobbers A.
func (c *compiler) cond(arg specs.LinuxSeccompArg, wide bool, pass, fail label) {
	a := &c.a
	op := operators[arg.Op]
	value, mask := arg.Value, ^uint64(0)
	if op.masked {
		value, mask = arg.ValueTwo, arg.Value
	}
	yes, no := pass, fail
	if op.invert {
		yes, no = fail, pass
	}
	lo := offsetArgs + 8*uint32(arg.Index)
	hiValue, hiMask := uint32(value>>32), uint32(mask>>32)

	// The high word of an unmasked argument, or of a masked one whose
	// mask or expected value has high bits, decides unless it equals the
	// value's; then the low word does.
	if wide && (!op.masked || hiMask != 0 || hiValue != 0) {
		a.load(lo + 4)
		if op.masked {
			a.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, hiMask)
		}
		low := a.newLabel()
		if op.ordered {
			equal := a.newLabel()
			a.jump(unix.BPF_JGT, hiValue, yes, equal)
			a.bind(equal)
			a.jump(unix.BPF_JEQ, hiValue, low, no)
		} else {
			a.jump(unix.BPF_JEQ, hiValue, low, no)
		}
		a.bind(low)
	}
	a.load(lo)
	if op.masked {
		a.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, uint32(mask))
	}
	a.jump(op.jmp, uint32(value), yes, no)
}
