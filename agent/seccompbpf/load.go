package seccompbpf

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Load installs prog on the calling thread only (no TSYNC):
// seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog). flags come from Flags.
// The caller must have set no_new_privs or hold CAP_SYS_ADMIN, and should
// have locked its goroutine to the thread (runtime.LockOSThread).
func Load(prog []unix.SockFilter, flags uint) error {
	if len(prog) == 0 || len(prog) > maxInsns {
		return fmt.Errorf("loading seccomp filter: %d instructions, want 1 to %d", len(prog), maxInsns)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(flags), uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return fmt.Errorf("loading seccomp filter: %w", errno)
	}
	return nil
}
