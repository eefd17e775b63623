package assets

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// cpioWriter writes the "newc" (SVR4, no CRC) cpio format that the kernel
// unpacks into the initramfs. Entries are written in call order; a directory
// must be written before what it contains. Every header field is
// deterministic (mtime 0, inode numbers in write order), so the same input
// gives byte-identical archives.
type cpioWriter struct {
	w      *bufio.Writer
	off    int64
	ino    uint32
	closed bool
}

// Mode type bits of a cpio entry (the st_mode high bits).
const (
	cpioTypeDir     = 0o040000
	cpioTypeRegular = 0o100000
	cpioTypeSymlink = 0o120000
	cpioTypeChar    = 0o020000
	cpioTypeMask    = 0o170000
)

const cpioTrailer = "TRAILER!!!"

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<16)}
}

// cpioHeader is one entry as written or parsed back.
type cpioHeader struct {
	Name      string
	Mode      uint32 // type bits | permission bits
	UID, GID  uint32
	Size      int64
	RdevMajor uint32
	RdevMinor uint32
}

func (c *cpioWriter) header(h cpioHeader) error {
	if c.closed {
		return errors.New("cpio writer closed")
	}
	name := strings.TrimPrefix(h.Name, "/")
	if name == "" || strings.Contains(name, "\x00") {
		return fmt.Errorf("bad cpio entry name %q", h.Name)
	}
	if h.Size < 0 || h.Size > 0xffffffff {
		return fmt.Errorf("cpio entry %s: size %d does not fit newc", name, h.Size)
	}
	c.ino++
	nlink := uint32(1)
	if h.Mode&cpioTypeMask == cpioTypeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, h.Mode, h.UID, h.GID, nlink, 0, h.Size, 0, 0, h.RdevMajor, h.RdevMinor, len(name)+1, 0)
	if err := c.write([]byte(hdr)); err != nil {
		return err
	}
	if err := c.write(append([]byte(name), 0)); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.off += int64(n)
	return err
}

// pad aligns the stream to 4 bytes, as newc requires after names and data.
func (c *cpioWriter) pad() error {
	if r := c.off % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm uint32) error {
	return c.header(cpioHeader{Name: name, Mode: cpioTypeDir | perm&0o7777})
}

// File adds a regular file of exactly size bytes read from r.
func (c *cpioWriter) File(name string, perm uint32, size int64, r io.Reader) error {
	if err := c.header(cpioHeader{Name: name, Mode: cpioTypeRegular | perm&0o7777, Size: size}); err != nil {
		return err
	}
	n, err := io.CopyN(c.w, r, size)
	c.off += n
	if err != nil {
		return fmt.Errorf("cpio entry %s: %w", name, err)
	}
	return c.pad()
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) error {
	if err := c.header(cpioHeader{Name: name, Mode: cpioTypeSymlink | 0o777, Size: int64(len(target))}); err != nil {
		return err
	}
	if err := c.write([]byte(target)); err != nil {
		return err
	}
	return c.pad()
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) error {
	return c.header(cpioHeader{Name: name, Mode: cpioTypeChar | perm&0o7777, RdevMajor: major, RdevMinor: minor})
}

// Close writes the trailer and flushes. It does not close the underlying
// writer.
func (c *cpioWriter) Close() error {
	if c.closed {
		return nil
	}
	if err := c.header(cpioHeader{Name: cpioTrailer}); err != nil {
		return err
	}
	c.closed = true
	// The kernel reads the archive in 512-byte blocks; pad like cpio(1).
	if r := c.off % 512; r != 0 {
		if err := c.write(make([]byte, 512-r)); err != nil {
			return err
		}
	}
	return c.w.Flush()
}
