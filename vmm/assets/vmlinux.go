package assets

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/crivm/crivm/internal/atomicfile"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// Compression formats of a bzImage payload or a kernel module.
const (
	FormatXZ   = "xz"
	FormatGzip = "gzip"
	FormatZstd = "zstd"
)

var payloadMagics = []struct {
	format string
	magic  []byte
}{
	{FormatXZ, []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}},
	{FormatZstd, []byte{0x28, 0xB5, 0x2F, 0xFD}},
	{FormatGzip, []byte{0x1F, 0x8B, 0x08}},
}

// Offsets into the x86 boot protocol header (Documentation/arch/x86/boot.rst).
const (
	bootSetupSects   = 0x1f1
	bootHeaderMagic  = 0x202 // "HdrS"
	bootVersion      = 0x206
	bootPayloadOff   = 0x248
	bootPayloadLen   = 0x24c
	bootMinPayloadPV = 0x0208 // first protocol version with payload_offset/length
)

// payload locates the compressed kernel inside a bzImage. length is -1 when
// it is unknown (found by scanning); then the decompressor stops at the end
// of the first stream. When the boot header gives the length, the last 4
// bytes are the little-endian size of the decompressed kernel (size_append)
// and are not part of the stream.
type payload struct {
	format string
	offset int
	length int
}

// findPayload reads payload_offset/payload_length from the boot header when
// the image speaks boot protocol 2.08 or later, and otherwise scans for the
// first xz, zstd or gzip magic after the real-mode setup code.
func findPayload(img []byte) (payload, error) {
	if len(img) > bootPayloadLen+4 && string(img[bootHeaderMagic:bootHeaderMagic+4]) == "HdrS" &&
		binary.LittleEndian.Uint16(img[bootVersion:]) >= bootMinPayloadPV {
		sects := int(img[bootSetupSects])
		if sects == 0 {
			sects = 4
		}
		start := (sects + 1) * 512
		off := start + int(binary.LittleEndian.Uint32(img[bootPayloadOff:]))
		n := int(binary.LittleEndian.Uint32(img[bootPayloadLen:]))
		if off >= 0 && n > 4 && off+n <= len(img) {
			for _, m := range payloadMagics {
				if bytes.HasPrefix(img[off:], m.magic) {
					return payload{format: m.format, offset: off, length: n}, nil
				}
			}
			return payload{}, fmt.Errorf("boot header points at a payload with unknown magic % x (want xz, zstd or gzip)", img[off:min(off+6, len(img))])
		}
	}
	best := payload{offset: -1, length: -1}
	for _, m := range payloadMagics {
		if i := bytes.Index(img, m.magic); i >= 0 && (best.offset < 0 || i < best.offset) {
			best.format, best.offset = m.format, i
		}
	}
	if best.offset < 0 {
		return payload{}, errors.New("no xz, zstd or gzip payload found")
	}
	return best, nil
}

// Vmlinux returns an uncompressed, PVH-bootable vmlinux for the bzImage at
// bzImage, extracting it into cacheDir on first use. The cache entry is keyed
// on the bzImage's path, mtime and size, and is only ever created by rename
// after the ELF and its PVH note were verified, so a present entry is valid.
func Vmlinux(ctx context.Context, bzImage, cacheDir string) (string, error) {
	if cacheDir == "" {
		return "", errdefs.InvalidArgument("extracting vmlinux: no cache dir given")
	}
	st, err := os.Stat(bzImage)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", errdefs.FailedPrecondition("extracting vmlinux: guest kernel %s is missing (install linux-image-amd64 or set kernel = ...)", bzImage)
		}
		return "", fmt.Errorf("extracting vmlinux: %w", err)
	}
	key := cacheKey(bzImage, strconv.FormatInt(st.ModTime().UnixNano(), 10), strconv.FormatInt(st.Size(), 10))
	out := filepath.Join(cacheDir, "vmlinux-"+key)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	img, err := os.ReadFile(bzImage)
	if err != nil {
		return "", fmt.Errorf("extracting vmlinux: %w", err)
	}
	if _, err := checkPVH(bytes.NewReader(img)); err == nil {
		// Already an uncompressed PVH vmlinux.
		return bzImage, nil
	}
	p, err := findPayload(img)
	if err != nil {
		return "", errdefs.InvalidArgument("extracting vmlinux from %s: %w", bzImage, err)
	}
	data := img[p.offset:]
	var wantSize int64 = -1
	if p.length > 0 {
		data = img[p.offset : p.offset+p.length-4]
		wantSize = int64(binary.LittleEndian.Uint32(img[p.offset+p.length-4:]))
	}
	start := time.Now()
	err = atomicfile.Write(cacheDir, out, 0o644, func(f *os.File) error {
		n, err := decompress(ctx, p.format, bytes.NewReader(data), f)
		if err != nil {
			return fmt.Errorf("decompressing %s payload at offset %d: %w", p.format, p.offset, err)
		}
		if wantSize >= 0 && n != wantSize {
			return fmt.Errorf("decompressed %d bytes, the boot header says %d", n, wantSize)
		}
		if _, err := checkPVH(f); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("extracting vmlinux from %s: %w", bzImage, err)
	}
	log.G(ctx).Info("extracted PVH vmlinux", "bzimage", bzImage, "vmlinux", out, "format", p.format, "elapsed", time.Now().Sub(start))
	return out, nil
}

// Xen ELF note carrying the 32-bit PVH entry point (xen/include/public/elfnote.h).
const xenElfnotePhys32Entry = 18

// checkPVH verifies r is an x86-64 ELF with a Xen PHYS32_ENTRY note, which
// is what QEMU needs to boot it directly with -kernel, and returns the entry.
func checkPVH(r io.ReaderAt) (uint32, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return 0, fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return 0, fmt.Errorf("ELF machine is %s, want EM_X86_64", f.Machine)
	}
	for _, ph := range f.Progs {
		if ph.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(ph.Open())
		if err != nil {
			return 0, fmt.Errorf("reading ELF notes: %w", err)
		}
		if entry, ok := findXenPhys32Entry(notes, f.ByteOrder); ok {
			return entry, nil
		}
	}
	return 0, errors.New("ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); the kernel needs CONFIG_PVH=y")
}

// findXenPhys32Entry walks a PT_NOTE segment: namesz, descsz, type, then the
// name and the descriptor, each padded to 4 bytes.
func findXenPhys32Entry(b []byte, bo binary.ByteOrder) (uint32, bool) {
	align4 := func(n uint32) int { return int((n + 3) &^ 3) }
	for len(b) >= 12 {
		namesz, descsz, typ := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
		b = b[12:]
		if align4(namesz) > len(b) {
			return 0, false
		}
		name := b[:namesz]
		b = b[align4(namesz):]
		if align4(descsz) > len(b) {
			return 0, false
		}
		desc := b[:descsz]
		b = b[align4(descsz):]
		if typ == xenElfnotePhys32Entry && string(bytes.TrimRight(name, "\x00")) == "Xen" && len(desc) >= 4 {
			return bo.Uint32(desc), true
		}
	}
	return 0, false
}

// decompress writes the first stream of format read from r to w and returns
// the bytes written. xz goes through the xz tool: kernel payloads use the x86
// BCJ filter, which no Go xz package implements.
func decompress(ctx context.Context, format string, r io.Reader, w io.Writer) (int64, error) {
	switch format {
	case FormatGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return 0, err
		}
		zr.Multistream(false)
		return io.Copy(w, zr)
	case FormatZstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return 0, err
		}
		defer zr.Close()
		return io.Copy(w, zr)
	case FormatXZ:
		xz, err := exec.LookPath("xz")
		if err != nil {
			return 0, errdefs.FailedPrecondition("xz is not installed (apt-get install xz-utils): %w", err)
		}
		cw := &countWriter{w: w}
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, xz, "-dc", "--single-stream")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = r, cw, &stderr
		if err := cmd.Run(); err != nil {
			return cw.n, fmt.Errorf("running xz: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
		return cw.n, nil
	}
	return 0, fmt.Errorf("unknown compression %q", format)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// cacheKey hashes parts, separated so that ("ab","c") and ("a","bc") differ.
func cacheKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s\n", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
