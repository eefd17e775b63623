package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// execProcessFile writes the process of an exec into the container's
// bundle and returns its path, which the caller removes. The process is
// raw when set, else the container's own with args replaced, env appended
// and cwd replaced when not empty.
func execProcessFile(c *container, raw []byte, args, env []string, cwd string, tty bool) (string, error) {
	var p specs.Process
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return "", errdefs.InvalidArgument("parsing the process: %w", err)
		}
		if len(p.Args) == 0 {
			return "", errdefs.InvalidArgument("the process has no args")
		}
	} else {
		if len(args) == 0 || args[0] == "" {
			return "", errdefs.InvalidArgument("no command")
		}
		p = *c.spec.Process
		p.Args = args
		p.Env = append(append([]string(nil), p.Env...), env...)
		if cwd != "" {
			p.Cwd = cwd
		}
		p.Terminal = tty
		p.ConsoleSize = nil
	}
	p.ApparmorProfile = ""
	p.SelinuxLabel = ""
	f, err := os.CreateTemp(c.bundle, "exec-*.json")
	if err != nil {
		return "", fmt.Errorf("writing the exec process: %w", err)
	}
	defer f.Close()
	if err := json.NewEncoder(f).Encode(&p); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("writing the exec process: %w", err)
	}
	return f.Name(), nil
}

// runningInit fails unless c's init was started and still runs.
func runningInit(c *container) error {
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if !started || c.init.hasExited() {
		return errdefs.FailedPrecondition("container %s is not running", c.id)
	}
	return nil
}

// execInContainer is ExecProcess with a container: `runc exec` attached,
// so runc's exit status is the process's. On timeout the process (from
// the pid file) and runc are killed.
func (s *Service) execInContainer(ctx context.Context, req *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	c, err := s.lookup(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := runningInit(c); err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	pf, err := execProcessFile(c, nil, req.Args, req.Env, req.Cwd, false)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.id, err)
	}
	defer os.Remove(pf)
	pidFile := pf + ".pid"
	defer os.Remove(pidFile)
	cmd, err := runcCmd("", "exec", "--process", pf, "--pid-file", pidFile, c.id)
	if err != nil {
		return nil, err
	}
	r, err := s.runCollect(ctx, cmd, req.Stdin, func() {
		if pid, err := readPid(pidFile); err == nil {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.id, err)
	}
	return r, nil
}

// StartProcess starts an exec'd process (`runc exec -d`) whose stdio the
// agent keeps, like an init's.
func (s *Service) StartProcess(ctx context.Context, req *api.StartProcessRequest) (*api.StartProcessResponse, error) {
	if !idPattern.MatchString(req.ExecId) {
		return nil, errdefs.InvalidArgument("starting process: bad exec id %q", req.ExecId)
	}
	c, err := s.lookup(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := runningInit(c); err != nil {
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
	pf, err := execProcessFile(c, req.Process, req.Args, req.Env, "", tty)
	if err != nil {
		return nil, fmt.Errorf("starting process %s in %s: %w", req.ExecId, c.id, err)
	}
	defer os.Remove(pf)
	pidFile := pf + ".pid"
	defer os.Remove(pidFile)
	io, err := newStdio(tty, req.Stdin)
	if err != nil {
		return nil, fmt.Errorf("starting process %s in %s: %w", req.ExecId, c.id, err)
	}
	args := []string{"exec", "-d", "--process", pf, "--pid-file", pidFile}
	if tty {
		args = append(args, "--console-socket", io.console.path)
	}
	logFile := filepath.Join(c.bundle, "runc.log")
	cmd, err := runcCmd(logFile, append(args, c.id)...)
	if err != nil {
		io.closeAll()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = io.child[0], io.child[1], io.child[2]
	cctx, cancel := context.WithTimeout(ctx, runcTimeout)
	defer cancel()
	ws, err := s.runWait(cctx, cmd)
	io.closeChild()
	if err != nil || exitCode(ws) != 0 {
		io.closeAll()
		if err != nil {
			return nil, fmt.Errorf("starting process %s in %s: running runc exec: %w", req.ExecId, c.id, err)
		}
		return nil, errdefs.FailedPrecondition("starting process %s in %s: runc exec: exit %d: %s", req.ExecId, c.id, exitCode(ws), lastLogError(logFile))
	}
	pid, err := readPid(pidFile)
	if err != nil {
		io.closeAll()
		return nil, fmt.Errorf("starting process %s in %s: %w", req.ExecId, c.id, err)
	}
	p := &process{execID: req.ExecId, pid: pid, pidfd: -1, tty: tty, exited: make(chan struct{})}
	s.watch(c, p, false)
	if err := io.attach(p, req.Stdin); err != nil {
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
