package podns

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// A runc pod without an infra container (drop_infra_ctr) holds its IPC and
// UTS namespaces by pins, as its network namespace is held: each is a bind
// of the namespace's nsfs file onto a file of the pod's, and its containers
// join it by that path. The namespace lives while its pin or a process in
// it does.
//
// Invariants:
//   - The namespaces are made on a spare thread (onSpareThread) that is
//     discarded afterwards, so no goroutine of the daemon ever runs in them.
//   - A failed PinIPCUTS leaves neither pin file nor mount.

// Keys of a sandbox record's Extra naming its IPC and UTS pins, for
// whoever judges whether a pod without a process still exists
// (RecordedPins).
const (
	ExtraIPCPin = "ipc_ns_pin"
	ExtraUTSPin = "uts_ns_pin"
)

// RecordedPins are the pins named in a sandbox record's Extra, sorted.
func RecordedPins(extra map[string]string) []string {
	var out []string
	for _, k := range []string{ExtraIPCPin, ExtraUTSPin} {
		if p := extra[k]; p != "" {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// IPCUTS names the pins PinIPCUTS makes; an empty path makes no namespace
// of that kind.
type IPCUTS struct {
	IPC, UTS string
	// Hostname is set in the new UTS namespace ("": the host's is kept).
	Hostname string
}

// PinIPCUTS makes a new IPC namespace pinned at p.IPC and a new UTS
// namespace, with p.Hostname, pinned at p.UTS. The pin files are created
// (they must not exist). On error nothing is left.
func PinIPCUTS(p IPCUTS) (err error) {
	var flags int
	var made []string
	defer func() {
		if err != nil {
			for _, pin := range made {
				err = errors.Join(err, Unpin(pin))
			}
		}
	}()
	for _, n := range []struct {
		pin  string
		flag int
	}{{p.IPC, unix.CLONE_NEWIPC}, {p.UTS, unix.CLONE_NEWUTS}} {
		if n.pin == "" {
			continue
		}
		f, err := os.OpenFile(n.pin, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err != nil {
			return fmt.Errorf("creating the namespace pin: %w", err)
		}
		f.Close()
		made = append(made, n.pin)
		flags |= n.flag
	}
	if flags == 0 {
		return nil
	}
	onSpareThread(func() { err = pinOnThread(p, flags) })
	return err
}

// pinOnThread runs on the spare thread: it moves the thread into new
// namespaces of flags and binds each onto its pin. The mounts are made in
// the thread's mount namespace, the host's.
func pinOnThread(p IPCUTS, flags int) error {
	if err := unix.Unshare(flags); err != nil {
		return fmt.Errorf("unsharing the IPC and UTS namespaces: %w", err)
	}
	// An empty hostname keeps the one the new namespace copied, as runc
	// does for a spec without one.
	if p.UTS != "" && p.Hostname != "" {
		if err := unix.Sethostname([]byte(p.Hostname)); err != nil {
			return fmt.Errorf("setting the hostname: %w", err)
		}
	}
	for _, n := range []struct{ pin, name string }{{p.IPC, "ipc"}, {p.UTS, "uts"}} {
		if n.pin == "" {
			continue
		}
		if err := unix.Mount("/proc/thread-self/ns/"+n.name, n.pin, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pinning the %s namespace: %w", n.name, err)
		}
	}
	return nil
}

// Unpin drops the pin (every mount stacked on it) and removes its file:
// once no process is in the namespace, it is gone. A missing pin is no
// error, so Unpin may be called again.
func Unpin(pin string) error {
	// The bound keeps a misbehaving kernel from looping forever.
	for range 8 {
		if !Exists(pin) {
			break
		}
		if err := unix.Unmount(pin, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unpinning namespace %s: %w", pin, err)
		}
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing namespace pin %s: %w", pin, err)
	}
	return nil
}
