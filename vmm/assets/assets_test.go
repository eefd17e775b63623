package assets

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/crivm/crivm/internal/errdefs"
)

// fakeBzImage builds a bzImage-shaped blob: setup sectors, a boot header
// speaking protocol version ver, and payload (followed by the 4-byte
// decompressed size, as size_append writes it) after some junk.
func fakeBzImage(ver uint16, payload []byte, size uint32) []byte {
	const sects = 3
	img := make([]byte, (sects+1)*512)
	img[bootSetupSects] = sects
	copy(img[bootHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[bootVersion:], ver)
	junk := []byte("decompressor code 1234")
	binary.LittleEndian.PutUint32(img[bootPayloadOff:], uint32(len(junk)))
	binary.LittleEndian.PutUint32(img[bootPayloadLen:], uint32(len(payload)+4))
	img = append(img, junk...)
	img = append(img, payload...)
	img = binary.LittleEndian.AppendUint32(img, size)
	return append(img, []byte("trailing setup data")...)
}

func TestFindPayload(t *testing.T) {
	xzMagic := []byte{0xFD, '7', 'z', 'X', 'Z', 0x00, 1, 2}
	gz := []byte{0x1F, 0x8B, 0x08, 0, 0}
	zst := []byte{0x28, 0xB5, 0x2F, 0xFD, 9}
	for _, tc := range []struct {
		name    string
		img     []byte
		format  string
		offset  int
		length  int
		wantErr bool
	}{
		{name: "header xz", img: fakeBzImage(0x20f, xzMagic, 1), format: FormatXZ, offset: 4*512 + 22, length: len(xzMagic) + 4},
		{name: "header gzip", img: fakeBzImage(0x20f, gz, 1), format: FormatGzip, offset: 4*512 + 22, length: len(gz) + 4},
		{name: "header zstd", img: fakeBzImage(0x20f, zst, 1), format: FormatZstd, offset: 4*512 + 22, length: len(zst) + 4},
		{name: "old protocol scans", img: fakeBzImage(0x206, gz, 1), format: FormatGzip, offset: 4*512 + 22, length: -1},
		{name: "no header scans for the first magic", img: append(append([]byte("MZjunk"), zst...), xzMagic...), format: FormatZstd, offset: 6, length: -1},
		{name: "header with unknown magic", img: fakeBzImage(0x20f, []byte("notcompressed"), 1), wantErr: true},
		{name: "nothing", img: []byte("plain text, no payload"), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := findPayload(tc.img)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("findPayload = %+v, want an error", p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.format != tc.format || p.offset != tc.offset || p.length != tc.length {
				t.Fatalf("findPayload = %+v, want {%s %d %d}", p, tc.format, tc.offset, tc.length)
			}
		})
	}
}

// pvhELF returns a minimal x86-64 ELF with one PT_NOTE segment holding
// notes (pairs of name, type, desc).
func pvhELF(t *testing.T, withPVH bool) []byte {
	t.Helper()
	var notes bytes.Buffer
	note := func(name string, typ uint32, desc []byte) {
		n := append([]byte(name), 0)
		binary.Write(&notes, binary.LittleEndian, [3]uint32{uint32(len(n)), uint32(len(desc)), typ})
		notes.Write(n)
		notes.Write(make([]byte, (4-len(n)%4)%4))
		notes.Write(desc)
		notes.Write(make([]byte, (4-len(desc)%4)%4))
	}
	note("GNU", 3, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	if withPVH {
		note("Xen", 18, binary.LittleEndian.AppendUint32(nil, 0x1000abc))
	}
	const ehsize, phsize = 64, 56
	var b bytes.Buffer
	// ELF header.
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0})
	b.Write(make([]byte, 8))
	binary.Write(&b, binary.LittleEndian, struct {
		Type, Machine                                        uint16
		Version                                              uint32
		Entry, Phoff, Shoff                                  uint64
		Flags                                                uint32
		Ehsize, Phentsize, Phnum, Shentsize, Shnum, Shstrndx uint16
	}{Type: 2, Machine: 62, Version: 1, Phoff: ehsize, Ehsize: ehsize, Phentsize: phsize, Phnum: 1, Shentsize: 64})
	binary.Write(&b, binary.LittleEndian, struct {
		Type, Flags                          uint32
		Off, Vaddr, Paddr, Filesz, Memsz, Al uint64
	}{Type: 4, Off: ehsize + phsize, Filesz: uint64(notes.Len()), Memsz: uint64(notes.Len()), Al: 4})
	b.Write(notes.Bytes())
	return b.Bytes()
}

func TestCheckPVH(t *testing.T) {
	entry, err := checkPVH(bytes.NewReader(pvhELF(t, true)))
	if err != nil {
		t.Fatal(err)
	}
	if entry != 0x1000abc {
		t.Fatalf("entry = %#x, want 0x1000abc", entry)
	}
	if _, err := checkPVH(bytes.NewReader(pvhELF(t, false))); err == nil || !strings.Contains(err.Error(), "CONFIG_PVH") {
		t.Fatalf("checkPVH without the note = %v, want a CONFIG_PVH error", err)
	}
	if _, err := checkPVH(bytes.NewReader([]byte("MZ not an elf at all........................................................"))); err == nil {
		t.Fatal("checkPVH accepted a non-ELF")
	}
}

// TestVmlinuxFromCraftedImages runs the gzip and zstd paths end to end on a
// crafted bzImage whose payload is the tiny PVH ELF.
func TestVmlinuxFromCraftedImages(t *testing.T) {
	elfData := pvhELF(t, true)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(elfData)
	zw.Close()
	enc, _ := zstd.NewWriter(nil)
	zst := enc.EncodeAll(elfData, nil)
	payloads := map[string][]byte{FormatGzip: gz.Bytes(), FormatZstd: zst}
	if _, err := exec.LookPath("xz"); err == nil {
		cmd := exec.Command("xz", "-c", "--check=crc32", "--x86", "--lzma2")
		cmd.Stdin = bytes.NewReader(elfData)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		payloads[FormatXZ] = out
	}
	for format, p := range payloads {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "vmlinuz")
			if err := os.WriteFile(img, fakeBzImage(0x20f, p, uint32(len(elfData))), 0o644); err != nil {
				t.Fatal(err)
			}
			cache := filepath.Join(dir, "cache")
			got, err := Vmlinux(context.Background(), img, cache)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, elfData) {
				t.Fatalf("extracted %d bytes, want the %d-byte ELF", len(data), len(elfData))
			}
			again, err := Vmlinux(context.Background(), img, cache)
			if err != nil || again != got {
				t.Fatalf("second Vmlinux = %q, %v; want the cached %q", again, err, got)
			}
		})
	}
	t.Run("size mismatch", func(t *testing.T) {
		dir := t.TempDir()
		img := filepath.Join(dir, "vmlinuz")
		os.WriteFile(img, fakeBzImage(0x20f, gz.Bytes(), 12345), 0o644)
		if _, err := Vmlinux(context.Background(), img, dir); err == nil {
			t.Fatal("Vmlinux accepted a payload whose size disagrees with the header")
		}
		if m, _ := filepath.Glob(filepath.Join(dir, "vmlinux-*")); len(m) != 0 {
			t.Fatalf("a failed extraction left %v", m)
		}
	})
	t.Run("missing kernel", func(t *testing.T) {
		_, err := Vmlinux(context.Background(), "/nonexistent/vmlinuz", t.TempDir())
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("err = %v, want FailedPrecondition", err)
		}
	})
}

// TestVmlinuxRealKernel extracts the installed distro kernel.
func TestVmlinuxRealKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses a real kernel (~2 s); skipped with -short")
	}
	kernel := testKernel(t)
	cache := t.TempDir()
	got, err := Vmlinux(context.Background(), kernel, cache)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := checkPVH(f); err != nil {
		t.Fatal(err)
	}
	rel, err := KernelRelease(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(kernel), "vmlinuz-"+rel) {
		t.Fatalf("KernelRelease(%s) = %q", kernel, rel)
	}
	if rel2, err := KernelRelease(got); err != nil || rel2 != rel {
		t.Fatalf("KernelRelease(vmlinux) = %q, %v; want %q", rel2, err, rel)
	}
}

// testKernel returns the newest /boot/vmlinuz-* or skips.
func testKernel(t *testing.T) string {
	t.Helper()
	k, err := findKernel("", "", DefaultBootDir, "")
	if err != nil {
		t.Skipf("no guest kernel: %v (install linux-image-amd64)", err)
	}
	return k
}

func writeFakeModules(t *testing.T, dep string, builtin ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(strings.Join(builtin, "\n")), 0o644)
	for _, line := range strings.Split(dep, "\n") {
		mod, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		p := filepath.Join(dir, mod)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("module "+mod), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const fakeDep = `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/a/cyc_a.ko: kernel/a/cyc_b.ko
kernel/a/cyc_b.ko: kernel/a/cyc_a.ko
`

func TestResolveModules(t *testing.T) {
	dir := writeFakeModules(t, fakeDep, "kernel/drivers/input/evdev.ko")
	mods, err := ResolveModules(dir, []string{"virtio_pci", "virtio-console", "9p", "9pnet_virtio", "evdev", "net_failover"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
	}
	want := []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
		"virtio_console", "netfs", "fscache", "9pnet", "9p", "9pnet_virtio", "failover", "net_failover"}
	if !slices.Equal(names, want) {
		t.Fatalf("order = %v\nwant    %v", names, want)
	}
	// Whatever the exact order, every module comes after its dependencies.
	dep, _ := parseModulesDep(strings.NewReader(fakeDep))
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
	}
	for _, m := range mods {
		for rel, deps := range dep {
			if moduleName(rel) != m.Name {
				continue
			}
			for _, d := range deps {
				if pos[moduleName(d)] >= pos[m.Name] {
					t.Errorf("%s loads before its dependency %s", m.Name, moduleName(d))
				}
			}
		}
	}
	if got := mods[len(mods)-1].Rel; got != "kernel/drivers/net/net_failover.ko" {
		t.Errorf("Rel of a compressed module = %q, want the .ko name", got)
	}

	if _, err := ResolveModules(dir, []string{"nosuchmod"}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "nosuchmod") {
		t.Errorf("unknown module: err = %v, want FailedPrecondition naming it", err)
	}
	if _, err := ResolveModules(dir, []string{"cyc_a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: err = %v", err)
	}
	if _, err := ResolveModules(t.TempDir(), []string{"virtio"}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("missing modules.dep: err = %v, want FailedPrecondition", err)
	}
}

// cpioEntry is one parsed entry of a newc archive.
type cpioEntry struct {
	cpioHeader
	Data []byte
}

// readCPIO parses a newc archive up to its trailer.
func readCPIO(r io.Reader) ([]cpioEntry, error) {
	var out []cpioEntry
	var off int64
	read := func(n int64) ([]byte, error) {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		off += n
		return b, err
	}
	pad := func() error {
		if m := off % 4; m != 0 {
			_, err := read(4 - m)
			return err
		}
		return nil
	}
	for {
		h, err := read(110)
		if err != nil {
			return nil, err
		}
		if string(h[:6]) != "070701" {
			return nil, fmt.Errorf("bad magic %q at %d", h[:6], off-110)
		}
		field := func(i int) uint64 {
			v, _ := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			return v
		}
		name, err := read(int64(field(11)))
		if err != nil {
			return nil, err
		}
		if err := pad(); err != nil {
			return nil, err
		}
		e := cpioEntry{cpioHeader: cpioHeader{
			Name: strings.TrimRight(string(name), "\x00"), Mode: uint32(field(1)), UID: uint32(field(2)), GID: uint32(field(3)),
			Size: int64(field(6)), RdevMajor: uint32(field(9)), RdevMinor: uint32(field(10)),
		}}
		if e.Name == cpioTrailer {
			return out, nil
		}
		if e.Data, err = read(e.Size); err != nil {
			return nil, err
		}
		if err := pad(); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
}

func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("dev", 0o755))
	must(w.CharDev("/dev/console", 0o600, 5, 1))
	must(w.File("init", 0o755, 5, strings.NewReader("hello")))
	must(w.File("empty", 0o644, 0, strings.NewReader("")))
	must(w.Symlink("sbin", "/init"))
	must(w.File("odd", 0o644, 3, strings.NewReader("abcdef"))) // only 3 bytes are taken
	must(w.Close())
	if buf.Len()%512 != 0 {
		t.Fatalf("archive length %d is not a multiple of 512", buf.Len())
	}
	entries, err := readCPIO(&buf)
	if err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{cpioHeader{Name: "dev", Mode: cpioTypeDir | 0o755}, []byte{}},
		{cpioHeader{Name: "dev/console", Mode: cpioTypeChar | 0o600, RdevMajor: 5, RdevMinor: 1}, []byte{}},
		{cpioHeader{Name: "init", Mode: cpioTypeRegular | 0o755, Size: 5}, []byte("hello")},
		{cpioHeader{Name: "empty", Mode: cpioTypeRegular | 0o644}, []byte{}},
		{cpioHeader{Name: "sbin", Mode: cpioTypeSymlink | 0o777, Size: 5}, []byte("/init")},
		{cpioHeader{Name: "odd", Mode: cpioTypeRegular | 0o644, Size: 3}, []byte("abc")},
	}
	if len(entries) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(entries), len(want), entries)
	}
	for i := range want {
		if entries[i].cpioHeader != want[i].cpioHeader || !bytes.Equal(entries[i].Data, want[i].Data) {
			t.Errorf("entry %d = %+v %q, want %+v %q", i, entries[i].cpioHeader, entries[i].Data, want[i].cpioHeader, want[i].Data)
		}
	}
	// A short reader fails the entry instead of writing a corrupt archive.
	w2 := newCPIOWriter(io.Discard)
	if err := w2.File("short", 0o644, 10, strings.NewReader("abc")); err == nil {
		t.Fatal("File with a short reader succeeded")
	}

	// cpio(1) agrees with the parser.
	if cpio, err := exec.LookPath("cpio"); err == nil {
		var b bytes.Buffer
		w := newCPIOWriter(&b)
		must(w.Dir("d", 0o755))
		must(w.File("d/f", 0o644, 2, strings.NewReader("ok")))
		must(w.Close())
		cmd := exec.Command(cpio, "-it", "--quiet")
		cmd.Stdin = &b
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -it: %v", err)
		}
		if got := strings.Fields(string(out)); !slices.Equal(got, []string{"d", "d/f"}) {
			t.Fatalf("cpio -it = %q", got)
		}
	}
}

// fakeAgent builds a tiny static ELF to stand in for the agent.
func fakeAgent(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(p, pvhELF(t, false), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInitrd(t *testing.T) {
	dir := writeFakeModules(t, fakeDep)
	agent := fakeAgent(t)
	cache := t.TempDir()
	opts := InitrdOptions{AgentBinary: agent, KernelRelease: "6.1.0-test", ModulesDir: dir, Modules: []string{"virtio_console"}, CacheDir: cache}
	p, err := Initrd(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readCPIO(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]cpioEntry{}
	var names []string
	for _, e := range entries {
		files[e.Name] = e
		names = append(names, e.Name)
	}
	if e, ok := files["init"]; !ok || e.Mode != cpioTypeRegular|0o755 {
		t.Fatalf("no executable /init in %v", names)
	}
	if e := files["dev/console"]; e.Mode&cpioTypeMask != cpioTypeChar || e.RdevMajor != 5 || e.RdevMinor != 1 {
		t.Fatalf("dev/console = %+v", e.cpioHeader)
	}
	order := string(files["modules.order"].Data)
	wantOrder := "/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio_ring.ko\n" +
		"/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio.ko\n" +
		"/lib/modules/6.1.0-test/kernel/drivers/char/virtio_console.ko\n"
	if order != wantOrder {
		t.Fatalf("modules.order = %q, want %q", order, wantOrder)
	}
	for _, l := range strings.Fields(order) {
		if _, ok := files[strings.TrimPrefix(l, "/")]; !ok {
			t.Errorf("modules.order names %s, which is not in the archive", l)
		}
	}
	// Every entry's parent directory precedes it.
	seen := map[string]bool{}
	for _, n := range names {
		if d := filepath.Dir(n); d != "." && !seen[d] {
			t.Errorf("%s comes before its directory %s", n, d)
		}
		seen[n] = true
	}

	// Same inputs: the cached file. A changed agent or module list: a new one.
	if p2, err := Initrd(context.Background(), opts); err != nil || p2 != p {
		t.Fatalf("second Initrd = %q, %v; want cached %q", p2, err, p)
	}
	opts.Modules = []string{"virtio_console", "9p"}
	p3, err := Initrd(context.Background(), opts)
	if err != nil || p3 == p {
		t.Fatalf("Initrd with another module list = %q, %v; want a new file", p3, err)
	}
	if err := os.WriteFile(agent, append(pvhELF(t, false), 0), 0o755); err != nil {
		t.Fatal(err)
	}
	p4, err := Initrd(context.Background(), opts)
	if err != nil || p4 == p3 {
		t.Fatalf("Initrd with a changed agent = %q, %v; want a new file", p4, err)
	}
	opts.Compression = InitrdGzip
	p5, err := Initrd(context.Background(), opts)
	if err != nil || !strings.HasSuffix(p5, ".cpio.gz") {
		t.Fatalf("gzip Initrd = %q, %v", p5, err)
	}
	gf, _ := os.Open(p5)
	defer gf.Close()
	zr, err := gzip.NewReader(gf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readCPIO(zr); err != nil {
		t.Fatalf("parsing the gzip initrd: %v", err)
	}

	// A dynamically linked agent is refused.
	if ls, err := exec.LookPath("ls"); err == nil {
		opts.AgentBinary = ls
		if _, err := Initrd(context.Background(), opts); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("dynamic agent: err = %v, want InvalidArgument", err)
		}
	}
}

func TestBinaryClosure(t *testing.T) {
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no ls")
	}
	ls, _ = filepath.Abs(ls)
	c, err := BinaryClosure(ls)
	if err != nil {
		t.Fatal(err)
	}
	if c[0] != ls || len(c) < 3 {
		t.Fatalf("closure of %s = %v, want it, its interpreter and libc at least", ls, c)
	}
	var libc, interp bool
	for _, p := range c[1:] {
		libc = libc || filepath.Base(p) == "libc.so.6"
		interp = interp || strings.HasPrefix(filepath.Base(p), "ld-linux")
		if !filepath.IsAbs(p) {
			t.Errorf("%s is not absolute", p)
		}
	}
	if !libc || !interp {
		t.Errorf("closure %v lacks libc or the loader", c)
	}
	if c, err := BinaryClosure(fakeAgent(t)); err != nil || len(c) != 1 {
		t.Errorf("closure of a static binary = %v, %v; want itself", c, err)
	}
	if _, err := BinaryClosure("ls"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("relative path: %v, want InvalidArgument", err)
	}
}

func TestInitrdExtraBinaries(t *testing.T) {
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no ls")
	}
	ls, _ = filepath.Abs(ls)
	closure, err := BinaryClosure(ls)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFakeModules(t, fakeDep)
	opts := InitrdOptions{AgentBinary: fakeAgent(t), KernelRelease: "6.1.0-test", ModulesDir: dir, Modules: []string{"virtio_console"}, CacheDir: t.TempDir()}
	plain, err := Initrd(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.ExtraBinaries = []string{ls}
	p, err := Initrd(context.Background(), opts)
	if err != nil || p == plain {
		t.Fatalf("Initrd with extras = %q, %v; want a new file", p, err)
	}
	f, _ := os.Open(p)
	entries, err := readCPIO(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]cpioEntry{}
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.Name] {
			t.Errorf("%s twice in the archive", e.Name)
		}
		if d := filepath.Dir(e.Name); d != "." && !seen[d] {
			t.Errorf("%s comes before its directory %s", e.Name, d)
		}
		seen[e.Name] = true
		files[e.Name] = e
	}
	for _, host := range closure {
		e, ok := files[strings.TrimPrefix(host, "/")]
		if !ok {
			t.Errorf("%s is not in the initrd", host)
			continue
		}
		want, _ := os.ReadFile(host)
		if e.Mode&cpioTypeMask != cpioTypeRegular || !bytes.Equal(e.Data, want) {
			t.Errorf("%s: mode %o, %d bytes; want a regular file with the host's %d bytes", host, e.Mode, len(e.Data), len(want))
		}
	}
}

// TestBaseGuestModulesOnThisHost resolves BaseGuestModules against the
// installed guest kernel: bridge comes with its dependencies (stp, llc,
// from modules.dep), after them, so a privileged container in a VM can
// create a bridge (the guest cannot load a module on demand).
func TestBaseGuestModulesOnThisHost(t *testing.T) {
	deps, _ := filepath.Glob("/lib/modules/*/modules.dep")
	var dir string
	for _, d := range deps {
		if _, err := os.Stat(filepath.Join(filepath.Dir(d), "kernel/net/bridge")); err == nil {
			dir = filepath.Dir(d)
			break
		}
	}
	if dir == "" {
		t.Skip("no installed kernel with a bridge module (install linux-image-amd64)")
	}
	mods, err := ResolveModules(dir, BaseGuestModules)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i + 1
	}
	for _, m := range []string{"llc", "stp", "bridge"} {
		if pos[m] == 0 {
			t.Errorf("%s: %s is not among the guest modules %v", dir, m, mods)
		}
	}
	if !(pos["llc"] < pos["stp"] && pos["stp"] < pos["bridge"]) {
		t.Errorf("load order llc %d, stp %d, bridge %d: want dependencies first", pos["llc"], pos["stp"], pos["bridge"])
	}
}
