package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"go.podman.io/image/v5/docker/reference"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/cri-streaming/pkg/streaming"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/image"
	"github.com/crivm/crivm/internal/ksm"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/metrics"
	"github.com/crivm/crivm/internal/steps"
	"github.com/crivm/crivm/internal/version"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/server"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/trust"
)

// daemon holds what lives for the whole run. cfg changes only in reload.
type daemon struct {
	opts     configs.LoadOptions
	cfg      atomic.Pointer[configs.Config]
	level    slog.LevelVar
	store    *store.Store
	listener net.Listener
	lock     *os.File
	trust    *trust.Classifier
	audit    *trust.AuditLog
	images   *image.Service
	handlers handlers.Registry
	network  *netns.Manager
	stream   net.Listener
	registry *prometheus.Registry
	metrics  *metrics.Metrics
	metricsL net.Listener
	// ksm, when a vm handler has ksm = true, restores the host's KSM
	// setting at shutdown.
	ksm *ksm.Control
}

func runDaemon(g globalFlags) error {
	d := &daemon{opts: g.loadOptions()}
	loaded, err := configs.Load(d.opts)
	if err != nil {
		return err
	}
	cfg := loaded.Config
	d.cfg.Store(cfg)
	lvl, _ := log.ParseLevel(cfg.LogLevel) // validated by Load
	d.level.Set(lvl)
	logger := log.New(os.Stderr, cfg.LogFormat, &d.level)
	ctx := log.WithLogger(context.Background(), logger)
	logger.Info("starting crivm", "version", version.Version, "commit", version.Commit, "config_files", loaded.Files, "root", cfg.Root, "listen", cfg.SocketPath())

	// On failure the steps undo themselves; after a good start, shutdown
	// releases the socket, store and lock but keeps the state on disk.
	if _, err := steps.Run(ctx, d.startSteps(cfg)); err != nil {
		return fmt.Errorf("starting: %w", err)
	}

	deps := server.Deps{
		Config: d.cfg.Load, Store: d.store, Trust: d.trust, Images: d.images,
		Handlers: d.handlers, Network: d.network, NetNSDir: netns.DefaultDir, PodsDir: cfg.PodsDir(),
		Registry: d.registry, Metrics: d.metrics,
		Version: version.Version, Logger: logger,
	}
	rs := server.NewRuntimeService(deps)
	ss, err := streaming.NewServer(streaming.Config{
		Addr:                            d.stream.Addr().String(),
		StreamIdleTimeout:               streaming.DefaultConfig.StreamIdleTimeout,
		StreamCreationTimeout:           streaming.DefaultConfig.StreamCreationTimeout,
		SupportedRemoteCommandProtocols: streaming.DefaultConfig.SupportedRemoteCommandProtocols,
		SupportedPortForwardProtocols:   streaming.DefaultConfig.SupportedPortForwardProtocols,
	}, server.StreamRuntime{S: rs})
	if err != nil {
		return errors.Join(fmt.Errorf("creating streaming server: %w", err), d.shutdown(cfg.SocketPath()))
	}
	rs.SetStreaming(ss)
	go http.Serve(d.stream, ss)
	if d.metricsL != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(d.registry, promhttp.HandlerOpts{}))
		go http.Serve(d.metricsL, mux)
		logger.Info("serving metrics", "address", "http://"+d.metricsL.Addr().String()+"/metrics")
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go releaseIdle(watchCtx)
	rs.Sweep(ctx)
	rs.Restore(ctx)
	for _, e := range d.handlers {
		if w, ok := e.Handler.(handlers.Warmer); ok {
			go w.Warm(watchCtx)
		}
	}
	if err := rs.WatchExits(watchCtx); err != nil {
		logger.Warn("exits are found by polling only", "err", err)
	}
	gs := server.New(deps, rs)
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(d.listener) }()
	logger.Info("serving CRI", "socket", cfg.SocketPath(), "streaming", d.stream.Addr().String())

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload(ctx)
				continue
			}
			logger.Info("shutting down: pods and containers keep running", "signal", sig.String())
			stopGracefully(gs, 10*time.Second)
			d.cool(ctx)
			err := d.shutdown(cfg.SocketPath())
			logger.Info("crivm stopped")
			return err
		case err := <-serveErr:
			d.cool(ctx)
			return errors.Join(fmt.Errorf("serving: %w", err), d.shutdown(cfg.SocketPath()))
		}
	}
}

type stopper interface {
	GracefulStop()
	Stop()
}

// stopGracefully lets in-flight RPCs finish for up to timeout.
func stopGracefully(gs stopper, timeout time.Duration) {
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		gs.Stop()
	}
}

// cool has each handler release what it prepared ahead of pods.
func (d *daemon) cool(ctx context.Context) {
	for _, e := range d.handlers {
		if w, ok := e.Handler.(handlers.Warmer); ok {
			w.Cool(ctx)
		}
	}
}

// shutdown releases what a good start holds. The socket goes; state stays.
func (d *daemon) shutdown(sock string) error {
	var merr error
	if d.metricsL != nil {
		merr = d.metricsL.Close()
	}
	if d.ksm != nil {
		merr = errors.Join(merr, d.ksm.Restore())
	}
	return errors.Join(closeSocket(d.listener, sock), d.stream.Close(), merr, d.audit.Close(), d.images.Close(), d.store.Close(), d.lock.Close())
}

// closeSocket closes l (which may already be closed) and makes sure the socket
// file is gone.
func closeSocket(l net.Listener, sock string) error {
	err := l.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if _, serr := os.Lstat(sock); serr == nil {
		err = errors.Join(err, os.Remove(sock))
	}
	return err
}

// startSteps are the daemon's start-up, undone in reverse when a step fails,
// so a failed start leaves nothing behind. Nothing is created before the
// config and the socket directory are known to be good.
func (d *daemon) startSteps(cfg *configs.Config) []steps.Step {
	sock := cfg.SocketPath()
	return []steps.Step{
		{Name: "checking socket directory", Do: func(context.Context) (steps.Cleanup, error) {
			dir := filepath.Dir(sock)
			if dir == filepath.Clean(cfg.Runroot) {
				return nil, nil
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return nil, fmt.Errorf("listen %s: directory %s does not exist", sock, dir)
			}
			return nil, nil
		}},
		{Name: "creating runroot", Do: func(context.Context) (steps.Cleanup, error) {
			return mkdirOwned(cfg.Runroot, 0o711)
		}},
		{Name: "creating root", Do: func(context.Context) (steps.Cleanup, error) {
			return mkdirOwned(cfg.Root, 0o711)
		}},
		{Name: "locking root", Do: func(context.Context) (c steps.Cleanup, err error) {
			d.lock, c, err = lockRoot(cfg.LockPath())
			return c, err
		}},
		{Name: "opening store", Do: func(context.Context) (steps.Cleanup, error) {
			_, statErr := os.Stat(cfg.StoreDir())
			st, err := store.Open(cfg.StoreDir())
			if err != nil {
				return nil, err
			}
			d.store = st
			return func(context.Context) error {
				err := st.Close()
				if errors.Is(statErr, os.ErrNotExist) {
					// This failed start created the store: leave no trace.
					return errors.Join(err, os.RemoveAll(cfg.StoreDir()))
				}
				return err
			}, nil
		}},
		{Name: "creating metrics", Do: func(context.Context) (steps.Cleanup, error) {
			d.registry = prometheus.NewRegistry()
			var err error
			d.metrics, err = metrics.New(d.registry)
			return nil, err
		}},
		{Name: "opening image storage", Do: func(ctx context.Context) (steps.Cleanup, error) {
			_, statErr := os.Stat(cfg.StorageRoot())
			pause, _ := reference.ParseNormalizedNamed(cfg.Image.PauseImage)
			var pinned []string
			if pause != nil {
				pinned = append(pinned, reference.TagNameOnly(pause).String())
			}
			imgs, err := image.New(ctx, image.Options{
				Root: cfg.StorageRoot(), Runroot: cfg.StorageRunroot(), Driver: cfg.Image.StorageDriver,
				InsecureRegistries: cfg.Image.InsecureRegistries, SearchRegistries: cfg.Image.UnqualifiedSearchRegistries,
				Mirrors: cfg.Image.RegistryMirrors, PinnedImages: pinned, Metrics: d.metrics,
			})
			if err != nil {
				return nil, err
			}
			d.images = imgs
			return func(context.Context) error {
				err := imgs.Close()
				if errors.Is(statErr, os.ErrNotExist) {
					err = errors.Join(err, os.RemoveAll(cfg.StorageRoot()), os.RemoveAll(cfg.StorageRunroot()))
				}
				return err
			}, nil
		}},
		{Name: "setting up handlers", Do: func(ctx context.Context) (steps.Cleanup, error) {
			// The handlers make their state dirs; a failed start removes the
			// ones this start made.
			var made []string
			for _, dir := range []string{filepath.Join(cfg.Runroot, "handlers"), filepath.Join(cfg.Root, "vm-assets"), cfg.PodsDir()} {
				if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
					made = append(made, dir)
				}
			}
			cleanup := func(context.Context) error {
				var errs []error
				for _, dir := range made {
					errs = append(errs, os.RemoveAll(dir))
				}
				return errors.Join(errs...)
			}
			reg, err := buildHandlers(ctx, cfg, d.metrics)
			if err != nil {
				return nil, errors.Join(err, cleanup(ctx))
			}
			d.handlers = reg
			d.network = netns.NewManager(netns.Options{
				ConfDir: cfg.Network.NetworkDir, PluginDirs: cfg.Network.CNIPluginDirs,
				CacheDir: filepath.Join(cfg.Root, "cni"),
			})
			if err := os.MkdirAll(cfg.PodsDir(), 0o711); err != nil {
				return nil, errors.Join(err, cleanup(ctx))
			}
			return cleanup, nil
		}},
		{Name: "enabling KSM", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var who []string
			for _, name := range cfg.HandlerNames() {
				if cfg.Runtime.Runtimes[name].KSM {
					who = append(who, name)
				}
			}
			if len(who) == 0 {
				return nil, nil
			}
			c := &ksm.Control{Dir: ksm.SysDir, Runroot: cfg.Runroot}
			if err := c.Enable(); err != nil {
				return nil, err
			}
			d.ksm = c
			log.G(ctx).Info("KSM on for the VMs of handlers with ksm = true; the host's setting comes back at shutdown", "handlers", who)
			return func(context.Context) error { return c.Restore() }, nil
		}},
		{Name: "reconciling state", Do: func(ctx context.Context) (steps.Cleanup, error) {
			return nil, server.Reconcile(ctx, d.store)
		}},
		{Name: "opening trust audit log", Do: func(context.Context) (steps.Cleanup, error) {
			path := cfg.Runtime.AuditLog
			_, statErr := os.Stat(path)
			a, err := trust.NewAuditLog(path)
			if err != nil {
				return nil, err
			}
			d.audit = a
			return func(context.Context) error {
				err := a.Close()
				if path != "" && errors.Is(statErr, os.ErrNotExist) {
					err = errors.Join(err, os.Remove(path))
				}
				return err
			}, nil
		}},
		{Name: "loading trust policy", Do: func(context.Context) (steps.Cleanup, error) {
			p, err := trust.LoadPolicy(cfg.Runtime.TrustPolicy, cfg)
			if err != nil {
				return nil, err
			}
			d.trust = trust.New(cfg, p, trust.WithAuditLog(d.audit))
			for _, c := range append(d.trust.Collectors(), server.StateCollector{Store: d.store}) {
				if err := d.registry.Register(c); err != nil {
					return nil, fmt.Errorf("registering metrics: %w", err)
				}
			}
			return nil, nil
		}},
		{Name: "listening for streams", Do: func(context.Context) (steps.Cleanup, error) {
			l, err := net.Listen("tcp", net.JoinHostPort(cfg.Stream.Address, strconv.Itoa(cfg.Stream.Port)))
			if err != nil {
				return nil, fmt.Errorf("listening for exec/attach/port-forward streams: %w", err)
			}
			d.stream = l
			return func(context.Context) error { return l.Close() }, nil
		}},
		{Name: "listening for metrics scrapes", Do: func(context.Context) (steps.Cleanup, error) {
			if !cfg.Metrics.EnableMetrics {
				return nil, nil
			}
			l, err := net.Listen("tcp", net.JoinHostPort(cfg.Metrics.MetricsAddress, strconv.Itoa(cfg.Metrics.MetricsPort)))
			if err != nil {
				return nil, fmt.Errorf("listening for metrics scrapes: %w", err)
			}
			d.metricsL = l
			return func(context.Context) error { return l.Close() }, nil
		}},
		{Name: "listening", Do: func(context.Context) (steps.Cleanup, error) {
			l, err := listenUnix(sock)
			if err != nil {
				return nil, err
			}
			d.listener = l
			return func(context.Context) error { return closeSocket(l, sock) }, nil
		}},
	}
}

// mkdirOwned creates dir (and parents) if missing. Its cleanup removes only
// what it created, and only while empty.
func mkdirOwned(dir string, mode os.FileMode) (steps.Cleanup, error) {
	var created []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		created = append(created, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return nil, fmt.Errorf("%s is not writable: %w", dir, err)
	}
	return func(context.Context) error {
		for _, p := range created { // deepest first
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil // not empty: someone else's now
			}
		}
		return nil
	}, nil
}

// lockRoot takes an exclusive flock on path, so that one crivm owns a root.
// The lock is held while the returned file is open.
func lockRoot(path string) (*os.File, steps.Cleanup, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("opening lock file: %w", err)
	}
	if err := flockOrWaitForDead(f, lockGrace); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "%d", os.Getpid())
	}
	return f, func(context.Context) error {
		var err error
		if errors.Is(statErr, os.ErrNotExist) {
			err = os.Remove(path)
		}
		return errors.Join(err, f.Close())
	}, nil
}

// lockGrace is how long a start waits for a lock whose recorded holder is
// gone. A crivm killed while it forks a child (a CNI plugin, QEMU) leaves
// the lock's open file in that child until the child's exec closes it.
const lockGrace = 5 * time.Second

// flockOrWaitForDead locks f. A lock held by a live crivm is refused at
// once; one whose recorded holder has exited is waited for up to grace.
func flockOrWaitForDead(f *os.File, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		b, _ := os.ReadFile(f.Name())
		holder := strings.TrimSpace(string(b))
		pid, perr := strconv.Atoi(holder)
		alive := perr != nil || pid <= 0 || unix.Kill(pid, 0) != unix.ESRCH
		if alive {
			return fmt.Errorf("another crivm (pid %s) holds %s", holder, f.Name())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("crivm pid %d, which locked %s, is gone, but the lock is still held after %v (by a process it started?)", pid, f.Name(), grace)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listenUnix listens on sock with mode 0660, replacing a stale socket but
// never one that another process still serves.
func listenUnix(sock string) (net.Listener, error) {
	if fi, err := os.Lstat(sock); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", sock)
		}
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", sock)
		}
		if err := os.Remove(sock); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("setting socket mode: %w", err)
	}
	return l, nil
}

// reloadable are the dotted keys SIGHUP applies; other changes wait for a
// restart.
var reloadable = map[string]bool{"log_level": true, "runtime.trust_policy": true}

// reload re-reads the config files. It applies the reloadable keys, logs
// every change, and keeps the old config entirely when the new one is bad.
func (d *daemon) reload(ctx context.Context) {
	l := log.G(ctx)
	loaded, err := configs.Load(d.opts)
	if err != nil {
		l.Error("reloading config failed: keeping the running config", "err", err)
		return
	}
	old := d.cfg.Load()
	next := *old
	for _, k := range changedKeys(old, loaded.Config) {
		if !reloadable[k] {
			l.Warn("config key changed but needs a restart", "key", "crivm."+k)
			continue
		}
		switch k {
		case "log_level":
			next.LogLevel = loaded.Config.LogLevel
		case "runtime.trust_policy":
			next.Runtime.TrustPolicy = loaded.Config.Runtime.TrustPolicy
		}
		l.Info("config key reloaded", "key", "crivm."+k)
	}
	if err := d.trust.Reload(next.Runtime.TrustPolicy); err != nil {
		l.Error("trust policy reload failed: keeping the policy in force", "err", err)
		next.Runtime.TrustPolicy = old.Runtime.TrustPolicy
	} else {
		l.Info("trust policy reloaded", "path", next.Runtime.TrustPolicy)
	}
	l.Info("SIGHUP: reload done", "files", loaded.Files)
	// The level changes last, so the lines above show at the old level.
	lvl, _ := log.ParseLevel(next.LogLevel)
	d.level.Set(lvl)
	d.cfg.Store(&next)
}

// changedKeys compares two configs key by key, through their JSON form.
func changedKeys(a, b *configs.Config) []string {
	fa, fb := flatten(a), flatten(b)
	var keys []string
	for k, v := range fa {
		if !reflect.DeepEqual(v, fb[k]) {
			keys = append(keys, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func flatten(c *configs.Config) map[string]any {
	b, _ := json.Marshal(c)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	out := map[string]any{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if mm, ok := v.(map[string]any); ok {
			for k, vv := range mm {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, vv)
			}
			return
		}
		out[prefix] = v
	}
	walk("", m)
	return out
}
