package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agent/launch"
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

	// mu guards sandbox and pidHolder.
	mu        sync.Mutex
	sandbox   *sandboxState
	pidHolder *pidHolder

	// cmu guards containers. A container with a nil init is being
	// created.
	cmu        sync.Mutex
	containers map[string]*container

	// oom watches the containers' cgroups for GetOOMEvent; nil when
	// inotify is unavailable.
	oom *oomWatcher

	// guestExec lets ExecProcess without a container run as guest root.
	// Only test builds of the agent set it (Options.GuestExec).
	guestExec bool
}

type sandboxState struct {
	id     string
	mounts []string // mount points, in mount order
}

var _ api.AgentService = (*Service)(nil)

// NewService returns the service; reaper must be running.
func NewService(reaper *Reaper) *Service {
	s := &Service{reaper: reaper, etcDir: "/etc", containers: map[string]*container{}}
	s.oom, _ = newOOMWatcher() // nil: GetOOMEvent says OOM events are not watched
	return s
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

// CreateSandbox configures the network, sets the hostname, writes
// resolv.conf, hostname and hosts, and mounts the shared directories. On
// failure what it mounted is unmounted again; the network is left as far
// as it got.
func (s *Service) CreateSandbox(ctx context.Context, req *api.CreateSandboxRequest) (*api.CreateSandboxResponse, error) {
	if req.SandboxId == "" {
		return nil, errdefs.InvalidArgument("creating sandbox: no sandbox id")
	}
	for _, m := range req.Mounts {
		if m.Tag == "" || !filepath.IsAbs(m.MountPoint) || filepath.Clean(m.MountPoint) == "/" {
			return nil, errdefs.InvalidArgument("creating sandbox: shared mount needs a tag and an absolute mount point other than / (got tag %q, mount point %q)", m.Tag, m.MountPoint)
		}
		switch m.FsType {
		case "", FsType9p, FsTypeVirtiofs:
		default:
			return nil, errdefs.InvalidArgument("creating sandbox: shared fs type %q: want %s or %s", m.FsType, FsType9p, FsTypeVirtiofs)
		}
	}
	nc, err := parseNetConfig(req.Interfaces, req.Routes)
	if err != nil {
		return nil, fmt.Errorf("creating sandbox: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sandbox != nil {
		return nil, errdefs.AlreadyExists("creating sandbox %s: the guest already runs sandbox %s", req.SandboxId, s.sandbox.id)
	}
	if len(nc.ifaces) > 0 || len(nc.routes) > 0 {
		if err := nc.apply(ctx); err != nil {
			return nil, fmt.Errorf("creating sandbox: configuring the network: %w", err)
		}
	}
	if req.Hostname != "" {
		if err := unix.Sethostname([]byte(req.Hostname)); err != nil {
			return nil, fmt.Errorf("setting hostname: %w", err)
		}
	}
	if err := s.writeEtc(req, nc.addresses()); err != nil {
		return nil, fmt.Errorf("creating sandbox: %w", err)
	}
	st := &sandboxState{id: req.SandboxId}
	for _, m := range req.Mounts {
		if err := mountShared(m); err != nil {
			unmountAll(ctx, st.mounts)
			return nil, fmt.Errorf("creating sandbox: %w", err)
		}
		st.mounts = append(st.mounts, filepath.Clean(m.MountPoint))
	}
	s.sandbox = st
	log.G(ctx).Debug("sandbox created", "id", req.SandboxId, "mounts", len(st.mounts))
	return &api.CreateSandboxResponse{}, nil
}

// writeEtc writes resolv.conf, hostname and hosts; hosts maps the
// hostname to the pod's addresses (127.0.1.1 without any), as the kubelet's
// managed hosts file does.
func (s *Service) writeEtc(req *api.CreateSandboxRequest, addrs []net.IP) error {
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
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if len(addrs) == 0 {
		hosts += "127.0.1.1\t" + host + "\n"
	}
	for _, a := range addrs {
		hosts += a.String() + "\t" + host + "\n"
	}
	files := map[string]string{
		"resolv.conf": rc.String(),
		"hostname":    host + "\n",
		"hosts":       hosts,
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

// Shared fs types of api.SharedMount.
const (
	FsType9p       = "9p"
	FsTypeVirtiofs = "virtiofs"
)

// mountShared mounts the host share m: 9p (the default) or virtio-fs.
func mountShared(m *api.SharedMount) error {
	if err := os.MkdirAll(m.MountPoint, 0o755); err != nil {
		return fmt.Errorf("creating mount point %s: %w", m.MountPoint, err)
	}
	flags := uintptr(unix.MS_NODEV)
	if !m.AllowSuid {
		flags |= unix.MS_NOSUID
	}
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if m.FsType == FsTypeVirtiofs {
		if err := unix.Mount(m.Tag, m.MountPoint, "virtiofs", flags, ""); err != nil {
			return fmt.Errorf("mounting virtio-fs tag %s on %s: %w", m.Tag, m.MountPoint, err)
		}
		return nil
	}
	// msize 512 KiB: fewer round trips per read than the 8 KiB default,
	// which matters when every guest exit is emulated. cache=mmap: shared
	// writable mappings work (databases in a container rootfs), while
	// reads and writes stay uncached and coherent with the host.
	if err := unix.Mount(m.Tag, m.MountPoint, "9p", flags, "trans=virtio,version=9p2000.L,msize=524288,cache=mmap"); err != nil {
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

// DestroySandbox deletes every container, stops the pod's PID namespace
// holder and unmounts the shared directories. It is a no-op when no
// sandbox (or another one) exists.
func (s *Service) DestroySandbox(ctx context.Context, req *api.DestroySandboxRequest) (*api.DestroySandboxResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sandbox == nil || (req.SandboxId != "" && req.SandboxId != s.sandbox.id) {
		return &api.DestroySandboxResponse{}, nil
	}
	if err := s.deleteAll(ctx); err != nil {
		return nil, fmt.Errorf("destroying sandbox %s: %w", s.sandbox.id, err)
	}
	s.stopPIDHolder(ctx)
	if err := unmountAll(ctx, s.sandbox.mounts); err != nil {
		return nil, fmt.Errorf("destroying sandbox %s: %w", s.sandbox.id, err)
	}
	s.sandbox = nil
	return &api.DestroySandboxResponse{}, nil
}

// Shutdown kills the containers and unmounts what the sandbox mounted,
// for a clean power-off.
func (s *Service) Shutdown(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.deleteAll(ctx); err != nil {
		log.G(ctx).Warn("deleting containers at shutdown", "error", err)
	}
	s.stopPIDHolder(ctx)
	if s.sandbox != nil {
		unmountAll(ctx, s.sandbox.mounts)
		s.sandbox = nil
	}
}

// GuestRootExec, as the first argument of an exec in any container, makes
// a test build of the agent (Options.GuestExec) run the rest of the
// arguments as guest root, outside every container. A release agent treats
// it as an ordinary command name.
const GuestRootExec = "crivm-test:guest-root"

// ExecProcess runs args to completion and returns its output: in the
// guest's root namespaces, in a new process group, or inside a container
// (see execInContainer). It is killed (the whole group, and the container
// process) when timeout_ms or ctx passes.
func (s *Service) ExecProcess(ctx context.Context, req *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	if len(req.Args) == 0 || req.Args[0] == "" {
		return nil, errdefs.InvalidArgument("exec: no command")
	}
	if req.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	if s.guestExec && len(req.Args) > 1 && req.Args[0] == GuestRootExec {
		// A test build's way in for the host's e2e tests, which reach the
		// agent only through the CRI: run as guest root.
		req.ContainerId, req.Args = "", req.Args[1:]
	}
	if req.ContainerId != "" {
		return s.execInContainer(ctx, req)
	}
	if !s.guestExec {
		return nil, errdefs.FailedPrecondition("exec: a container id is required (guest-root exec is only in test builds of the agent)")
	}
	env := req.Env
	if len(env) == 0 {
		env = []string{"PATH=" + GuestPath}
	}
	path, err := launch.LookPath(req.Args[0], env, req.Cwd)
	if err != nil {
		return nil, errdefs.InvalidArgument("exec: %w", err)
	}
	cmd := &exec.Cmd{Path: path, Args: req.Args, Env: env, Dir: req.Cwd}
	r, err := s.runCollect(ctx, s.cmdStarter(cmd), req.Stdin, nil)
	var se *startError
	if errors.As(err, &se) {
		return nil, errdefs.InvalidArgument("exec %s: %w", req.Args[0], err)
	}
	if err != nil {
		return nil, fmt.Errorf("exec %s: %w", req.Args[0], err)
	}
	return r, nil
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
