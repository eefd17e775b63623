// Package rules is the single source of the syscall policy behind crivm's
// default seccomp profile. The generator (oci/seccomp/gen) uses it to decide
// which syscalls the shipped default.json allows unconditionally; package
// seccomp uses it to add the capability-conditional rules at spec time.
//
// Invariant: every syscall named here is absent from the unconditional allow
// list in default.json. The generator enforces it and a test checks it.
package rules

// Never lists syscalls the default profile denies whatever the container's
// capabilities: they reach state that is not namespaced (keyrings, swap,
// kexec), are obsolete or unimplemented, or have a history of kernel bugs
// reachable from unprivileged code (io_uring, userfaultfd).
var Never = []string{
	// Kernel keyring: not namespaced.
	"add_key", "keyctl", "request_key",
	// Replacing or rebooting into another kernel, swap devices.
	"kexec_file_load", "kexec_load", "swapoff", "swapon",
	// pivot_root is for the runtime, never for the workload.
	"pivot_root",
	// Large attack surface; denied by the Docker and containerd profiles too.
	"io_uring_enter", "io_uring_register", "io_uring_setup", "userfaultfd",
	// NUMA page migration across processes.
	"migrate_pages", "move_pages",
	// Virtual 8086 mode (i386 only).
	"vm86", "vm86old",
	// Obsolete or unimplemented syscalls.
	"_sysctl", "afs_syscall", "bdflush", "break", "create_module", "ftime",
	"get_kernel_syms", "getpmsg", "gtty", "idle", "lock", "mpx", "nfsservctl",
	"prof", "profil", "putpmsg", "query_module", "security", "stty", "sysfs",
	"tuxcall", "ulimit", "uselib", "ustat", "vserver",
}

// ByCapability lists, per capability, the syscalls the default profile
// allows only when that capability is in the container's bounding set. The
// kernel would refuse most of them without the capability anyway; keeping
// them out of reach shrinks the kernel surface of ordinary containers.
var ByCapability = map[string][]string{
	"CAP_BPF":             {"bpf"},
	"CAP_DAC_READ_SEARCH": {"open_by_handle_at"},
	"CAP_PERFMON":         {"perf_event_open"},
	// CAP_SYS_ADMIN also lifts the namespace-flag restriction on clone and
	// the ENOSYS answer to clone3 (see ArgRestricted).
	"CAP_SYS_ADMIN": {
		"bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen",
		"fspick", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
		"open_tree", "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
		"sethostname", "setns", "syslog", "umount", "umount2", "unshare",
	},
	"CAP_SYS_BOOT":   {"reboot"},
	"CAP_SYS_CHROOT": {"chroot"},
	"CAP_SYS_MODULE": {"delete_module", "finit_module", "init_module"},
	"CAP_SYS_NICE":   {"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"},
	"CAP_SYS_PACCT":  {"acct"},
	"CAP_SYS_PTRACE": {"kcmp", "pidfd_getfd", "process_madvise"},
	"CAP_SYS_RAWIO":  {"ioperm", "iopl"},
	"CAP_SYS_TIME":   {"clock_settime", "clock_settime64", "settimeofday", "stime"},
	"CAP_SYSLOG":     {"syslog"},
	// vhangup needs CAP_SYS_TTY_CONFIG in the kernel too.
	"CAP_SYS_TTY_CONFIG": {"vhangup"},
}

// ArgRestricted lists syscalls that default.json allows only with argument
// conditions (or answers with a fixed errno), so they are not in the
// unconditional allow list:
//   - clone: allowed when no CLONE_NEW* flag is set (CloneNewMask);
//   - clone3: ENOSYS, so libc falls back to clone, whose flags seccomp can
//     inspect (clone3 passes them in memory);
//   - personality: allowed for the harmless personas only;
//   - socket: every address family except AF_ALG and AF_VSOCK.
var ArgRestricted = []string{"clone", "clone3", "personality", "socket"}

// CloneNewMask is CLONE_NEWNS|CLONE_NEWCGROUP|CLONE_NEWUTS|CLONE_NEWIPC|
// CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET.
const CloneNewMask = 0x7E020000

// ENOSYS is the errno clone3 answers with.
const ENOSYS = 38

// Address families the socket rule keeps out of reach: AF_ALG (kernel
// crypto API, a recurring source of kernel bugs) and AF_VSOCK (host↔guest
// sockets; under the vm handler they would reach the host).
const (
	AFALG   = 38
	AFVSOCK = 40
)

// Personalities allowed for personality(2): PER_LINUX, PER_LINUX32,
// UNAME26, PER_LINUX32|UNAME26, and 0xffffffff (query).
var Personalities = []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff}
