package launch

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agent/seccompbpf"
	"github.com/crivm/crivm/internal/errdefs"
)

// Options describe one child to spawn.
type Options struct {
	Config Config
	// Cloneflags are the namespaces the child gets new (create).
	Cloneflags uintptr
	// Join are namespaces the child enters: the forking thread enters
	// them first (see JoinNamespaces).
	Join []Namespace
	// CgroupDir is the cgroup v2 directory the child starts in
	// (CLONE_INTO_CGROUP), so it never runs outside its limits.
	CgroupDir string
	// Stdio is the child's stdin, stdout and stderr; nil entries are
	// /dev/null. Ignored with Config.Console.
	Stdio [3]*os.File
	// Start starts cmd (the agent's reaper, which owns wait4) and returns
	// the channel its wait status arrives on.
	Start func(*exec.Cmd) (<-chan unix.WaitStatus, error)
}

// Namespace is a namespace file to enter, with its type.
type Namespace struct {
	Type specs.LinuxNamespaceType
	Path string
}

// Child is a spawned container process: before its exec for a created
// container (Start execs it), after it for an exec.
type Child struct {
	Pid    int
	Exited <-chan unix.WaitStatus
	// Console is the pty master, for Config.Console.
	Console *os.File
	// Phases are the child's set-up steps (create), and Spawn's own:
	// "fork" (until the child runs) and "ready" (until it reported).
	Phases []Phase

	sync  *json.Decoder
	syncF *os.File
	start *os.File
	// execed is closed once a released child's exec succeeded or failed
	// (execErr, set before, says which); nil before Release.
	execed  chan struct{}
	execErr error
}

// nsFlags maps namespace types to clone/setns flags.
var nsFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.PIDNamespace: unix.CLONE_NEWPID, specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.MountNamespace: unix.CLONE_NEWNS, specs.IPCNamespace: unix.CLONE_NEWIPC,
	specs.UTSNamespace: unix.CLONE_NEWUTS, specs.CgroupNamespace: unix.CLONE_NEWCGROUP,
	specs.UserNamespace: unix.CLONE_NEWUSER, specs.TimeNamespace: unix.CLONE_NEWTIME,
}

// procNames are the /proc/PID/ns names of the types.
var procNames = map[specs.LinuxNamespaceType]string{
	specs.PIDNamespace: "pid", specs.NetworkNamespace: "net", specs.MountNamespace: "mnt",
	specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts", specs.CgroupNamespace: "cgroup",
	specs.UserNamespace: "user", specs.TimeNamespace: "time",
}

// SpecNamespaces splits the spec's namespaces into clone flags (no path)
// and namespaces to join (a path that is not the agent's own).
func SpecNamespaces(nss []specs.LinuxNamespace) (uintptr, []Namespace, error) {
	var flags uintptr
	var join []Namespace
	for _, n := range nss {
		f, ok := nsFlags[n.Type]
		if !ok {
			return 0, nil, errdefs.InvalidArgument("namespace type %q", n.Type)
		}
		if n.Type == specs.UserNamespace || n.Type == specs.TimeNamespace {
			return 0, nil, errdefs.FailedPrecondition("%s namespaces are not supported in the guest", n.Type)
		}
		if n.Path == "" {
			flags |= f
			continue
		}
		same, err := sameNamespace(n.Path, "/proc/self/ns/"+procNames[n.Type])
		if err != nil {
			return 0, nil, errdefs.FailedPrecondition("namespace %s: %w", n.Path, err)
		}
		if !same {
			join = append(join, Namespace{n.Type, n.Path})
		}
	}
	return flags, join, nil
}

// ProcessNamespaces are the namespaces of pid that differ from the
// agent's, for an exec into its container.
func ProcessNamespaces(pid int) ([]Namespace, error) {
	var join []Namespace
	// Order matters: the mount namespace last (it changes the root the
	// other paths resolve in).
	for _, t := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace, specs.CgroupNamespace, specs.MountNamespace} {
		p := fmt.Sprintf("/proc/%d/ns/%s", pid, procNames[t])
		same, err := sameNamespace(p, "/proc/self/ns/"+procNames[t])
		if err != nil {
			return nil, err
		}
		if !same {
			join = append(join, Namespace{t, p})
		}
	}
	return join, nil
}

func sameNamespace(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, err
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// filters caches compiled seccomp programs by the SHA-256 of their
// profile's JSON: the pods of a node share a handful of profiles, and
// compiling in the cold child costs more than in the parent.
var filters = struct {
	sync.Mutex
	m map[[32]byte]*Filter
}{m: map[[32]byte]*Filter{}}

// maxFilters bounds the cache; past it, it starts over.
const maxFilters = 32

// compileSeccomp returns the compiled sc, from the cache when it was
// compiled before.
func compileSeccomp(sc *specs.LinuxSeccomp) (*Filter, error) {
	b, err := json.Marshal(sc)
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256(b)
	filters.Lock()
	defer filters.Unlock()
	if f, ok := filters.m[key]; ok {
		return f, nil
	}
	prog, err := seccompbpf.Compile(sc)
	if err != nil {
		return nil, errdefs.FailedPrecondition("compiling the seccomp profile: %w", err)
	}
	flags, err := seccompbpf.Flags(sc)
	if err != nil {
		return nil, errdefs.FailedPrecondition("seccomp flags: %w", err)
	}
	if len(filters.m) >= maxFilters {
		clear(filters.m)
	}
	f := &Filter{Prog: prog, Flags: flags}
	filters.m[key] = f
	return f, nil
}

// sealed is the agent binary the container inits are executed from, made
// once per agent process, such that no container can alter the binary the
// next container's init runs, as it could through /proc/self/exe
// (CVE-2019-5736): a read-only bind mount of the binary (writes through
// any path to it, /proc/PID/exe included, fail with EROFS), or where no
// mount can be made, a copy in a memfd sealed against any change. The
// bind costs nothing; the copy costs ~350 ms per VM under TCG (the
// agent's 6.5 MB faulted into a memfd), on the first container's path.
var sealed struct {
	sync.Mutex
	exe *os.File
}

// sealedDir is where the read-only bind of the agent binary is made (the
// guest's /run, which no container sees); tests point it elsewhere.
var sealedDir = "/run/crivm"

// PrepareSealed makes the sealed binary ahead of the first container; the
// agent calls it at boot. A failure is left for Spawn to report.
func PrepareSealed() { sealedExe() }

// sealedExe returns the sealed binary (see sealed), making it on the
// first call that succeeds.
func sealedExe() (*os.File, error) {
	sealed.Lock()
	defer sealed.Unlock()
	if sealed.exe != nil {
		return sealed.exe, nil
	}
	exe, err := readOnlyBind(sealedDir)
	if err != nil {
		var merr error
		if exe, merr = sealedMemfd(); merr != nil {
			return nil, errors.Join(err, merr)
		}
	}
	sealed.exe = exe
	return exe, nil
}

// readOnlyBind bind-mounts the agent binary read-only (nosuid, nodev) at
// dir/init and opens it there.
func readOnlyBind(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, "init")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o500)
	if err != nil {
		return nil, err
	}
	f.Close()
	if err := unix.Mount("/proc/self/exe", p, "", unix.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("binding the agent binary: %w", err)
	}
	if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		unix.Unmount(p, unix.MNT_DETACH)
		return nil, fmt.Errorf("making the agent binary's bind read-only: %w", err)
	}
	return os.Open(p)
}

// sealedMemfd copies the agent binary into a memfd sealed against writes,
// growth, shrinking and new seals.
func sealedMemfd() (*os.File, error) {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("opening the agent binary: %w", err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("crivm-agent", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		// Before Linux 6.3, which knows no MFD_EXEC, a memfd is executable.
		fd, err = unix.MemfdCreate("crivm-agent", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the memfd of the agent binary: %w", err)
	}
	exe := os.NewFile(uintptr(fd), "crivm-agent")
	if _, err := io.Copy(exe, src); err != nil {
		exe.Close()
		return nil, fmt.Errorf("copying the agent binary: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		exe.Close()
		return nil, fmt.Errorf("sealing the agent binary: %w", err)
	}
	return exe, nil
}

// Spawn starts the child and waits until it is ready (create: set up and
// waiting for Start) or has exec'd (exec). On failure nothing runs.
func Spawn(opts Options) (*Child, error) {
	// The agent is not dumpable, so neither is a child from its fork
	// until its execve: the child is in the container's PID namespace
	// with a copy of the agent's memory and fds from the start.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("making the agent non-dumpable: %w", err)
	}
	if spec := opts.Config.Spec; spec != nil && spec.Linux != nil && spec.Linux.Seccomp != nil {
		f, err := compileSeccomp(spec.Linux.Seccomp)
		if err != nil {
			return nil, err
		}
		// The child gets the program, not the profile to compile again.
		s, l := *spec, *spec.Linux
		l.Seccomp = nil
		s.Linux = &l
		opts.Config.Spec, opts.Config.Seccomp = &s, f
	}
	exe, err := sealedExe()
	if err != nil {
		return nil, err
	}
	files := &fileSet{}
	defer files.closeChildEnds()
	cfgR, cfgW, err := files.pipe()
	if err != nil {
		return nil, err
	}
	syncR, syncW, err := files.pipe()
	if err != nil {
		return nil, err
	}
	startR, startW, err := files.pipe()
	if err != nil {
		return nil, err
	}
	var consoleParent, consoleChild *os.File
	if opts.Config.Console {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("making the console socket: %w", err)
		}
		consoleParent, consoleChild = os.NewFile(uintptr(fds[0]), "console"), os.NewFile(uintptr(fds[1]), "console-child")
		files.parent = append(files.parent, consoleParent)
		files.child = append(files.child, consoleChild)
	}
	files.child = append(files.child, cfgR, syncW, startR)
	files.parent = append(files.parent, cfgW, syncR, startW)

	cmd := &exec.Cmd{
		Path:        procFd(fdExe),
		Args:        []string{"crivm-agent", InitArg},
		Env:         []string{},
		ExtraFiles:  []*os.File{cfgR, syncW, startR, consoleChild, exe},
		SysProcAttr: &unix.SysProcAttr{Cloneflags: opts.Cloneflags, Setsid: true},
	}
	if !opts.Config.Console {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdio[0], opts.Stdio[1], opts.Stdio[2]
	}
	if opts.CgroupDir != "" {
		fd, err := openCgroup(opts.CgroupDir)
		if err != nil {
			return nil, err
		}
		defer unix.Close(fd)
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	}
	// Mount and cgroup namespaces are the child's to enter (see
	// Config.Enter); the others its forking thread enters.
	var join []Namespace
	opts.Config.Enter = nil
	for _, n := range opts.Join {
		if n.Type == specs.MountNamespace || n.Type == specs.CgroupNamespace {
			opts.Config.Enter = append(opts.Config.Enter, n)
			continue
		}
		join = append(join, n)
	}
	t0 := time.Now()
	var exited <-chan unix.WaitStatus
	if err := JoinNamespaces(join, func() error {
		var err error
		exited, err = opts.Start(cmd)
		return err
	}); err != nil {
		files.closeAll()
		return nil, fmt.Errorf("starting the container init: %w", err)
	}
	c := &Child{Pid: cmd.Process.Pid, Exited: exited, sync: json.NewDecoder(syncR), syncF: syncR, start: startW}
	c.Phases = append(c.Phases, Phase{"fork", float64(time.Since(t0).Microseconds()) / 1000})
	files.closeChildEnds()
	fail := func(err error) (*Child, error) {
		unix.Kill(c.Pid, unix.SIGKILL)
		files.closeAll()
		return nil, err
	}
	err = json.NewEncoder(cfgW).Encode(&opts.Config)
	cfgW.Close()
	if err != nil {
		return fail(fmt.Errorf("sending the launch config: %w", err))
	}
	if opts.Config.Console {
		m, err := recvFd(consoleParent)
		if err != nil {
			// The child's own report says more than a missing fd.
			if rerr := c.readSync(false); rerr != nil {
				err = rerr
			}
			return fail(err)
		}
		consoleParent.Close()
		c.Console = m
	}
	t1 := time.Now()
	if err := c.readSync(opts.Config.Mode == ModeCreate); err != nil {
		return fail(err)
	}
	c.Phases = append(c.Phases, Phase{"ready", float64(time.Since(t1).Microseconds()) / 1000})
	if opts.Config.Mode != ModeCreate {
		startW.Close()
		syncR.Close()
	}
	return c, nil
}

// Release lets a created container exec its program without waiting for
// the exec, as runc start does not: Execed is closed once the exec
// succeeded or failed, and ExecErr then says which. An error means the
// init was not told to start. The caller calls Release and Execed under
// one lock of its own.
func (c *Child) Release() error {
	if c.start == nil {
		return errdefs.FailedPrecondition("the process was started already")
	}
	start := c.start
	c.start = nil
	_, err := start.Write([]byte{1})
	start.Close()
	if err != nil {
		c.syncF.Close()
		return fmt.Errorf("signalling the start: %w", err)
	}
	c.execed = make(chan struct{})
	go func() {
		c.execErr = c.readSync(false)
		c.syncF.Close()
		close(c.execed)
	}()
	return nil
}

// Execed is closed once a released child's exec succeeded or failed; nil
// before Release.
func (c *Child) Execed() <-chan struct{} { return c.execed }

// ExecErr is why a released child's exec failed (the init's report; the
// init then exits), nil when it succeeded. Read it once Execed is closed.
func (c *Child) ExecErr() error { return c.execErr }

// Abort ends a created container that was never started.
func (c *Child) Abort() {
	if c.start != nil {
		c.start.Close()
		c.syncF.Close()
		c.start = nil
	}
	unix.Kill(c.Pid, unix.SIGKILL)
}

// readSync reads the child's report: Ready when wantReady, else EOF (the
// sync fd closed on exec). An error report becomes a classified error.
func (c *Child) readSync(wantReady bool) error {
	var msg syncMsg
	err := c.sync.Decode(&msg)
	c.Phases = append(c.Phases, msg.Phases...)
	switch {
	case errors.Is(err, io.EOF) && !wantReady:
		return nil
	case errors.Is(err, io.EOF):
		return fmt.Errorf("the container init exited during set-up without a report")
	case err != nil:
		return fmt.Errorf("reading the container init's report: %w", err)
	case msg.Error != "":
		switch msg.Class {
		case "precondition":
			return errdefs.FailedPrecondition("%s", msg.Error)
		case "invalid":
			return errdefs.InvalidArgument("%s", msg.Error)
		}
		return errors.New(msg.Error)
	case !msg.Ready || !wantReady:
		// Only EOF (the sync fd closed on exec) reports an exec: any other
		// report while waiting for it is not its success.
		return fmt.Errorf("the container init reported %+v out of turn", msg)
	}
	return nil
}

// JoinNamespaces runs fn on an OS thread that has entered nss (fn's
// forks inherit them). With none, fn runs on the caller's thread. The
// thread is never given back to the scheduler: it dies with its
// goroutine instead of running other goroutines in the container's
// namespaces.
func JoinNamespaces(nss []Namespace, fn func() error) error {
	if len(nss) == 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		for _, n := range nss {
			if n.Type == specs.MountNamespace || n.Type == specs.CgroupNamespace {
				errc <- fmt.Errorf("a %s namespace cannot be joined by a thread of the agent", n.Type)
				return
			}
		}
		if err := enterNamespaces(nss); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// fileSet tracks the pipe ends of a spawn.
type fileSet struct {
	parent, child []*os.File
}

func (f *fileSet) pipe() (*os.File, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		f.closeAll()
		return nil, nil, fmt.Errorf("making a pipe: %w", err)
	}
	return r, w, nil
}

func (f *fileSet) closeChildEnds() {
	for _, c := range f.child {
		if c != nil {
			c.Close()
		}
	}
	f.child = nil
}

func (f *fileSet) closeAll() {
	f.closeChildEnds()
	for _, c := range f.parent {
		if c != nil {
			c.Close()
		}
	}
	f.parent = nil
}

// fileConn wraps a unix socket file.
func fileConn(f *os.File) (*net.UnixConn, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%s is not a unix socket", f.Name())
	}
	return uc, nil
}

// recvFd receives one fd sent with SCM_RIGHTS on sock. The fd is made
// non-blocking, so the *os.File is pollable and write deadlines work.
func recvFd(sock *os.File) (*os.File, error) {
	conn, err := fileConn(sock)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("receiving the pty master: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) == 0 {
		return nil, fmt.Errorf("receiving the pty master: no control message (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("receiving the pty master: want one fd, got %d (%v)", len(fds), err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	return os.NewFile(uintptr(fds[0]), string(buf[:n])), nil
}

// openCgroup opens a cgroup dir as a descriptor: for CLONE_INTO_CGROUP,
// or to attach a BPF program to.
func openCgroup(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening cgroup %s: %w", dir, err)
	}
	return fd, nil
}

// warmWait bounds Warm's child: an exec of the agent that prints its
// version takes ~50 ms under TCG.
const warmWait = 30 * time.Second

// Warm runs the sealed agent binary once as a container's init is run:
// executed through its descriptor into the cgroup dir (CLONE_INTO_CGROUP),
// in new mount, PID, UTS and IPC namespaces, printing its version and
// exiting. The guest faults the binary in and, under TCG, QEMU translates
// the kernel's and the Go runtime's code of a container's start before a
// pod's first container needs it. What stays is the sealed binary, which
// the first container would make.
func Warm(dir string, start func(*exec.Cmd) (<-chan unix.WaitStatus, error)) error {
	exe, err := sealedExe()
	if err != nil {
		return err
	}
	cg, err := openCgroup(dir)
	if err != nil {
		return err
	}
	defer unix.Close(cg)
	const fd = 3 // exe, the first of ExtraFiles
	cmd := &exec.Cmd{
		Path:       procFd(fd),
		Args:       []string{"crivm-agent", "version"},
		Env:        []string{},
		ExtraFiles: []*os.File{exe},
		SysProcAttr: &unix.SysProcAttr{
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC, Setsid: true,
			UseCgroupFD: true, CgroupFD: cg,
		},
	}
	exited, err := start(cmd)
	if err != nil {
		return fmt.Errorf("starting the agent binary: %w", err)
	}
	select {
	case ws := <-exited:
		if !ws.Exited() || ws.ExitStatus() != 0 {
			return fmt.Errorf("the agent binary ended with status %#x", uint32(ws))
		}
		return nil
	case <-time.After(warmWait):
		unix.Kill(cmd.Process.Pid, unix.SIGKILL)
		<-exited
		return fmt.Errorf("the agent binary did not exit within %v", warmWait)
	}
}
