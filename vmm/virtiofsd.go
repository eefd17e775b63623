package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/podns"
)

// Files of a VM's virtiofsd in its dir.
const (
	VirtiofsdSocketName  = "virtiofsd.sock"
	VirtiofsdPidfileName = "virtiofsd.pid"
	VirtiofsdLogName     = "virtiofsd.log"
)

// VirtiofsdCandidates are where distributions install virtiofsd: the Rust
// daemon (Debian 13, Fedora) and QEMU's C daemon (Debian 12's
// qemu-system-common).
var VirtiofsdCandidates = []string{"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/bin/virtiofsd"}

// Virtio-fs cache modes virtiofsd accepts.
var VirtiofsCacheModes = []string{"auto", "always", "none"}

// FindVirtiofsd returns configured when set (it must exist), else the
// first of VirtiofsdCandidates that exists.
func FindVirtiofsd(configured string) (string, error) {
	if configured != "" {
		if _, err := os.Stat(configured); err != nil {
			return "", errdefs.FailedPrecondition("virtiofsd %s: %w", configured, err)
		}
		return configured, nil
	}
	for _, c := range VirtiofsdCandidates {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", errdefs.NotFound("no virtiofsd: looked in %v", VirtiofsdCandidates)
}

// VirtiofsdConfig describes one virtiofsd serving Source to one VM.
type VirtiofsdConfig struct {
	Path string
	// Source is the exported directory. virtiofsd sandboxes itself in a
	// mount namespace whose mounts are slaves of the host's, so mounts made
	// below Source after the start reach the guest only when Source is a
	// shared mount (handlers/vm's export is one).
	Source string
	// Dir is the VM's dir: the socket, pidfile and log go there.
	Dir string
	// Cache is one of VirtiofsCacheModes; empty: auto.
	Cache string
	// Cgroup, when set, is the cgroup virtiofsd starts in (it must exist):
	// the pod's, as QEMU's.
	Cgroup *Cgroup
	// MountNS, when set, is the podns pin of the mount namespace
	// virtiofsd starts in (its sandbox namespace is made from that one).
	MountNS string
}

// Virtiofsd is a running virtiofsd. It runs in its own session and
// survives a daemon restart, like QEMU; it exits by itself once QEMU
// disconnects.
type Virtiofsd struct {
	pid int
	dir string
}

// PID is virtiofsd's process id.
func (d *Virtiofsd) PID() int { return d.pid }

// Socket is the vhost-user socket QEMU connects to.
func (d *Virtiofsd) Socket() string { return filepath.Join(d.dir, VirtiofsdSocketName) }

// virtiofsdArgs returns virtiofsd's command line. Both daemons (QEMU's C
// one and the Rust one) take --socket-path and these -o options.
func virtiofsdArgs(c VirtiofsdConfig) []string {
	cache := c.Cache
	if cache == "" {
		cache = "auto"
	}
	return []string{
		"--socket-path=" + filepath.Join(c.Dir, VirtiofsdSocketName),
		"-o", "source=" + c.Source,
		"-o", "cache=" + cache,
		"-o", "sandbox=namespace",
	}
}

// StartVirtiofsd starts virtiofsd for c and returns once its socket
// accepts connections. On failure nothing is left running.
func StartVirtiofsd(ctx context.Context, c VirtiofsdConfig) (*Virtiofsd, error) {
	if !filepath.IsAbs(c.Source) || !filepath.IsAbs(c.Dir) {
		return nil, errdefs.InvalidArgument("virtiofsd: source %q and dir %q must be absolute", c.Source, c.Dir)
	}
	if strings.Contains(c.Source, ",") {
		return nil, errdefs.InvalidArgument("virtiofsd: source %s cannot hold ','", c.Source)
	}
	if pid, ok := readPid(filepath.Join(c.Dir, VirtiofsdPidfileName)); ok && processServes(pid, c.Dir) {
		return nil, errdefs.AlreadyExists("a virtiofsd (pid %d) already runs for %s", pid, c.Dir)
	}
	sock := filepath.Join(c.Dir, VirtiofsdSocketName)
	os.Remove(sock)
	logf, err := createLog(filepath.Join(c.Dir, VirtiofsdLogName))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(c.Path, virtiofsdArgs(c)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session, like QEMU: it must outlive the daemon.
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	release := func() {}
	if c.Cgroup != nil {
		if release, err = c.Cgroup.place(cmd); err != nil {
			return nil, fmt.Errorf("placing virtiofsd in cgroup %s: %w", c.Cgroup.Path, err)
		}
	}
	log.G(ctx).Debug("running virtiofsd", "args", cmd.Args)
	err = podns.Run(podns.Target{MountNS: c.MountNS}, cmd.Start)
	release()
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", c.Path, err)
	}
	d := &Virtiofsd{pid: cmd.Process.Pid, dir: c.Dir}
	exited := make(chan struct{})
	// Reaped here while this process lives; after a restart init does.
	go func() { cmd.Wait(); close(exited) }()
	fail := func(err error) (*Virtiofsd, error) {
		cmd.Process.Kill()
		<-exited
		os.Remove(sock)
		os.Remove(filepath.Join(c.Dir, VirtiofsdPidfileName))
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, VirtiofsdPidfileName), []byte(strconv.Itoa(d.pid)), 0o600); err != nil {
		return fail(fmt.Errorf("writing virtiofsd's pidfile: %w", err))
	}
	deadline := time.NewTimer(DefaultStartTimeout)
	defer deadline.Stop()
	for {
		// virtiofsd serves one vhost-user client, so probe for the socket
		// file rather than connecting (a probe connection would be taken
		// for QEMU and end the daemon when it closes).
		if st, err := os.Stat(sock); err == nil && st.Mode()&os.ModeSocket != 0 {
			log.G(ctx).Debug("virtiofsd started", "pid", d.pid, "source", c.Source)
			return d, nil
		}
		select {
		case <-exited:
			return fail(fmt.Errorf("virtiofsd exited during start-up: %s", tailFile(filepath.Join(c.Dir, VirtiofsdLogName), 2048)))
		case <-ctx.Done():
			return fail(fmt.Errorf("virtiofsd did not create its socket: %w", ctx.Err()))
		case <-deadline.C:
			return fail(fmt.Errorf("virtiofsd did not create its socket within %v: %s", DefaultStartTimeout, tailFile(filepath.Join(c.Dir, VirtiofsdLogName), 2048)))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// StopVirtiofsd ends the virtiofsd recorded in dir: it waits up to grace
// for it to exit by itself (it does once QEMU is gone), then kills it, and
// removes its socket and pidfile. No virtiofsd recorded is fine.
func StopVirtiofsd(ctx context.Context, dir string, grace time.Duration) error {
	pidfile := filepath.Join(dir, VirtiofsdPidfileName)
	pid, ok := readPid(pidfile)
	if ok && processServes(pid, dir) {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("opening pidfd of virtiofsd %d: %w", pid, err)
		}
		if err == nil {
			defer unix.Close(fd)
			// The pidfd pins pid: re-check that it is still our virtiofsd.
			if processServes(pid, dir) && !pidfdExits(fd, grace) {
				unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
				if !pidfdExits(fd, killWait) {
					return fmt.Errorf("killing virtiofsd (pid %d): still running %s after SIGKILL", pid, killWait)
				}
				log.G(ctx).Warn("virtiofsd did not exit after its VM; killed it", "pid", pid)
			}
		}
	}
	os.Remove(filepath.Join(dir, VirtiofsdSocketName))
	os.Remove(pidfile)
	return nil
}

// pidfdExits waits up to d for the process behind fd to exit.
func pidfdExits(fd int, d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(d.Milliseconds()))
	return err == nil && n > 0
}

func readPid(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// processServes reports whether pid is the virtiofsd whose socket is in
// dir.
func processServes(pid int, dir string) bool {
	return cmdlineHas(pid, "--socket-path="+filepath.Join(dir, VirtiofsdSocketName)+"\x00")
}
