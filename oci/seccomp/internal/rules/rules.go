// Package rules is the single source of the syscall policy behind crivm's
// default seccomp profile. The generator (oci/seccomp/gen) writes the
// shipped default.json from it; package seccomp uses it to add the
// capability-conditional rules at spec time.
//
// The policy is containerd's default profile for amd64, as of containerd
// v2.4.0-beta.0 (contrib/seccomp/seccomp_default.go at commit 0c23e946,
// "seccomp: Block AF_ALG in default socket policy"): an explicit allowlist,
// so a syscall is reachable only once it is listed here, never because new
// kernel headers define it. Names newer than the kernel the filter compiler
// knows (agent/seccompbpf) are kept: the compiler skips them, and they
// take effect when its tables know them.
//
// Invariant: every syscall named in ByCapability or ArgRestricted is absent
// from Allowed. A test checks it.
package rules

// Allowed is the unconditional allowlist: containerd's list, its amd64
// additions (arch_prctl, modify_ldt) and those it makes on kernels from
// 4.8 on (process_vm_readv, process_vm_writev, ptrace).
var Allowed = []string{
	"_llseek", "_newselect", "accept", "accept4", "access", "adjtimex",
	"alarm", "arch_prctl", "bind", "brk", "cachestat", "capget", "capset",
	"chdir", "chmod", "chown", "chown32", "clock_adjtime",
	"clock_adjtime64", "clock_getres", "clock_getres_time64",
	"clock_gettime", "clock_gettime64", "clock_nanosleep",
	"clock_nanosleep_time64", "close", "close_range", "connect",
	"copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
	"epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
	"execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2",
	"fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir",
	"fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
	"fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock",
	"fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64",
	"fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
	"futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
	"futex_wake", "futimesat", "get_robust_list", "get_thread_area",
	"getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32",
	"geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
	"getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
	"getpid", "getppid", "getpriority", "getrandom", "getresgid",
	"getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage",
	"getsid", "getsockname", "getsockopt", "gettid", "gettimeofday",
	"getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch",
	"inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
	"io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
	"io_setup", "io_submit", "ioctl", "ioprio_get", "ioprio_set", "ipc",
	"kill", "landlock_add_rule", "landlock_create_ruleset",
	"landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link",
	"linkat", "listen", "listmount", "listxattr", "listxattrat",
	"llistxattr", "lremovexattr", "lseek", "lsetxattr",
	"lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "lstat",
	"lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
	"memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat",
	"mlock", "mlock2", "mlockall", "mmap", "mmap2", "modify_ldt",
	"mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
	"mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
	"mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd",
	"msync", "munlock", "munlockall", "munmap", "name_to_handle_at",
	"nanosleep", "newfstatat", "open", "openat", "openat2", "pause",
	"pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
	"pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
	"pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
	"process_vm_readv", "process_vm_writev", "pselect6", "pselect6_time64",
	"ptrace", "pwrite64", "pwritev", "pwritev2", "read", "readahead",
	"readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
	"recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
	"removexattrat", "rename", "renameat", "renameat2", "restart_syscall",
	"rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
	"rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
	"rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
	"sched_get_priority_max", "sched_get_priority_min",
	"sched_getaffinity", "sched_getattr", "sched_getparam",
	"sched_getscheduler", "sched_rr_get_interval",
	"sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
	"sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
	"select", "semctl", "semget", "semop", "semtimedop",
	"semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
	"sendmsg", "sendto", "set_robust_list", "set_thread_area",
	"set_tid_address", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
	"setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
	"setpgid", "setpriority", "setregid", "setregid32", "setresgid",
	"setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
	"setrlimit", "setsid", "setsockopt", "setuid", "setuid32", "setxattr",
	"setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
	"sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
	"socketcall", "socketpair", "splice", "stat", "stat64", "statfs",
	"statfs64", "statmount", "statx", "symlink", "symlinkat", "sync",
	"sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
	"timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
	"timer_gettime64", "timer_settime", "timer_settime64",
	"timerfd_create", "timerfd_gettime", "timerfd_gettime64",
	"timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
	"truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
	"uretprobe", "utime", "utimensat", "utimensat_time64", "utimes",
	"vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
}

// ByCapability lists, per capability, the syscalls the default profile
// allows only when that capability is in the container's bounding set
// (containerd's capability groups; CAP_SYS_PTRACE's process_vm_readv,
// process_vm_writev and ptrace are in Allowed already).
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
	"CAP_SYS_BOOT":       {"reboot"},
	"CAP_SYS_CHROOT":     {"chroot"},
	"CAP_SYS_MODULE":     {"delete_module", "finit_module", "init_module"},
	"CAP_SYS_NICE":       {"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"},
	"CAP_SYS_PACCT":      {"acct"},
	"CAP_SYS_PTRACE":     {"kcmp", "pidfd_getfd", "process_madvise"},
	"CAP_SYS_RAWIO":      {"ioperm", "iopl"},
	"CAP_SYS_TIME":       {"clock_settime", "clock_settime64", "settimeofday", "stime"},
	"CAP_SYSLOG":         {"syslog"},
	"CAP_SYS_TTY_CONFIG": {"vhangup"},
}

// ArgRestricted lists syscalls that default.json allows only with argument
// conditions (or answers with a fixed errno), so they are not in Allowed:
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
