package image

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// FsUsage is the space the image storage uses.
type FsUsage struct {
	Timestamp  time.Time
	Mountpoint string
	UsedBytes  uint64
	InodesUsed uint64
}

// FsInfo walks the storage root and counts the bytes (allocated blocks) and
// inodes it holds. Hard links are counted once.
func (s *Service) FsInfo() (FsUsage, error) {
	u := FsUsage{Timestamp: time.Now(), Mountpoint: s.opts.Root}
	seen := map[uint64]bool{}
	err := filepath.WalkDir(s.opts.Root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // removed during the walk
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if path != s.opts.Root && d.IsDir() && isMountpoint(path, st) {
			return filepath.SkipDir // a mounted container rootfs: not ours to count
		}
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		u.InodesUsed++
		u.UsedBytes += uint64(st.Blocks) * 512
		return nil
	})
	return u, err
}

// isMountpoint reports whether dir is on another device than its parent.
func isMountpoint(dir string, st *syscall.Stat_t) bool {
	var parent syscall.Stat_t
	if err := syscall.Lstat(filepath.Dir(dir), &parent); err != nil {
		return false
	}
	return parent.Dev != st.Dev
}
