package vmm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The logs of a VM's processes (the guest's console, QEMU's and
// virtiofsd's output) grow for as long as the VM runs, and the guest
// decides how much goes into them: into the console as fast as QEMU
// emulates the UART, which it does not pace (about 1 MB/s under TCG here,
// TestVMContainers/console_flood), into the others through errors it
// provokes. They live in the VM dir, on tmpfs under /run, so unbounded
// they are host memory a hostile guest takes. TrimLogs, run often, bounds
// them.
const (
	// MaxLogBytes is the size past which TrimLogs trims a log.
	MaxLogBytes = 1 << 20
	// KeptLogBytes is how much of a trimmed log's end NAME.1 keeps.
	KeptLogBytes = 256 << 10
)

// vmLogNames are the logs TrimLogs bounds in a VM dir.
var vmLogNames = []string{ConsoleLogName, QEMULogName, VirtiofsdLogName}

// TrimLogs trims each log in the VM dir dir that is over MaxLogBytes, as
// logrotate's copytruncate does: its last KeptLogBytes go to NAME.1 and it
// starts again empty. Its writer appends (createLog opened it O_APPEND), so
// it writes on at the new end; what it wrote between the copy and the
// truncation is lost. A VM's logs then take at most MaxLogBytes, plus what
// is written between two calls, plus KeptLogBytes each.
func TrimLogs(dir string) error {
	var errs []error
	for _, n := range vmLogNames {
		errs = append(errs, trimLog(filepath.Join(dir, n), MaxLogBytes, KeptLogBytes))
	}
	return errors.Join(errs...)
}

func trimLog(path string, max, keep int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading the size of %s: %w", path, err)
	}
	if !st.Mode().IsRegular() || st.Size() <= max {
		return nil
	}
	tail := make([]byte, min(keep, st.Size()))
	n, err := f.ReadAt(tail, st.Size()-int64(len(tail)))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading the end of %s: %w", path, err)
	}
	old, err := createLog(path + ".1")
	if err != nil {
		return fmt.Errorf("keeping the end of %s: %w", path, err)
	}
	_, werr := old.Write(tail[:n])
	if err := errors.Join(werr, old.Close()); err != nil {
		return fmt.Errorf("keeping the end of %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("truncating %s: %w", path, err)
	}
	return nil
}
