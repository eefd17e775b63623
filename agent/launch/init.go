package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agent/seccompbpf"
)

// childError is an error of the child with the class the parent reports.
type childError struct {
	class string
	err   error
}

func (e *childError) Error() string { return e.err.Error() }

func precondition(format string, args ...any) error {
	return &childError{"precondition", fmt.Errorf(format, args...)}
}

// Init is the container init: the agent binary re-executed with InitArg.
// It never returns: it execs the container's program or exits non-zero
// after reporting why on fdSync.
//
// Invariant: every per-thread attribute (capabilities, no_new_privs,
// seccomp, keep-caps) is set on the main thread, which LockOSThread pins
// and which is the thread that calls execve.
func Init() {
	runtime.LockOSThread()
	syncFile := os.NewFile(fdSync, "sync")
	err := initChild(syncFile)
	msg := syncMsg{Error: err.Error()}
	var ce *childError
	if errors.As(err, &ce) {
		msg.Class = ce.class
	}
	json.NewEncoder(syncFile).Encode(&msg)
	os.Exit(1)
}

// initChild returns only on failure.
func initChild(syncFile *os.File) error {
	// Until its final execve, which resets the flag, the init is not
	// dumpable: no process of the container it joins may ptrace it or
	// open its /proc files (its fds, root and cwd lead outside the
	// container until it has entered the container's mount namespace).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("making the init non-dumpable: %w", err)
	}
	unix.Close(fdExe)
	var phases []Phase
	last := time.Now()
	mark := func(name string) {
		now := time.Now()
		phases = append(phases, Phase{name, float64(now.Sub(last).Microseconds()) / 1000})
		last = now
	}
	var cfg Config
	if err := json.NewDecoder(os.NewFile(fdConfig, "config")).Decode(&cfg); err != nil {
		return fmt.Errorf("reading the launch config: %w", err)
	}
	unix.Close(fdConfig)
	if cfg.Spec == nil || cfg.Process == nil || len(cfg.Process.Args) == 0 {
		return precondition("the launch config has no spec or process")
	}
	mark("config")
	if err := enterNamespaces(cfg.Enter); err != nil {
		return err
	}
	if cfg.Mode == ModeCreate {
		if err := setupRootfs(cfg.Spec); err != nil {
			return err
		}
		mark("rootfs")
	}
	if cfg.Console {
		if err := setupConsole(cfg.Mode == ModeCreate); err != nil {
			return fmt.Errorf("setting up the console: %w", err)
		}
	}
	p := cfg.Process
	path, err := LookPath(p.Args[0], p.Env, p.Cwd)
	if err != nil {
		return precondition("%w", err)
	}
	mark("lookup")
	if cfg.Mode == ModeCreate {
		if err := json.NewEncoder(syncFile).Encode(&syncMsg{Ready: true, Phases: phases}); err != nil {
			return err
		}
		var b [1]byte
		if n, _ := os.NewFile(fdStart, "start").Read(b[:]); n != 1 {
			os.Exit(0) // deleted before it was started
		}
	}
	unix.Close(fdStart)
	if err := finalize(cfg.Seccomp, p); err != nil {
		return err
	}
	// fdSync is close-on-exec: the parent sees EOF once execve succeeded.
	unix.CloseOnExec(fdSync)
	err = unix.Exec(path, p.Args, p.Env)
	return precondition("exec %s: %w", p.Args[0], err)
}

// enterNamespaces moves the calling (locked) thread into nss, in order.
// For a mount namespace the thread first takes an fs_struct of its own:
// setns refuses one to threads that share theirs.
func enterNamespaces(nss []Namespace) error {
	for _, n := range nss {
		fd, err := unix.Open(n.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s namespace %s: %w", n.Type, n.Path, err)
		}
		if n.Type == specs.MountNamespace {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				unix.Close(fd)
				return fmt.Errorf("unsharing the fs attributes: %w", err)
			}
		}
		err = unix.Setns(fd, int(nsFlags[n.Type]))
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("entering %s namespace %s: %w", n.Type, n.Path, err)
		}
	}
	return nil
}

// setupRootfs builds the container's filesystem view in its fresh mount
// namespace and pivots into it.
func setupRootfs(spec *specs.Spec) error {
	if spec.Root == nil || !filepath.IsAbs(spec.Root.Path) {
		return precondition("the spec's root must be an absolute guest path")
	}
	rootfs := spec.Root.Path
	var l specs.Linux
	if spec.Linux != nil {
		l = *spec.Linux
	}
	prop, err := rootPropagation(l.RootfsPropagation)
	if err != nil {
		return precondition("%w", err)
	}
	if err := unix.Mount("", "/", "", prop, ""); err != nil {
		return fmt.Errorf("setting the propagation of /: %w", err)
	}
	// pivot_root needs the new root to be a mount point.
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding the rootfs %s: %w", rootfs, err)
	}
	fd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the rootfs %s: %w", rootfs, err)
	}
	defer unix.Close(fd)
	root := rootfsDir{path: rootfs, fd: fd}
	devTmpfs := false
	for _, m := range spec.Mounts {
		if err := mountInRootfs(root, m); err != nil {
			return err
		}
		if filepath.Clean(m.Destination) == "/dev" && m.Type == "tmpfs" {
			devTmpfs = true
		}
	}
	if devTmpfs {
		if err := makeDevices(root, l.Devices); err != nil {
			return err
		}
	}
	if err := pivotRoot(rootfs); err != nil {
		return err
	}
	if spec.Hostname != "" && ownsNamespace(l.Namespaces, specs.UTSNamespace) {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("setting the hostname: %w", err)
		}
	}
	if err := writeSysctls(l.Sysctl); err != nil {
		return err
	}
	if err := maskPaths(l.MaskedPaths); err != nil {
		return err
	}
	if err := readonlyPaths(l.ReadonlyPaths); err != nil {
		return err
	}
	if spec.Root.Readonly {
		if err := remountBind("/", unix.MS_RDONLY); err != nil {
			return fmt.Errorf("making the rootfs read-only: %w", err)
		}
	}
	return nil
}

// ownsNamespace reports whether the spec creates (not joins) a namespace
// of type t.
func ownsNamespace(nss []specs.LinuxNamespace, t specs.LinuxNamespaceType) bool {
	for _, n := range nss {
		if n.Type == t {
			return n.Path == ""
		}
	}
	return false
}

// setupConsole makes a pty in the container's devpts, makes its slave
// the controlling terminal and stdio, binds it on /dev/console (create)
// and sends the master to the parent over fdConsole.
func setupConsole(bindConsole bool) error {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlocking the pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		return fmt.Errorf("naming the pty: %w", err)
	}
	slavePath := fmt.Sprintf("/dev/pts/%d", n)
	slave, err := unix.Open(slavePath, unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	if bindConsole {
		if f, err := os.OpenFile("/dev/console", os.O_CREATE|os.O_RDONLY, 0o600); err == nil {
			f.Close()
			if err := unix.Mount(slavePath, "/dev/console", "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("binding /dev/console: %w", err)
			}
		}
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			return err
		}
	}
	unix.Close(slave)
	// Setsid ran at the fork: this process leads a session without a tty.
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("taking the controlling terminal: %w", err)
	}
	sock := os.NewFile(fdConsole, "console")
	defer sock.Close()
	conn, err := fileConn(sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, _, err := conn.WriteMsgUnix([]byte(slavePath), unix.UnixRights(int(master.Fd())), nil); err != nil {
		return fmt.Errorf("sending the pty master: %w", err)
	}
	return nil
}

// finalize applies the process's attributes and credentials, in runc's
// order: rlimits and OOM score while privileged; every fd but stdio
// close-on-exec, and the umask; seccomp early when no_new_privs is off
// (loading it then needs CAP_SYS_ADMIN); bounding set; working
// directory; user and groups with keep-caps; check of the working
// directory; capabilities; no_new_privs; seccomp late when no_new_privs
// is on.
func finalize(filter *Filter, p *specs.Process) error {
	for _, r := range p.Rlimits {
		res, ok := rlimits[r.Type]
		if !ok {
			return precondition("unknown rlimit %s", r.Type)
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: r.Soft, Max: r.Hard}); err != nil {
			return fmt.Errorf("setting %s: %w", r.Type, err)
		}
	}
	// Only stdio survives the execve, whatever the agent leaked into the
	// fork: fdSync, which is close-on-exec already, reports the execve.
	// Before seccomp, which may deny close_range.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("marking the fds close-on-exec: %w", err)
	}
	umask := uint32(0o022)
	if p.User.Umask != nil {
		umask = *p.User.Umask
	}
	unix.Umask(int(umask))
	if p.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(fmt.Sprint(*p.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("setting oom_score_adj: %w", err)
		}
	}
	loadSeccomp := func() error {
		if filter == nil {
			return nil
		}
		if err := seccompbpf.Load(filter.Prog, filter.Flags); err != nil {
			return fmt.Errorf("loading seccomp: %w", err)
		}
		return nil
	}
	if !p.NoNewPrivileges {
		if err := loadSeccomp(); err != nil {
			return err
		}
	}
	caps, err := capabilityState(p.Capabilities)
	if err != nil {
		return err
	}
	if err := caps.Apply(capability.BOUNDS); err != nil {
		return fmt.Errorf("dropping bounding capabilities: %w", err)
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	// As root first, as runc: a directory the user cannot search works;
	// as the user if root may not enter it (a volume only its owner can).
	cwdErr := unix.Chdir(cwd)
	if cwdErr != nil && !errors.Is(cwdErr, os.ErrPermission) {
		return precondition("entering the working directory %s: %w", cwd, cwdErr)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return err
	}
	if err := setUser(p.User); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return err
	}
	if cwdErr != nil {
		if err := unix.Chdir(cwd); err != nil {
			return precondition("entering the working directory %s: %w", cwd, err)
		}
	}
	if err := checkCwd(cwd); err != nil {
		return err
	}
	if err := caps.Apply(capability.CAPS | capability.AMBS); err != nil {
		return fmt.Errorf("applying capabilities: %w", err)
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("setting no_new_privs: %w", err)
		}
		if err := loadSeccomp(); err != nil {
			return err
		}
	}
	return nil
}

// checkCwd checks that the working directory, entered as cwd, is inside
// the container's root: one reached through an fd of the agent's tree
// (cwd /proc/self/fd/N) is not, and getcwd then has no absolute path for
// it (CVE-2024-21626).
func checkCwd(cwd string) error {
	if _, err := unix.Getwd(); errors.Is(err, unix.ENOENT) {
		return precondition("the working directory %s is outside the container's root", cwd)
	} else if err != nil {
		return fmt.Errorf("checking the working directory %s: %w", cwd, err)
	}
	return nil
}

// setUser switches the calling thread (and, through Go, every thread) to
// the spec's uid, gid and supplementary groups.
func setUser(u specs.User) error {
	groups := make([]int, 0, len(u.AdditionalGids))
	for _, g := range u.AdditionalGids {
		groups = append(groups, int(g))
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("setting groups: %w", err)
	}
	if err := unix.Setresgid(int(u.GID), int(u.GID), int(u.GID)); err != nil {
		return fmt.Errorf("setting gid %d: %w", u.GID, err)
	}
	if err := unix.Setresuid(int(u.UID), int(u.UID), int(u.UID)); err != nil {
		return fmt.Errorf("setting uid %d: %w", u.UID, err)
	}
	return nil
}

// capabilityState is the calling thread's capabilities as the spec sets
// them. A capability this kernel does not know is ignored, as runc does.
func capabilityState(c *specs.LinuxCapabilities) (capability.Capabilities, error) {
	caps, err := capability.NewPid2(0)
	if err != nil {
		return nil, err
	}
	caps.Clear(capability.CAPS | capability.BOUNDS | capability.AMBS)
	if c == nil {
		return caps, nil
	}
	known := map[string]capability.Cap{}
	last, err := capability.LastCap()
	if err != nil {
		return nil, err
	}
	for _, cp := range capability.List() {
		if cp <= last {
			known["CAP_"+strings.ToUpper(cp.String())] = cp
		}
	}
	for _, set := range []struct {
		which capability.CapType
		names []string
	}{
		{capability.BOUNDING, c.Bounding}, {capability.EFFECTIVE, c.Effective},
		{capability.PERMITTED, c.Permitted}, {capability.INHERITABLE, c.Inheritable},
		{capability.AMBIENT, c.Ambient},
	} {
		for _, n := range set.names {
			if cp, ok := known[n]; ok {
				caps.Set(set.which, cp)
			}
		}
	}
	return caps, nil
}

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// LookPath resolves name like execvp: a name with a slash is taken as
// is (relative to cwd), else it is searched in the process's PATH (the
// guest default when unset).
func LookPath(name string, env []string, cwd string) (string, error) {
	check := func(p string) error {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s: permission denied", p)
		}
		return nil
	}
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) && cwd != "" {
			p = filepath.Join(cwd, p)
		}
		if err := check(p); err != nil {
			return "", fmt.Errorf("executable %s: %w", name, err)
		}
		return p, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if check(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable file %q not found in $PATH", name)
}
