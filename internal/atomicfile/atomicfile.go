// Package atomicfile writes a file so that readers see either nothing or
// the whole of it.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write creates path through a temporary file in dir that fill writes
// (and may read back); path appears only when fill succeeded.
func Write(dir, path string, mode os.FileMode, fill func(f *os.File) error) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after a successful rename
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
