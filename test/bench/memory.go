package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MemoryParts is a VM's host memory (PSS, KiB) by what holds it, from
// /proc/PID/smaps.
type MemoryParts struct {
	GuestRAM  int64 // the guest RAM mapping (anonymous, or a template's memfd)
	TCGBuffer int64 // TCG's translation buffer (anonymous, executable)
	Code      int64 // file mappings: QEMU, its libraries, firmware
	OtherAnon int64 // heap, stacks, device and I/O buffers
}

// Total is the sum of the parts.
func (m MemoryParts) Total() int64 { return m.GuestRAM + m.TCGBuffer + m.Code + m.OtherAnon }

func (m MemoryParts) String() string {
	mb := func(kb int64) string { return fmt.Sprintf("%.1f", float64(kb)/1024) }
	return fmt.Sprintf("total %s MB = guest RAM %s + TCG buffer %s + code and libraries %s + heap and other %s",
		mb(m.Total()), mb(m.GuestRAM), mb(m.TCGBuffer), mb(m.Code), mb(m.OtherAnon))
}

// VMMemory splits pid's PSS: a mapping of at least guestMiB is guest RAM;
// an anonymous executable one is the translation buffer; a file-backed
// one is code.
func VMMemory(pid, guestMiB int) (MemoryParts, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		return MemoryParts{}, err
	}
	defer f.Close()
	var m MemoryParts
	var cur *int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			cur = classify(fields, guestMiB, &m)
			continue
		}
		if len(fields) >= 2 && fields[0] == "Pss:" && cur != nil {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			*cur += kb
		}
	}
	return m, sc.Err()
}

func classify(header []string, guestMiB int, m *MemoryParts) *int64 {
	var lo, hi uint64
	if a, b, ok := strings.Cut(header[0], "-"); ok {
		lo, _ = strconv.ParseUint(a, 16, 64)
		hi, _ = strconv.ParseUint(b, 16, 64)
	}
	size := hi - lo
	perms := header[1]
	path := ""
	if len(header) >= 6 {
		path = strings.Join(header[5:], " ")
	}
	switch {
	case size >= uint64(guestMiB)<<20 || strings.Contains(path, "memfd:crivm-template"):
		return &m.GuestRAM
	case strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "/memfd:"):
		return &m.Code
	case strings.Contains(perms, "x"):
		return &m.TCGBuffer
	}
	return &m.OtherAnon
}
