// Package proc identifies host processes across PID reuse and daemon
// restarts.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// StartTime returns field 22 of /proc/PID/stat: the process start time in
// clock ticks since boot. Together with the boot ID it names one process.
func StartTime(pid int) (uint64, error) {
	st, _, err := stat(pid)
	return st, err
}

// stat reads /proc/PID/stat once and returns the start time and the state
// letter.
func stat(pid int) (startTime uint64, state byte, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// comm (field 2) may hold spaces and parens: fields resume after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat: no ')'", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat: %d fields", pid, len(fields))
	}
	startTime, err = strconv.ParseUint(fields[19], 10, 64)
	return startTime, fields[0][0], err
}

var bootID = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b)), err
})

// BootID is this boot's /proc/sys/kernel/random/boot_id.
func BootID() string {
	id, _ := bootID()
	return id
}

// Alive reports whether pid still runs the process that started at
// startTime in boot bootID. A zombie counts as dead. An empty bootID or a
// zero startTime skips that part of the check.
func Alive(pid int, startTime uint64, bootIDWant string) bool {
	if pid <= 0 {
		return false
	}
	if bootIDWant != "" && bootIDWant != BootID() {
		return false
	}
	if err := unix.Kill(pid, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return false
	}
	st, state, err := stat(pid)
	if err != nil {
		return false
	}
	return (startTime == 0 || st == startTime) && state != 'Z'
}

// ReadExitFile parses an exit file as conmon writes it: the decimal exit
// code, optionally followed by a newline.
func ReadExitFile(path string) (int32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	code, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("parsing exit file %s: %w", path, err)
	}
	return int32(code), nil
}
