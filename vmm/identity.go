package vmm

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Identity is who a VMM process runs as: an unprivileged uid and gid,
// supplementary groups (the group of /dev/kvm where it is not
// world-accessible), and the only capabilities it keeps, as ambient
// capabilities (none for QEMU with virtio-fs; the file capabilities for
// QEMU's 9p server, which does the share's file access itself).
type Identity struct {
	UID, GID uint32
	Groups   []uint32
	Caps     []uintptr
}

// apply makes the process that attr starts run as id. Go's fork sets
// PR_SET_KEEPCAPS before setuid and raises Caps as inheritable and ambient
// after it, so they survive the exec (of QEMU, or of the cgroup shim and
// then QEMU); every other capability is gone with the uid change.
func (id *Identity) apply(attr *unix.SysProcAttr) {
	attr.Credential = &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: id.Groups}
	attr.AmbientCaps = id.Caps
}

// NinePCaps are the capabilities QEMU's 9p server (security_model=none)
// needs to serve a container rootfs owned by other uids: read and search
// any file, create files and give them the guest's owner and mode.
var NinePCaps = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH,
	unix.CAP_FOWNER, unix.CAP_FSETID,
}
