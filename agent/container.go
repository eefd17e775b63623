package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agent/launch"
	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// idPattern is what container and exec ids may look like: they name
// files and directories.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// container is one container of the guest, launched by package launch.
type container struct {
	id   string
	spec *specs.Spec
	// cgroup is the container's cgroup v2 directory.
	cgroup string
	// child is the init; StartContainer releases it to exec its program.
	// Its Release and Execed are called under mu.
	child *launch.Child
	// oomBase is memory.events oom_kill when the container was created.
	oomBase uint64
	init    *process

	// mu guards started and execs.
	mu      sync.Mutex
	started bool
	execs   map[string]*process
}

// process is a container's init or an exec'd process, with the agent's
// ends of its stdio and, once it exited, its status.
type process struct {
	execID string
	pid    int
	tty    bool
	stdout *outputBuffer
	stderr *outputBuffer

	// mu guards pidfd, stdin and console.
	mu sync.Mutex
	// pidfd signals the process without pid-reuse races; -1 once it
	// exited (or when pidfd_open failed).
	pidfd int
	// stdin is the pipe's write end, or a dup of the pty master; nil
	// when not requested or closed.
	stdin *os.File
	// console is the pty master (tty only), kept for resizing.
	console *os.File

	// exited is closed once the fields below are set.
	exited    chan struct{}
	exitCode  int32
	exitedAt  time.Time
	oomKilled bool
	// startError: the init's exec failed, and why (exitCode is then
	// startErrorExitCode).
	startError string
}

// startErrorExitCode is an init's exit code when its exec failed, as
// containerd reports a start that failed.
const startErrorExitCode = 128

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// stdio is the agent's side of a new process's stdio, and the child's
// ends, which the caller closes once the child started. A tty process
// has none: launch hands back its pty master.
type stdio struct {
	child [3]*os.File // nil entries are /dev/null
	stdin *os.File
	outR  *os.File
	errR  *os.File
}

// newStdio makes pipes for a process (none for a tty).
func newStdio(tty, wantStdin bool) (*stdio, error) {
	io := &stdio{}
	if tty {
		return io, nil
	}
	var err error
	fail := func(err error) (*stdio, error) {
		io.closeAll()
		return nil, fmt.Errorf("creating stdio pipes: %w", err)
	}
	if wantStdin {
		if io.child[0], io.stdin, err = os.Pipe(); err != nil {
			return fail(err)
		}
	}
	if io.outR, io.child[1], err = os.Pipe(); err != nil {
		return fail(err)
	}
	if io.errR, io.child[2], err = os.Pipe(); err != nil {
		return fail(err)
	}
	return io, nil
}

func (io *stdio) closeChild() {
	closeAll(io.child[:]...)
	io.child = [3]*os.File{}
}

func (io *stdio) closeAll() {
	io.closeChild()
	closeAll(io.stdin, io.outR, io.errR)
}

// attach starts the stdio pumps of p from io, or from master (the pty
// master of a tty process), once p was spawned.
func (io *stdio) attach(p *process, wantStdin bool, master *os.File) error {
	p.stdout = newOutputBuffer(OutputBufferSize)
	p.stderr = newOutputBuffer(OutputBufferSize)
	if master == nil {
		p.stdin = io.stdin
		go pump(io.outR, p.stdout)
		go pump(io.errR, p.stderr)
		return nil
	}
	fd, err := unix.Dup(int(master.Fd()))
	if err != nil {
		master.Close()
		return fmt.Errorf("duplicating the console: %w", err)
	}
	p.console = master
	if wantStdin {
		p.stdin = master
	}
	p.stderr.Close()
	go pump(os.NewFile(uintptr(fd), "console"), p.stdout)
	return nil
}

// watch records p's exit once its status arrives on ch. For an init, c's
// cgroup tells whether the kernel OOM-killed anything in it.
func (s *Service) watch(c *container, p *process, ch <-chan unix.WaitStatus, isInit bool) {
	if fd, err := unix.PidfdOpen(p.pid, 0); err == nil {
		p.pidfd = fd
	}
	go func() {
		ws := <-ch
		p.mu.Lock()
		if p.pidfd >= 0 {
			unix.Close(p.pidfd)
			p.pidfd = -1
		}
		p.mu.Unlock()
		p.exitCode = exitCode(ws)
		p.exitedAt = time.Now()
		if isInit {
			// The init died, so its sync pipe is at EOF: execed closes.
			if execed := c.execedChan(); execed != nil {
				<-execed
				if err := c.child.ExecErr(); err != nil {
					p.startError = err.Error()
					p.exitCode = startErrorExitCode
				}
			}
		}
		if isInit && c.cgroup != "" {
			if n, err := oomKills(c.cgroup); err == nil && n > c.oomBase {
				p.oomKilled = true
			}
		}
		close(p.exited)
	}()
}

// signal sends sig to p unless it exited.
func (p *process) signal(sig unix.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		if p.hasExited() {
			return nil
		}
		// No pidfd (pidfd_open failed): the process has not been reaped
		// yet, so its pid is still its own.
		return unix.Kill(p.pid, sig)
	}
	err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

func (p *process) closeStdio() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin != nil && p.stdin != p.console {
		p.stdin.Close()
	}
	p.stdin = nil
	if p.console != nil {
		p.console.Close()
		p.console = nil
	}
}

func (s *Service) lookup(id string) (*container, error) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	c, ok := s.containers[id]
	if !ok || c.init == nil {
		return nil, errdefs.NotFound("container %s not found", id)
	}
	return c, nil
}

func (s *Service) lookupProcess(id, execID string) (*container, *process, error) {
	c, err := s.lookup(id)
	if err != nil {
		return nil, nil, err
	}
	if execID == "" {
		return c, c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok || p == nil {
		return nil, nil, errdefs.NotFound("process %s of container %s not found", execID, id)
	}
	return c, p, nil
}

// CreateContainer sets the container up (cgroup, namespaces, rootfs) and
// leaves its init waiting for StartContainer.
func (s *Service) CreateContainer(ctx context.Context, req *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	id := req.ContainerId
	if !idPattern.MatchString(id) {
		return nil, errdefs.InvalidArgument("creating container: bad container id %q", id)
	}
	var spec specs.Spec
	if err := json.Unmarshal(req.OciSpec, &spec); err != nil {
		return nil, errdefs.InvalidArgument("creating container %s: parsing the OCI spec: %w", id, err)
	}
	if spec.Process == nil || spec.Root == nil || spec.Root.Path == "" || spec.Linux == nil || spec.Linux.CgroupsPath == "" {
		return nil, errdefs.InvalidArgument("creating container %s: the spec has no process, root or cgroups path", id)
	}
	tty := req.Tty || spec.Process.Terminal
	spec.Process.Terminal = tty
	// The guest loads no LSM policy: the VM is the boundary.
	spec.Process.ApparmorProfile = ""
	spec.Process.SelinuxLabel = ""

	s.cmu.Lock()
	if _, ok := s.containers[id]; ok {
		s.cmu.Unlock()
		return nil, errdefs.AlreadyExists("creating container %s: it exists", id)
	}
	// A reservation (init == nil) keeps a concurrent create of the same
	// id out; lookup ignores it.
	c := &container{id: id, spec: &spec, execs: map[string]*process{}}
	s.containers[id] = c
	s.cmu.Unlock()
	ok := false
	defer func() {
		if !ok {
			s.cmu.Lock()
			delete(s.containers, id)
			s.cmu.Unlock()
			if s.oom != nil {
				s.oom.remove(id)
			}
			if c.cgroup != "" {
				launch.RemoveCgroup(c.cgroup, 5*time.Second)
			}
		}
	}()

	if err := s.resolveTargetPID(&spec); err != nil {
		return nil, fmt.Errorf("creating container %s: %w", id, err)
	}
	if joinsNamespace(&spec, specs.PIDNamespace, agentproxy.GuestPIDNamespace) {
		if err := s.ensurePIDHolder(ctx); err != nil {
			return nil, fmt.Errorf("creating container %s: %w", id, err)
		}
	}
	flags, join, err := launch.SpecNamespaces(spec.Linux.Namespaces)
	if err != nil {
		return nil, fmt.Errorf("creating container %s: %w", id, err)
	}
	start := time.Now()
	if c.cgroup, err = launch.CreateCgroup(spec.Linux.CgroupsPath, spec.Linux.Resources); err != nil {
		return nil, errdefs.FailedPrecondition("creating container %s: %w", id, err)
	}
	cgroupTook := time.Since(start)
	io, err := newStdio(tty, req.Stdin)
	if err != nil {
		return nil, fmt.Errorf("creating container %s: %w", id, err)
	}
	child, err := launch.Spawn(launch.Options{
		Config:     launch.Config{Mode: launch.ModeCreate, Spec: &spec, Process: spec.Process, Console: tty},
		Cloneflags: flags,
		Join:       join,
		CgroupDir:  c.cgroup,
		Stdio:      io.child,
		Start:      s.reaper.Start,
	})
	io.closeChild()
	if err != nil {
		io.closeAll()
		return nil, fmt.Errorf("creating container %s: %w", id, err)
	}
	c.child = child
	p := &process{pid: child.Pid, pidfd: -1, tty: tty, exited: make(chan struct{})}
	if c.oomBase, err = oomKills(c.cgroup); err != nil {
		log.G(ctx).Debug("reading oom_kill", "id", id, "error", err)
	} else if s.oom != nil {
		if err := s.oom.add(id, c.cgroup, c.oomBase); err != nil {
			log.G(ctx).Warn("OOM kills of this container will not be reported as events", "id", id, "error", err)
		}
	}
	s.watch(c, p, child.Exited, true)
	if err := io.attach(p, req.Stdin, child.Console); err != nil {
		io.closeAll()
		child.Abort()
		return nil, fmt.Errorf("creating container %s: %w", id, err)
	}
	s.cmu.Lock()
	c.init = p
	s.cmu.Unlock()
	ok = true
	log.G(ctx).Debug("container created", "id", id, "pid", p.pid, "tty", tty, "elapsed", time.Since(start))
	phases := []*api.Phase{{Name: "cgroup", Ms: float64(cgroupTook.Microseconds()) / 1000}}
	for _, ph := range child.Phases {
		phases = append(phases, &api.Phase{Name: ph.Name, Ms: ph.Ms})
	}
	return &api.CreateContainerResponse{Pid: uint32(p.pid), Phases: phases}, nil
}

func (c *container) execedChan() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.child.Execed()
}

// waitExeced waits until a started init's exec succeeded or failed, so
// that what runs in the container is its program, not the init still
// setting it up.
func (c *container) waitExeced(ctx context.Context) error {
	execed := c.execedChan()
	if execed == nil {
		return nil
	}
	select {
	case <-execed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// resolveTargetPID replaces a PID namespace path naming another container
// (agentproxy.GuestContainerPIDNamespace) by its init's namespace. The
// target is one of the pod's containers, created by this agent, whose init
// has not exited.
func (s *Service) resolveTargetPID(spec *specs.Spec) error {
	for i, n := range spec.Linux.Namespaces {
		target, ok := strings.CutPrefix(n.Path, agentproxy.GuestContainerPIDPrefix)
		if n.Type != specs.PIDNamespace || !ok {
			continue
		}
		if !idPattern.MatchString(target) {
			return errdefs.InvalidArgument("the PID namespace's target container %q: bad id", target)
		}
		c, err := s.lookup(target)
		if err != nil {
			return fmt.Errorf("the PID namespace's target: %w", err)
		}
		select {
		case <-c.init.exited:
			return errdefs.FailedPrecondition("the PID namespace's target container %s is not running", target)
		default:
		}
		spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/pid", c.init.pid)
	}
	return nil
}

func joinsNamespace(s *specs.Spec, t specs.LinuxNamespaceType, path string) bool {
	if s.Linux == nil {
		return false
	}
	return slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == t && n.Path == path })
}

// StartContainer lets the created container's init exec its program. It
// does not wait for the exec, as runc start does not: the init checked
// before CreateContainer returned that the program exists and is
// executable, and an exec that fails all the same ends the init with a
// start error (WaitProcess). Waiting would keep the exec of the program,
// read over the share, on every pod start's path.
func (s *Service) StartContainer(ctx context.Context, req *api.StartContainerRequest) (*api.StartContainerResponse, error) {
	c, err := s.lookup(req.ContainerId)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return nil, errdefs.FailedPrecondition("starting container %s: already started", c.id)
	}
	if c.init.hasExited() {
		return nil, errdefs.FailedPrecondition("starting container %s: its process exited before the start", c.id)
	}
	err = c.child.Release()
	c.started = true
	if err != nil {
		return nil, fmt.Errorf("starting container %s: %w", c.id, err)
	}
	return &api.StartContainerResponse{Pid: uint32(c.init.pid)}, nil
}

// DeleteContainer kills and removes the container and drops its state.
func (s *Service) DeleteContainer(ctx context.Context, req *api.DeleteContainerRequest) (*api.DeleteContainerResponse, error) {
	s.cmu.Lock()
	c, ok := s.containers[req.ContainerId]
	if ok && c.init == nil {
		s.cmu.Unlock()
		return nil, errdefs.FailedPrecondition("deleting container %s: it is being created", req.ContainerId)
	}
	s.cmu.Unlock()
	if !ok {
		return &api.DeleteContainerResponse{}, nil
	}
	if err := s.deleteContainer(ctx, c); err != nil {
		return nil, err
	}
	return &api.DeleteContainerResponse{}, nil
}

func (s *Service) deleteContainer(ctx context.Context, c *container) error {
	c.mu.Lock()
	if !c.started {
		c.child.Abort()
	}
	c.mu.Unlock()
	c.init.signal(unix.SIGKILL)
	if s.oom != nil {
		s.oom.remove(c.id)
	}
	if err := launch.RemoveCgroup(c.cgroup, 10*time.Second); err != nil {
		return fmt.Errorf("deleting container %s: %w", c.id, err)
	}
	c.mu.Lock()
	execs := c.execs
	c.execs = map[string]*process{}
	c.mu.Unlock()
	for _, p := range execs {
		p.signal(unix.SIGKILL)
		p.closeStdio()
	}
	c.init.closeStdio()
	s.cmu.Lock()
	if s.containers[c.id] == c {
		delete(s.containers, c.id)
	}
	s.cmu.Unlock()
	log.G(ctx).Debug("container deleted", "id", c.id)
	return nil
}

// deleteAll deletes every container, for DestroySandbox and shutdown.
func (s *Service) deleteAll(ctx context.Context) error {
	s.cmu.Lock()
	var cs []*container
	for _, c := range s.containers {
		if c.init != nil {
			cs = append(cs, c)
		}
	}
	s.cmu.Unlock()
	var errs []error
	for _, c := range cs {
		errs = append(errs, s.deleteContainer(ctx, c))
	}
	return errors.Join(errs...)
}

// UpdateContainer writes new resources into the container's cgroup.
func (s *Service) UpdateContainer(ctx context.Context, req *api.UpdateContainerRequest) (*api.UpdateContainerResponse, error) {
	c, err := s.lookup(req.ContainerId)
	if err != nil {
		return nil, err
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(req.Resources, &res); err != nil {
		return nil, errdefs.InvalidArgument("updating container %s: parsing resources: %w", c.id, err)
	}
	if err := launch.UpdateCgroup(c.cgroup, &res); err != nil {
		return nil, errdefs.InvalidArgument("updating container %s: %w", c.id, err)
	}
	return &api.UpdateContainerResponse{}, nil
}

// WaitProcess blocks until the process exited.
func (s *Service) WaitProcess(ctx context.Context, req *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	_, p, err := s.lookupProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &api.WaitProcessResponse{ExitCode: p.exitCode, OomKilled: p.oomKilled, ExitedAtUnixNano: p.exitedAt.UnixNano(), StartError: p.startError}, nil
}

// SignalProcess signals a process, or with all every process of the
// container's cgroup.
func (s *Service) SignalProcess(ctx context.Context, req *api.SignalProcessRequest) (*api.SignalProcessResponse, error) {
	sig := unix.Signal(req.Signal)
	if req.Signal == 0 || req.Signal > 64 {
		return nil, errdefs.InvalidArgument("signalling: bad signal %d", req.Signal)
	}
	c, p, err := s.lookupProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if req.All {
		if req.ExecId != "" {
			return nil, errdefs.InvalidArgument("signalling: all is for the container, not exec %s", req.ExecId)
		}
		if p.hasExited() {
			return &api.SignalProcessResponse{}, nil
		}
		if err := launch.SignalCgroup(c.cgroup, sig); err != nil {
			return nil, fmt.Errorf("signalling container %s: %w", c.id, err)
		}
		return &api.SignalProcessResponse{}, nil
	}
	if err := p.signal(sig); err != nil {
		return nil, fmt.Errorf("signalling process %d of container %s: %w", p.pid, c.id, err)
	}
	return &api.SignalProcessResponse{}, nil
}

// ReadOutput returns the next chunk of a process's stream.
func (s *Service) ReadOutput(ctx context.Context, req *api.ReadOutputRequest) (*api.ReadOutputResponse, error) {
	_, p, err := s.lookupProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	b := p.stdout
	switch req.Stream {
	case api.Stream_STDOUT:
	case api.Stream_STDERR:
		b = p.stderr
	default:
		return nil, errdefs.InvalidArgument("reading output: unknown stream %v", req.Stream)
	}
	ch, err := b.Read(ctx, req.Offset, int(req.MaxBytes), time.Duration(req.WaitMs)*time.Millisecond)
	if err != nil {
		return nil, err
	}
	return &api.ReadOutputResponse{Data: ch.data, Offset: ch.offset, Dropped: ch.dropped, Eof: ch.eof}, nil
}

// WriteStdin writes to a process's stdin.
func (s *Service) WriteStdin(ctx context.Context, req *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	_, p, err := s.lookupProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	w := p.stdin
	p.mu.Unlock()
	if w == nil {
		return nil, errdefs.FailedPrecondition("writing stdin: the process has no open stdin")
	}
	// A deadline keeps a process that never reads from wedging the call.
	if d, ok := ctx.Deadline(); ok {
		w.SetWriteDeadline(d)
	} else {
		w.SetWriteDeadline(time.Time{})
	}
	n, err := w.Write(req.Data)
	if err != nil {
		return &api.WriteStdinResponse{Written: uint32(n)}, fmt.Errorf("writing stdin: %w", err)
	}
	return &api.WriteStdinResponse{Written: uint32(n)}, nil
}

// CloseStdin closes a process's stdin; for a tty it sends EOF (^D).
func (s *Service) CloseStdin(ctx context.Context, req *api.CloseStdinRequest) (*api.CloseStdinResponse, error) {
	_, p, err := s.lookupProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin == nil {
		return &api.CloseStdinResponse{}, nil
	}
	if p.stdin == p.console {
		p.stdin.Write([]byte{4})
	} else {
		p.stdin.Close()
	}
	p.stdin = nil
	return &api.CloseStdinResponse{}, nil
}

// ResizeTerminal sets a tty process's window size.
func (s *Service) ResizeTerminal(ctx context.Context, req *api.ResizeTerminalRequest) (*api.ResizeTerminalResponse, error) {
	_, p, err := s.lookupProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.console == nil {
		return nil, errdefs.FailedPrecondition("resizing: the process has no terminal")
	}
	ws := &unix.Winsize{Col: uint16(req.Width), Row: uint16(req.Height)}
	if err := unix.IoctlSetWinsize(int(p.console.Fd()), unix.TIOCSWINSZ, ws); err != nil {
		return nil, fmt.Errorf("resizing the terminal: %w", err)
	}
	return &api.ResizeTerminalResponse{}, nil
}
