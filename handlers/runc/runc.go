// Package runc is the handler for trusted pods: plain OCI containers run by
// runc (or any OCI runtime binary) under conmon, one conmon per container,
// CRI-O style. The pod's infra (pause) container holds its namespaces, or,
// for a pod that needs none (drop_infra_ctr), pins do (noinfra.go).
package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/store"
)

var _ handlers.Handler = (*Handler)(nil)

// Options configure a Handler.
type Options struct {
	// Name is the configured handler name, for messages.
	Name        string
	RuntimePath string
	MonitorPath string
	// Dir is the handler's state dir under runroot: bundles, exit files,
	// attach sockets and the runtime's own state.
	Dir string
	// Host is what the spec generator needs to know about this machine.
	Host oci.Host
	// DropInfra runs pods that need no infra container without one
	// (drop_infra_ctr; noinfra.go).
	DropInfra bool
}

// Handler runs containers with an OCI runtime under conmon. It holds no
// per-container state in memory: everything is in the store records and the
// bundle directories, so a restarted daemon picks up where it left off.
type Handler struct {
	name        string
	rt          runtime
	monitorPath string
	dir         string
	host        oci.Host
	// features is the OCI runtime's own report, probed once.
	features func() (runtimeFeatures, error)
	// userns says whether pods may have their own user namespace (userns.go).
	userns usernsProbe
	// dropInfra: pods that need no infra container run without one
	// (noinfra.go).
	dropInfra bool
}

// New checks the binaries and creates the state dirs.
func New(opts Options) (*Handler, error) {
	for _, p := range []string{opts.RuntimePath, opts.MonitorPath} {
		if err := unix.Access(p, unix.X_OK); err != nil {
			return nil, errdefs.FailedPrecondition("handler %q: %s is not executable: %w", opts.Name, p, err)
		}
	}
	h := &Handler{
		features:    onceFeatures(opts.RuntimePath),
		name:        opts.Name,
		rt:          runtime{path: opts.RuntimePath, root: filepath.Join(opts.Dir, "state"), systemd: opts.Host.CgroupDriver == "systemd"},
		monitorPath: opts.MonitorPath,
		dir:         opts.Dir,
		host:        opts.Host,
		dropInfra:   opts.DropInfra,
	}
	for _, d := range []string{h.rt.root, h.exitDir(), h.socketDir(), filepath.Join(h.dir, "bundles")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	return h, nil
}

func (h *Handler) exitDir() string           { return filepath.Join(h.dir, "exits") }
func (h *Handler) socketDir() string         { return filepath.Join(h.dir, "sock") }
func (h *Handler) bundle(id string) string   { return filepath.Join(h.dir, "bundles", id) }
func (h *Handler) exitFile(id string) string { return filepath.Join(h.exitDir(), id) }
func (h *Handler) attachSocket(id string) string {
	return filepath.Join(h.socketDir(), id, "attach")
}

// runContainer writes the bundle and creates the container under conmon.
// On failure nothing of it is left.
func (h *Handler) runContainer(ctx context.Context, id, name string, spec *specs.Spec, logPath string, o monitorOptions) (*store.Process, error) {
	b := h.bundle(id)
	if err := os.MkdirAll(b, 0o700); err != nil {
		return nil, fmt.Errorf("creating bundle: %w", err)
	}
	if err := oci.WriteSpec(b, spec); err != nil {
		os.RemoveAll(b)
		return nil, fmt.Errorf("writing spec: %w", err)
	}
	if logPath != "" {
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			os.RemoveAll(b)
			return nil, fmt.Errorf("creating log dir: %w", err)
		}
	}
	o.ID, o.Name, o.Bundle, o.LogPath = id, name, b, logPath
	pid, _, err := h.createUnderMonitor(ctx, o)
	if err != nil {
		h.cleanupContainer(context.WithoutCancel(ctx), id)
		return nil, err
	}
	return processOf(pid), nil
}

// cleanupContainer removes the runtime's state, the bundle, the exit file
// and the attach socket dir of id. It is safe on partial state.
func (h *Handler) cleanupContainer(ctx context.Context, id string) error {
	var errs []error
	if err := h.rt.delete(ctx, id); err != nil {
		errs = append(errs, fmt.Errorf("deleting runtime state: %w", err))
	}
	if err := h.unstageUserns(id, false); err != nil {
		errs = append(errs, fmt.Errorf("unstaging mounts: %w", err))
	}
	for _, p := range []string{h.bundle(id), h.exitFile(id), filepath.Join(h.socketDir(), id)} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func processOf(pid int) *store.Process {
	st, _ := proc.StartTime(pid)
	return &store.Process{Pid: pid, StartTime: st, BootID: proc.BootID()}
}

// exitState reads the exit file conmon writes, and bundle/oom. ok is false
// while the container has not exited.
func (h *Handler) exitState(id string) (st *handlers.ContainerState, ok bool, err error) {
	fi, err := os.Stat(h.exitFile(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	code, err := proc.ReadExitFile(h.exitFile(id))
	if err != nil {
		return nil, false, err
	}
	st = &handlers.ContainerState{State: store.ContainerExited, ExitCode: code, FinishedAt: fi.ModTime(), Reason: "Completed"}
	if code != 0 {
		st.Reason = "Error"
	}
	if _, err := os.Stat(filepath.Join(h.bundle(id), "oom")); err == nil {
		st.Reason = "OOMKilled"
	}
	return st, true, nil
}

// waitExit polls for the exit file until ctx or timeout ends.
func (h *Handler) waitExit(ctx context.Context, id string, timeout time.Duration) (*handlers.ContainerState, bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, ok, err := h.exitState(id)
		if ok || err != nil {
			return st, ok, err
		}
		if time.Now().After(deadline) {
			return nil, false, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cgroupPath returns the container's cgroup dir for one v1 controller, or
// the unified dir on v2 (controller ignored).
func (h *Handler) cgroupPath(cgroupsPath, controller string) string {
	p := cgroupsPath
	if strings.Contains(p, ":") { // systemd: slice:prefix:name
		parts := strings.SplitN(p, ":", 3)
		p = expandSlice(parts[0]) + "/" + parts[1] + "-" + parts[2] + ".scope"
	}
	if h.host.Cgroups.V2 {
		return filepath.Join("/sys/fs/cgroup", p)
	}
	return filepath.Join("/sys/fs/cgroup", controller, p)
}

// expandSlice turns "a-b-c.slice" into "/a.slice/a-b.slice/a-b-c.slice".
func expandSlice(slice string) string {
	name := strings.TrimSuffix(slice, ".slice")
	if name == "" || name == "-" {
		return "/"
	}
	var out, prefix string
	for _, part := range strings.Split(name, "-") {
		if prefix == "" {
			prefix = part
		} else {
			prefix += "-" + part
		}
		out += "/" + prefix + ".slice"
	}
	return out
}

func logger(ctx context.Context, id string) context.Context {
	return log.With(ctx, "handler", "runc", "id", id)
}
