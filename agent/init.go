package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/log"
)

// GuestPath is the PATH of the agent and of processes it starts without one.
const GuestPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
}

var baseMounts = []mountSpec{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", 0o755},
	{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "nsdelegate", 0o555},
}

// initramfsRoot is where LeaveInitramfs binds the initramfs.
const initramfsRoot = "/.root"

// LeaveInitramfs moves the root of PID 1 (and so of every process it
// starts) from the initramfs onto a bind mount of it. The initramfs is the
// namespace's first mount and has no parent, so pivot_root into a
// container rootfs fails with EINVAL while it is the root; a bind mount
// moved over / has the initramfs as its parent, and pivot_root works. No
// file is copied. Call it before anything else is mounted.
func LeaveInitramfs() error {
	if err := os.MkdirAll(initramfsRoot, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("/", initramfsRoot, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding / to %s: %w", initramfsRoot, err)
	}
	if err := unix.Chdir(initramfsRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		unix.Chdir("/")
		unix.Unmount(initramfsRoot, unix.MNT_DETACH)
		return fmt.Errorf("moving %s over /: %w", initramfsRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("entering the bound root: %w", err)
	}
	return unix.Chdir("/")
}

// MountBase mounts the pseudo filesystems PID 1 needs. A target that is
// already mounted (EBUSY) is kept; any other failure is returned after the
// rest were tried.
func MountBase(ctx context.Context) error {
	var errs []error
	for _, m := range baseMounts {
		if err := os.MkdirAll(m.target, m.mode); err != nil {
			errs = append(errs, fmt.Errorf("creating %s: %w", m.target, err))
			continue
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err))
		}
	}
	for name, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2", "/dev/ptmx": "pts/ptmx",
	} {
		if err := os.Symlink(target, name); err != nil && !errors.Is(err, os.ErrExist) {
			errs = append(errs, fmt.Errorf("linking %s: %w", name, err))
		}
	}
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		errs = append(errs, err)
	}
	if err := unix.Sethostname([]byte("crivm")); err != nil {
		log.G(ctx).Debug("setting hostname", "error", err)
	}
	return errors.Join(errs...)
}

// NodeSysctls are the kernel tunables the kubelet sets on every node it
// runs (its setupKernelTunables), so that a guest behaves like a node: a
// container that allocates past its limit is OOM-killed (exit 137) rather
// than refused memory with ENOMEM. kernel.panic stays the boot line's -1:
// a guest panic ends QEMU at once.
var NodeSysctls = []struct{ Key, Value string }{
	{"vm/overcommit_memory", "1"},
	{"vm/panic_on_oom", "0"},
	{"kernel/panic_on_oops", "1"},
	{"kernel/keys/root_maxkeys", "1000000"},
	{"kernel/keys/root_maxbytes", "25000000"},
}

// SetNodeSysctls writes NodeSysctls below /proc/sys, all of them, and
// returns the joined failures.
func SetNodeSysctls() error {
	var errs []error
	for _, s := range NodeSysctls {
		if err := os.WriteFile("/proc/sys/"+s.Key, []byte(s.Value), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("setting %s: %w", s.Key, err))
		}
	}
	return errors.Join(errs...)
}

// LoadModules loads the modules listed in orderFile, in order, with
// finit_module. A module already loaded (or built in) is skipped; a
// failure is logged and the rest still load, since a missing optional
// module (say, networking) must not keep the agent from serving. It
// returns how many modules loaded and the joined failures.
func LoadModules(ctx context.Context, orderFile string) (int, error) {
	f, err := os.Open(orderFile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("reading module list: %w", err)
	}
	defer f.Close()
	var errs []error
	loaded := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		start := time.Now()
		err := finitModule(p)
		switch {
		case errors.Is(err, unix.EEXIST):
			log.G(ctx).Debug("module already loaded", "module", p)
		case err != nil:
			log.G(ctx).Warn("loading module", "module", p, "error", err)
			errs = append(errs, fmt.Errorf("loading %s: %w", p, err))
		default:
			loaded++
			log.G(ctx).Debug("loaded module", "module", p, "elapsed", time.Since(start))
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	return loaded, errors.Join(errs...)
}

func finitModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		err = unix.FinitModule(fd, "", 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// KernelParam returns the value of key=value on the kernel command line.
func KernelParam(key string) (string, bool) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", false
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v, true
		}
		if f == key {
			return "", true
		}
	}
	return "", false
}

// PowerOff syncs and powers the VM off, which makes QEMU exit. It only
// returns if the reboot syscall fails.
func PowerOff(ctx context.Context, why string) error {
	log.G(ctx).Warn("powering off", "reason", why)
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
