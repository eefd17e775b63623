package seccompbpf

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// label names a position in a program under assembly. Labels are bound
// once; jumps may only go forward, as classic BPF requires.
type label int

type itemKind uint8

const (
	kindStmt itemKind = iota // no jump: LD, ALU, RET
	kindCond                 // conditional jump to jt or jf
	kindJA                   // unconditional jump to jt
	kindBind                 // binds jt to the position of the next instruction
)

type item struct {
	kind   itemKind
	code   uint16
	k      uint32
	jt, jf label
}

// assembler builds a classic BPF program whose jumps name labels instead of
// offsets. resolve turns labels into offsets; a conditional branch whose
// target lies further than its 8-bit offset reaches goes through a BPF_JA
// trampoline placed right after the branch.
type assembler struct {
	items  []item
	labels int
}

func (a *assembler) newLabel() label {
	a.labels++
	return label(a.labels - 1)
}

func (a *assembler) bind(l label) { a.items = append(a.items, item{kind: kindBind, jt: l}) }

func (a *assembler) stmt(code uint16, k uint32) {
	a.items = append(a.items, item{kind: kindStmt, code: code, k: k})
}

// load loads the 32-bit word at offset off of struct seccomp_data into A.
func (a *assembler) load(off uint32) { a.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off) }

func (a *assembler) ret(k uint32) { a.stmt(unix.BPF_RET|unix.BPF_K, k) }

// jump emits "if A op k goto jt else goto jf"; op is BPF_JEQ, BPF_JGT,
// BPF_JGE or BPF_JSET.
func (a *assembler) jump(op uint16, k uint32, jt, jf label) {
	a.items = append(a.items, item{kind: kindCond, code: unix.BPF_JMP | op | unix.BPF_K, k: k, jt: jt, jf: jf})
}

func (a *assembler) ja(l label) { a.items = append(a.items, item{kind: kindJA, jt: l}) }

// trampolines records which branches of a conditional jump go through a
// BPF_JA placed after it: the jt one first, then the jf one.
type trampolines struct{ t, f bool }

func (tr trampolines) count() int {
	n := 0
	if tr.t {
		n++
	}
	if tr.f {
		n++
	}
	return n
}

// resolve returns the program with every label replaced by an offset.
func (a *assembler) resolve() ([]unix.SockFilter, error) {
	far := make([]trampolines, len(a.items))
	var pos []int // pos[l] is the instruction index label l is bound to
	for {
		// Trampolines only ever get added, and adding one only lengthens
		// the distances it spans, so this reaches a fixed point.
		var err error
		pos, err = a.layout(far)
		if err != nil {
			return nil, err
		}
		changed := false
		pc := 0
		for i, it := range a.items {
			switch it.kind {
			case kindBind:
				continue
			case kindCond:
				if !far[i].t && pos[it.jt]-(pc+1) > 0xff {
					far[i].t, changed = true, true
				}
				if !far[i].f && pos[it.jf]-(pc+1) > 0xff {
					far[i].f, changed = true, true
				}
				pc += far[i].count()
			}
			pc++
		}
		if !changed {
			break
		}
	}

	var prog []unix.SockFilter
	offset := func(target label) (int, error) {
		off := pos[target] - (len(prog) + 1)
		if off < 0 {
			return 0, fmt.Errorf("label %d at %d is behind instruction %d", target, pos[target], len(prog))
		}
		return off, nil
	}
	for i, it := range a.items {
		switch it.kind {
		case kindBind:
		case kindStmt:
			prog = append(prog, unix.SockFilter{Code: it.code, K: it.k})
		case kindJA:
			off, err := offset(it.jt)
			if err != nil {
				return nil, err
			}
			prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(off)})
		case kindCond:
			jt, err := offset(it.jt)
			if err != nil {
				return nil, err
			}
			jf, err := offset(it.jf)
			if err != nil {
				return nil, err
			}
			tr := far[i]
			if tr.t {
				jt = 0
			}
			if tr.f {
				jf = tr.count() - 1
			}
			prog = append(prog, unix.SockFilter{Code: it.code, Jt: uint8(jt), Jf: uint8(jf), K: it.k})
			if tr.t {
				off, _ := offset(it.jt)
				prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(off)})
			}
			if tr.f {
				off, _ := offset(it.jf)
				prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(off)})
			}
		}
	}
	return prog, nil
}

// layout returns the instruction index of every label given the
// trampolines far adds.
func (a *assembler) layout(far []trampolines) ([]int, error) {
	pos := make([]int, a.labels)
	for l := range pos {
		pos[l] = -1
	}
	pc := 0
	for i, it := range a.items {
		switch it.kind {
		case kindBind:
			if pos[it.jt] >= 0 {
				return nil, fmt.Errorf("label %d bound twice", it.jt)
			}
			pos[it.jt] = pc
		case kindCond:
			pc += 1 + far[i].count()
		default:
			pc++
		}
	}
	for _, it := range a.items {
		if it.kind != kindCond && it.kind != kindJA {
			continue
		}
		if pos[it.jt] < 0 {
			return nil, fmt.Errorf("label %d never bound", it.jt)
		}
		if it.kind == kindCond && pos[it.jf] < 0 {
			return nil, fmt.Errorf("label %d never bound", it.jf)
		}
	}
	return pos, nil
}
