package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	criclient "k8s.io/cri-client/pkg"
)

// Daemon is one crivm process with a private root, runroot and socket.
type Daemon struct {
	t       testing.TB
	Dir     string // holds root/, run/, crivm.conf, crivm.conf.d/, daemon.log
	Root    string
	Runroot string
	Socket  string
	Config  string // the main config file
	DropIn  string // the drop-in dir
	LogPath string
	// AuditLog is the trust audit log, set by a drop-in 00-test.conf.
	AuditLog string
	// Binary is the daemon binary in BinDir for the next Start: "crivm"
	// when empty, or CrashpointBinary.
	Binary string
	// Env is added to the next Start's environment.
	Env []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid after done closes
}

// DaemonOptions shape a test daemon's config.
type DaemonOptions struct {
	// Config is extra TOML appended to the generated main config file. It
	// must not repeat the [crivm] table's root/runroot/listen keys.
	Config string
	// Args are extra daemon flags.
	Args []string
}

// NewDaemon prepares (but does not start) a daemon in a fresh temp dir.
// The socket lives in runroot, so its path stays short.
func NewDaemon(t testing.TB, opts DaemonOptions) *Daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "crivm-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// Searchable by every uid, as /run and /var/lib are: the root of a pod
	// with its own user namespace is an unprivileged host uid, and runc
	// reaches the container's staged rootfs and mounts below runroot as it.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{
		t: t, Dir: dir,
		Root:    filepath.Join(dir, "root"),
		Runroot: filepath.Join(dir, "run"),
		Config:  filepath.Join(dir, "crivm.conf"),
		DropIn:  filepath.Join(dir, "crivm.conf.d"),
		LogPath: filepath.Join(dir, "daemon.log"),
	}
	d.Socket = filepath.Join(d.Runroot, "crivm.sock")
	if err := os.MkdirAll(d.DropIn, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("[crivm]\nroot = %q\nrunroot = %q\nlisten = %q\nlog_level = \"debug\"\n%s", d.Root, d.Runroot, d.Socket, opts.Config)
	if err := os.WriteFile(d.Config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Keep the audit log out of /var/log; a test's own config may override it.
	d.AuditLog = filepath.Join(dir, "trust-audit.log")
	dropIn := fmt.Sprintf("[crivm.runtime]\naudit_log = %q\n", d.AuditLog)
	if err := os.WriteFile(filepath.Join(d.DropIn, "00-test.conf"), []byte(dropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Kill()
		d.forceCleanup()
		if t.Failed() {
			if b, err := os.ReadFile(d.LogPath); err == nil {
				t.Logf("daemon log %s:\n%s", d.LogPath, tail(b, 80))
			}
			return
		}
		os.RemoveAll(dir)
	})
	return d
}

func tail(b []byte, lines int) string {
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(s) > lines {
		s = s[len(s)-lines:]
	}
	return strings.Join(s, "\n")
}

// Command returns an exec.Cmd for crivm with this daemon's config flags.
func (d *Daemon) Command(args ...string) *exec.Cmd {
	name := d.Binary
	if name == "" {
		name = "crivm"
	}
	bin, err := Bin(name)
	if err != nil {
		d.t.Fatal(err)
	}
	full := append([]string{"--config", d.Config, "--config-dir", d.DropIn}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = append(os.Environ(), d.Env...)
	return cmd
}

// Start starts the daemon and waits until Version answers on its socket.
func (d *Daemon) Start(ctx context.Context, args ...string) {
	d.t.Helper()
	if err := d.TryStart(ctx, args...); err != nil {
		d.t.Fatal(err)
	}
}

// TryStart is Start returning the error, for tests of failing start-ups.
func (d *Daemon) TryStart(ctx context.Context, args ...string) error {
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := d.Command(args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting crivm: %w", err)
	}
	done := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		d.mu.Lock()
		d.err = err
		d.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("crivm exited during start-up: %v; log:\n%s", d.ExitErr(), d.Log())
		default:
		}
		if _, err := os.Stat(d.Socket); err == nil {
			rs, err := d.runtimeClient(ctx, 2*time.Second)
			if err == nil {
				if _, err := rs.Version(ctx, "v1"); err == nil {
					return nil
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("crivm did not answer on %s within 30s; log:\n%s", d.Socket, d.Log())
}

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return errors.New("daemon not started")
	}
	return d.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits for the daemon to exit, returning its status.
func (d *Daemon) Stop(timeout time.Duration) error {
	if err := d.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	return d.Wait(timeout)
}

// Wait waits for the daemon process to exit.
func (d *Daemon) Wait(timeout time.Duration) error {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	select {
	case <-done:
		return d.ExitErr()
	case <-time.After(timeout):
		return fmt.Errorf("crivm still running after %v", timeout)
	}
}

// ExitErr is the daemon's exit status once it has exited.
func (d *Daemon) ExitErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// Kill kills the daemon's process group if it still runs.
func (d *Daemon) Kill() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
	default:
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Log returns the daemon's log so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// WaitLog waits until the daemon log contains every substring in want.
func (d *Daemon) WaitLog(timeout time.Duration, want ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		log := d.Log()
		missing := ""
		for _, w := range want {
			if !strings.Contains(log, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon log lacks %q after %v", missing, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Endpoint is the daemon's CRI endpoint URL.
func (d *Daemon) Endpoint() string { return "unix://" + d.Socket }

func (d *Daemon) runtimeClient(ctx context.Context, timeout time.Duration) (internalapi.RuntimeService, error) {
	return criclient.NewRemoteRuntimeServiceBuilder().
		WithEndpoint(d.Endpoint()).
		WithConnectionTimeout(timeout).
		WithTracerProvider(nil).
		Build(ctx)
}

// RuntimeService returns the kubelet's CRI runtime client for this daemon.
func (d *Daemon) RuntimeService(ctx context.Context) internalapi.RuntimeService {
	d.t.Helper()
	rs, err := d.runtimeClient(ctx, 10*time.Second)
	if err != nil {
		d.t.Fatalf("connecting to %s: %v", d.Endpoint(), err)
	}
	return rs
}

// ImageService returns the kubelet's CRI image client for this daemon.
func (d *Daemon) ImageService(ctx context.Context) internalapi.ImageManagerService {
	d.t.Helper()
	is, err := criclient.NewRemoteImageServiceBuilder().
		WithEndpoint(d.Endpoint()).
		WithConnectionTimeout(10 * time.Second).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		d.t.Fatalf("connecting to %s: %v", d.Endpoint(), err)
	}
	return is
}

// Crivmctl runs crivmctl against this daemon and returns its stdout.
func (d *Daemon) Crivmctl(args ...string) (string, error) {
	bin, err := Bin("crivmctl")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, append([]string{"--runtime-endpoint", d.Endpoint()}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("crivmctl %v: %w: %s", args, err, errb.String())
	}
	return out.String(), nil
}

// Pid is the daemon's process ID, 0 when it is not running.
func (d *Daemon) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}
