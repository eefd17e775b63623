// Package agent is the guest side of crivm: PID 1 set-up of the guest
// (pseudo filesystems, kernel modules, power button) and the Agent ttrpc
// service crivm calls through agentproxy.
package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/version"
)

// MaxExecOutput is how much of each of stdout and stderr ExecProcess
// returns; the rest is read and dropped.
const MaxExecOutput = 1 << 20

// Service implements the Agent API.
type Service struct {
	reaper *Reaper
	// etcDir is where resolv.conf, hostname and hosts are written.
	etcDir string

	// mu guards sandbox.
	mu      sync.Mutex
	sandbox *sandboxState
}

type sandboxState struct {
	id     string
	mounts []string // mount points, in mount order
}

var _ api.AgentService = (*Service)(nil)

// NewService returns the service; reaper must be running.
func NewService(reaper *Reaper) *Service {
	return &Service{reaper: reaper, etcDir: "/etc"}
}

// Health reports that the agent serves, with the guest's kernel release
// and uptime.
func (s *Service) Health(ctx context.Context, _ *api.HealthRequest) (*api.HealthResponse, error) {
	var u unix.Utsname
	_ = unix.Uname(&u)
	r := &api.HealthResponse{
		Status:        api.HealthResponse_SERVING,
		AgentVersion:  version.Version,
		KernelRelease: unix.ByteSliceToString(u.Release[:]),
	}
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			r.UptimeSeconds, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return r, nil
}

// CreateSandbox sets the hostname, writes resolv.conf, hostname and hosts,
// and mounts the shared directories. On failure what it mounted is
// unmounted again.
func (s *Service) CreateSandbox(ctx context.Context, req *api.CreateSandboxRequest) (*api.CreateSandboxResponse, error) {
	if req.SandboxId == "" {
		return nil, errdefs.InvalidArgument("creating sandbox: no sandbox id")
	}
	for _, m := range req.Mounts {
		if m.Tag == "" || !filepath.IsAbs(m.MountPoint) || filepath.Clean(m.MountPoint) == "/" {
			return nil, errdefs.InvalidArgument("creating sandbox: shared mount needs a tag and an absolute mount point other than / (got tag %q, mount point %q)", m.Tag, m.MountPoint)
		}
		if m.FsType != "" && m.FsType != "9p" {
			return nil, errdefs.Unimplemented("creating sandbox: shared fs type %q is not supported yet (only 9p)", m.FsType)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sandbox != nil {
		return nil, errdefs.AlreadyExists("creating sandbox %s: the guest already runs sandbox %s", req.SandboxId, s.sandbox.id)
	}
	if req.Hostname != "" {
		if err := unix.Sethostname([]byte(req.Hostname)); err != nil {
			return nil, fmt.Errorf("setting hostname: %w", err)
		}
	}
	if err := s.writeEtc(req); err != nil {
		return nil, fmt.Errorf("creating sandbox: %w", err)
	}
	st := &sandboxState{id: req.SandboxId}
	for _, m := range req.Mounts {
		if err := mount9p(m); err != nil {
			unmountAll(ctx, st.mounts)
			return nil, fmt.Errorf("creating sandbox: %w", err)
		}
		st.mounts = append(st.mounts, filepath.Clean(m.MountPoint))
	}
	s.sandbox = st
	log.G(ctx).Info("sandbox created", "id", req.SandboxId, "mounts", len(st.mounts))
	return &api.CreateSandboxResponse{}, nil
}

func (s *Service) writeEtc(req *api.CreateSandboxRequest) error {
	var rc bytes.Buffer
	if d := req.Dns; d != nil {
		for _, ns := range d.Servers {
			fmt.Fprintf(&rc, "nameserver %s\n", ns)
		}
		if len(d.Searches) > 0 {
			fmt.Fprintf(&rc, "search %s\n", strings.Join(d.Searches, " "))
		}
		if len(d.Options) > 0 {
			fmt.Fprintf(&rc, "options %s\n", strings.Join(d.Options, " "))
		}
	}
	host := req.Hostname
	if host == "" {
		host = "crivm"
	}
	files := map[string]string{
		"resolv.conf": rc.String(),
		"hostname":    host + "\n",
		"hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + host + "\n",
	}
	if err := os.MkdirAll(s.etcDir, 0o755); err != nil {
		return err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(s.etcDir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

func mount9p(m *api.SharedMount) error {
	if err := os.MkdirAll(m.MountPoint, 0o755); err != nil {
		return fmt.Errorf("creating mount point %s: %w", m.MountPoint, err)
	}
	flags := uintptr(unix.MS_NODEV | unix.MS_NOSUID)
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	// msize 512 KiB: fewer round trips per read than the 8 KiB default,
	// which matters when every guest exit is emulated.
	if err := unix.Mount(m.Tag, m.MountPoint, "9p", flags, "trans=virtio,version=9p2000.L,msize=524288"); err != nil {
		return fmt.Errorf("mounting 9p tag %s on %s: %w", m.Tag, m.MountPoint, err)
	}
	return nil
}

func unmountAll(ctx context.Context, mounts []string) error {
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			log.G(ctx).Warn("unmounting", "target", mounts[i], "error", err)
			errs = append(errs, fmt.Errorf("unmounting %s: %w", mounts[i], err))
		}
	}
	return errors.Join(errs...)
}

// DestroySandbox unmounts the shared directories. It is a no-op when no
// sandbox (or another one) exists.
func (s *Service) DestroySandbox(ctx context.Context, req *api.DestroySandboxRequest) (*api.DestroySandboxResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sandbox == nil || (req.SandboxId != "" && req.SandboxId != s.sandbox.id) {
		return &api.DestroySandboxResponse{}, nil
	}
	if err := unmountAll(ctx, s.sandbox.mounts); err != nil {
		return nil, fmt.Errorf("destroying sandbox %s: %w", s.sandbox.id, err)
	}
	s.sandbox = nil
	return &api.DestroySandboxResponse{}, nil
}

// Shutdown unmounts what the sandbox mounted, for a clean power-off.
func (s *Service) Shutdown(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sandbox != nil {
		unmountAll(ctx, s.sandbox.mounts)
		s.sandbox = nil
	}
}

func (s *Service) CreateContainer(context.Context, *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	return nil, errdefs.Unimplemented("CreateContainer is not implemented by this agent yet")
}

func (s *Service) StartContainer(context.Context, *api.StartContainerRequest) (*api.StartContainerResponse, error) {
	return nil, errdefs.Unimplemented("StartContainer is not implemented by this agent yet")
}

func (s *Service) WaitProcess(context.Context, *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	return nil, errdefs.Unimplemented("WaitProcess is not implemented by this agent yet")
}

func (s *Service) SignalProcess(context.Context, *api.SignalProcessRequest) (*api.SignalProcessResponse, error) {
	return nil, errdefs.Unimplemented("SignalProcess is not implemented by this agent yet")
}

// ExecProcess runs args in the guest, in a new process group, and returns
// once it has exited and its output is drained. It is killed (the whole
// group) when timeout_ms or ctx passes.
func (s *Service) ExecProcess(ctx context.Context, req *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	if len(req.Args) == 0 || req.Args[0] == "" {
		return nil, errdefs.InvalidArgument("exec: no command")
	}
	env := req.Env
	if len(env) == 0 {
		env = []string{"PATH=" + GuestPath}
	}
	path, err := lookPath(req.Args[0], env)
	if err != nil {
		return nil, errdefs.InvalidArgument("exec: %w", err)
	}
	if req.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
		defer cancel()
	}

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		return nil, fmt.Errorf("exec: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("exec: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        req.Args,
		Env:         env,
		Dir:         req.Cwd,
		Stdin:       stdinR,
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: &unix.SysProcAttr{Setpgid: true},
	}
	waitCh, err := s.reaper.Start(cmd)
	// The child holds its own copies; the parent's ends must go so that
	// the readers see EOF when the child (and its children) exit.
	stdinR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		stdinW.Close()
		outR.Close()
		errR.Close()
		return nil, errdefs.InvalidArgument("exec %s: %w", req.Args[0], err)
	}
	defer cmd.Process.Release()
	pid := cmd.Process.Pid

	go func() {
		stdinW.Write(req.Stdin)
		stdinW.Close()
	}()
	var stdout, stderr cappedBuffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&stdout, outR) }()
	go func() { defer wg.Done(); io.Copy(&stderr, errR) }()

	resp := &api.ExecProcessResponse{}
	var ws unix.WaitStatus
	select {
	case ws = <-waitCh:
	case <-ctx.Done():
		unix.Kill(-pid, unix.SIGKILL)
		ws = <-waitCh
		resp.TimedOut = true
	}
	// A daemon the command left behind may hold the pipes open; take what
	// arrived shortly after the exit and move on.
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(time.Second):
		outR.SetReadDeadline(time.Unix(1, 0))
		errR.SetReadDeadline(time.Unix(1, 0))
		<-drained
	}
	outR.Close()
	errR.Close()
	resp.ExitCode = exitCode(ws)
	resp.Stdout, resp.StdoutTruncated = stdout.b.Bytes(), stdout.dropped
	resp.Stderr, resp.StderrTruncated = stderr.b.Bytes(), stderr.dropped
	return resp, nil
}

// lookPath resolves name against the PATH in env.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	pathEnv := GuestPath
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %s", name, pathEnv)
}

// cappedBuffer keeps the first MaxExecOutput bytes and counts the rest as
// dropped.
type cappedBuffer struct {
	b       bytes.Buffer
	dropped bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := MaxExecOutput - c.b.Len(); room < len(p) {
		c.dropped = true
		c.b.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return c.b.Write(p)
}
