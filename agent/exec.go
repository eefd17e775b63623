package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agent/launch"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/envlist"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// execProcess is the process of an exec: raw when set, else the
// container's own with args replaced, env appended and cwd replaced when
// not empty. With a terminal, TERM is xterm, as containerd sets it for
// exec (whatever TERM the container has).
func execProcess(c *container, raw []byte, args, env []string, cwd string, tty bool) (*specs.Process, error) {
	var p specs.Process
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, errdefs.InvalidArgument("parsing the process: %w", err)
		}
		if len(p.Args) == 0 {
			return nil, errdefs.InvalidArgument("the process has no args")
		}
	} else {
		if len(args) == 0 || args[0] == "" {
			return nil, errdefs.InvalidArgument("no command")
		}
		p = *c.spec.Process
		p.Args = args
		base := p.Env
		if tty {
			base = envlist.Set(base, "TERM=xterm")
		}
		p.Env = append(append([]string(nil), base...), env...)
		if cwd != "" {
			p.Cwd = cwd
		}
		p.Terminal = tty
		p.ConsoleSize = nil
	}
	p.ApparmorProfile = ""
	p.SelinuxLabel = ""
	return &p, nil
}

// spawnExec starts p in c's namespaces and cgroup with the given stdio
// (or a pty when p.Terminal).
func (s *Service) spawnExec(c *container, p *specs.Process, stdio [3]*os.File) (*launch.Child, error) {
	join, err := launch.ProcessNamespaces(c.init.pid)
	if err != nil {
		return nil, errdefs.FailedPrecondition("entering container %s: %w", c.id, err)
	}
	return launch.Spawn(launch.Options{
		Config:    launch.Config{Mode: launch.ModeExec, Spec: c.spec, Process: p, Console: p.Terminal},
		Join:      join,
		CgroupDir: c.cgroup,
		Stdio:     stdio,
		Start:     s.reaper.Start,
	})
}

// runningInit fails unless c's init was started and still runs its
// program (it waits for the init's exec).
func runningInit(ctx context.Context, c *container) error {
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if started {
		if err := c.waitExeced(ctx); err != nil {
			return err
		}
	}
	if !started || c.init.hasExited() || c.child.ExecErr() != nil {
		return errdefs.FailedPrecondition("container %s is not running", c.id)
	}
	return nil
}

// execInContainer is ExecProcess with a container. On timeout the
// process is killed.
func (s *Service) execInContainer(ctx context.Context, req *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	c, err := s.lookup(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := runningInit(ctx, c); err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	p, err := execProcess(c, nil, req.Args, req.Env, req.Cwd, false)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.id, err)
	}
	r, err := s.runCollect(ctx, func(stdio [3]*os.File) (int, <-chan unix.WaitStatus, error) {
		child, err := s.spawnExec(c, p, stdio)
		if err != nil {
			return 0, nil, err
		}
		return child.Pid, child.Exited, nil
	}, req.Stdin, nil)
	var se *startError
	if errors.As(err, &se) && errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
		// The command cannot run (not found, not executable): say so as
		// an exit status, as runc exec did.
		return &api.ExecProcessResponse{ExitCode: 127, Stderr: []byte(err.Error() + "\n")}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.id, err)
	}
	return r, nil
}

// StartProcess starts an exec'd process whose stdio the agent keeps,
// like an init's.
func (s *Service) StartProcess(ctx context.Context, req *api.StartProcessRequest) (*api.StartProcessResponse, error) {
	if !idPattern.MatchString(req.ExecId) {
		return nil, errdefs.InvalidArgument("starting process: bad exec id %q", req.ExecId)
	}
	c, err := s.lookup(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := runningInit(ctx, c); err != nil {
		return nil, fmt.Errorf("starting process %s: %w", req.ExecId, err)
	}
	c.mu.Lock()
	if _, ok := c.execs[req.ExecId]; ok {
		c.mu.Unlock()
		return nil, errdefs.AlreadyExists("starting process %s in %s: it exists", req.ExecId, c.id)
	}
	// Reserved until started; lookups of a nil process fail.
	c.execs[req.ExecId] = nil
	c.mu.Unlock()
	ok := false
	defer func() {
		if !ok {
			c.mu.Lock()
			delete(c.execs, req.ExecId)
			c.mu.Unlock()
		}
	}()

	tty := req.Tty
	if len(req.Process) > 0 {
		var p specs.Process
		if err := json.Unmarshal(req.Process, &p); err == nil {
			tty = p.Terminal
		}
	}
	proc, err := execProcess(c, req.Process, req.Args, req.Env, "", tty)
	if err != nil {
		return nil, fmt.Errorf("starting process %s in %s: %w", req.ExecId, c.id, err)
	}
	proc.Terminal = tty
	io, err := newStdio(tty, req.Stdin)
	if err != nil {
		return nil, fmt.Errorf("starting process %s in %s: %w", req.ExecId, c.id, err)
	}
	child, err := s.spawnExec(c, proc, io.child)
	io.closeChild()
	if err != nil {
		io.closeAll()
		return nil, fmt.Errorf("starting process %s in %s: %w", req.ExecId, c.id, err)
	}
	pid := child.Pid
	p := &process{execID: req.ExecId, pid: pid, pidfd: -1, tty: tty, exited: make(chan struct{})}
	s.watch(c, p, child.Exited, false)
	if err := io.attach(p, req.Stdin, child.Console); err != nil {
		io.closeAll()
		p.signal(unix.SIGKILL)
		return nil, fmt.Errorf("starting process %s in %s: %w", req.ExecId, c.id, err)
	}
	c.mu.Lock()
	c.execs[req.ExecId] = p
	c.mu.Unlock()
	ok = true
	log.G(ctx).Debug("process started", "id", c.id, "exec", req.ExecId, "pid", pid)
	return &api.StartProcessResponse{Pid: uint32(pid)}, nil
}

// DeleteProcess kills an exec'd process if it runs and drops it.
func (s *Service) DeleteProcess(ctx context.Context, req *api.DeleteProcessRequest) (*api.DeleteProcessResponse, error) {
	if req.ExecId == "" {
		return nil, errdefs.InvalidArgument("deleting process: no exec id (delete the container instead)")
	}
	c, err := s.lookup(req.ContainerId)
	if errdefs.IsClass(err, errdefs.ErrNotFound) {
		return &api.DeleteProcessResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	p, ok := c.execs[req.ExecId]
	if ok && p == nil {
		c.mu.Unlock()
		return nil, errdefs.FailedPrecondition("deleting process %s: it is being started", req.ExecId)
	}
	delete(c.execs, req.ExecId)
	c.mu.Unlock()
	if !ok {
		return &api.DeleteProcessResponse{}, nil
	}
	p.signal(unix.SIGKILL)
	p.closeStdio()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		log.G(ctx).Warn("exec'd process outlived SIGKILL", "id", c.id, "exec", req.ExecId, "pid", p.pid)
	case <-ctx.Done():
	}
	return &api.DeleteProcessResponse{}, nil
}
