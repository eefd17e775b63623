package vm

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/store"
)

// exitRecord is a container's exit as the agent reported it, kept on disk
// so that the state survives the daemon.
type exitRecord struct {
	ExitCode  int32     `json:"exit_code"`
	OOMKilled bool      `json:"oom_killed"`
	ExitedAt  time.Time `json:"exited_at"`
	Reason    string    `json:"reason,omitempty"`
	Message   string    `json:"message,omitempty"`
}

// startErrorReason is a container's reason when its init's exec failed
// after StartContainer returned (containerd's word for a failed start).
const startErrorReason = "StartError"

// maxExitMessage bounds the guest's text kept in an exit record.
const maxExitMessage = 1024

func (h *Handler) exitPath(id string) string { return filepath.Join(h.dir, "exits", id) }

// specHost describes the guest the agent applies specs in: cgroup v2 with
// every controller, and an agent that holds every capability (Capabilities
// nil: privileged and "ALL" grant all of them, whatever the host's daemon
// holds).
func (h *Handler) specHost(ctx context.Context) oci.Host {
	return oci.Host{
		CgroupDriver:               "cgroupfs",
		Cgroups:                    oci.CgroupFeatures{V2: true, Swap: true, Hugetlb: true},
		SeccompUseDefaultWhenEmpty: h.seccompDefault,
		Warnf:                      func(f string, a ...any) { log.G(ctx).Warn(fmt.Sprintf(f, a...)) },
	}
}

// CreateContainer exposes the container's rootfs and bind mounts in the
// sandbox's 9p share, generates the spec with guest paths and asks the
// agent to create it. Its output is copied into the CRI log on the host from
// now on, and its exit is awaited.
func (h *Handler) CreateContainer(ctx context.Context, sb *store.Sandbox, req *handlers.ContainerRequest) (*handlers.ContainerCreated, error) {
	c := req.Container
	v, err := h.connection(ctx, sb)
	if err != nil {
		return nil, err
	}
	if err := checkPropagation(req.Config); err != nil {
		return nil, err
	}
	var resolved map[string]string
	if req.Untrusted {
		resolved = map[string]string{}
		for hostPath, src := range req.Sources {
			resolved[hostPath] = src.Resolved
		}
	}
	spec, err := oci.ContainerSpec(oci.ContainerSpecInput{
		Host:           h.specHost(ctx),
		ID:             c.ID,
		SandboxID:      sb.ID,
		Sandbox:        req.SandboxConfig,
		Config:         req.Config,
		Image:          req.Image,
		RootfsPath:     req.Rootfs,
		NamespacePaths: guestNamespacePaths(req),
		ResolvConfPath: req.ResolvConfPath, HostsPath: req.HostsPath, HostnamePath: req.HostnamePath, ShmPath: req.ShmPath,
		ResolvedSources: resolved,
		ImageVolumes:    req.ImageVolumePaths(),
		// GuestSpec's parent in the guest: the host's may be a systemd slice.
		CgroupParent: agentproxy.GuestCgroupParent,
	})
	if err != nil {
		return nil, fmt.Errorf("generating spec: %w", err)
	}
	binds, err := agentproxy.GuestSpec(spec, c.ID, agentproxy.GuestSpecOptions{Keep: map[string]string{
		req.ResolvConfPath: agentproxy.GuestResolvConf, req.HostsPath: agentproxy.GuestHosts,
		req.HostnamePath: agentproxy.GuestHostname, req.ShmPath: agentproxy.GuestShm,
	}})
	if err != nil {
		return nil, err
	}
	sources, closeSources, err := shareBinds(spec, binds, req)
	if err != nil {
		return nil, err
	}
	defer closeSources()
	if err := keepSubmountsWritable(spec, c.ID, sources); err != nil {
		return nil, err
	}
	sh := h.share(sb.ID)
	undo := func(err error) error {
		if uerr := sh.unexpose(c.ID); uerr != nil {
			return errors.Join(err, fmt.Errorf("undoing the share entries: %w", uerr))
		}
		return err
	}
	if err := sh.expose(c.ID, req.Rootfs, sources); err != nil {
		return nil, undo(err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, undo(fmt.Errorf("encoding spec: %w", err))
	}
	rpcStart := time.Now()
	resp, err := v.client.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: c.ID, OciSpec: b, Stdin: req.Config.GetStdin(), Tty: req.Config.GetTty()})
	if err != nil {
		return nil, undo(fmt.Errorf("creating container in the guest: %w", err))
	}
	log.G(ctx).Debug("guest created the container", "spec_bytes", len(b), "rpc", time.Since(rpcStart), "guest_phases", guestPhases(resp.GetPhases()))
	os.MkdirAll(filepath.Dir(h.exitPath(c.ID)), 0o700)
	if req.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(req.LogPath), 0o755); err != nil {
			return nil, err
		}
	}
	h.logs.Store(c.ID, newLogWriter(req.LogPath))
	h.sandbox(sb.ID).add(context.WithoutCancel(ctx), h, c.ID)
	extra := map[string]string{}
	if req.Config.GetStdinOnce() {
		extra[extraStdinOnce] = "true"
	}
	return &handlers.ContainerCreated{ExitFile: h.exitPath(c.ID), Extra: extra, User: handlers.SpecUser(spec)}, nil
}

// guestPhases formats the guest's set-up steps for a log line:
// "cgroup=6.6ms fork=9.4ms ...". The guest chose them: at most
// maxGuestPhases are kept, each name cut to maxGuestPhaseName bytes of
// letters, digits and dashes.
func guestPhases(phases []*api.Phase) string {
	parts := make([]string, 0, min(len(phases), maxGuestPhases))
	for _, p := range phases[:min(len(phases), maxGuestPhases)] {
		name := strings.Map(func(r rune) rune {
			if r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, p.GetName())
		name = name[:min(len(name), maxGuestPhaseName)]
		d := time.Duration(p.GetMs() * float64(time.Millisecond)).Round(100 * time.Microsecond)
		parts = append(parts, name+"="+d.String())
	}
	return strings.Join(parts, " ")
}

const (
	maxGuestPhases    = 16
	maxGuestPhaseName = 32
)

// checkPropagation refuses bidirectional propagation: a mount made in
// the guest cannot reach the host.
func checkPropagation(cfg *runtimeapi.ContainerConfig) error {
	for _, m := range cfg.GetMounts() {
		if m.GetPropagation() == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL {
			return errdefs.FailedPrecondition("mount at %q: bidirectional propagation is not possible in a VM pod", m.GetContainerPath())
		}
	}
	return nil
}

// outputStreams are the streams pumpOutput copies, in the order of
// readOffsets' result.
var outputStreams = []struct {
	api  api.Stream
	name string
}{{api.Stream_STDOUT, "stdout"}, {api.Stream_STDERR, "stderr"}}

// offsetPath holds, for one stream, the offset up to which the
// container's output is in its CRI log (8 bytes, little-endian), so that
// a restarted daemon resumes there: nothing is logged twice, and only a
// line still waiting for its newline at the restart can be lost (the
// agent reports those bytes as dropped). Each stream has its own record:
// a container that writes to one stream only has no other.
func (h *Handler) offsetPath(id, stream string) string {
	return h.exitPath(id) + ".offset-" + stream
}

// readOffsets returns the persisted offsets of id, in outputStreams'
// order; zero for a stream without a record.
func (h *Handler) readOffsets(id string) [2]uint64 {
	var off [2]uint64
	for i, st := range outputStreams {
		if b, err := os.ReadFile(h.offsetPath(id, st.name)); err == nil && len(b) == 8 {
			off[i] = binary.LittleEndian.Uint64(b)
		}
	}
	return off
}

// pumpOutput copies the container's stdout and stderr from the agent into
// the CRI log until both end, from the offsets given, persisting how far
// the log got.
func (h *Handler) pumpOutput(ctx context.Context, c *agentproxy.Client, id string, lw *logWriter, from [2]uint64) {
	var wg sync.WaitGroup
	var complete atomic.Int32
	for i, st := range outputStreams {
		w := &streamWriter{lw: lw, stream: st.name}
		wg.Go(func() {
			out := agentproxy.OutputStream{ContainerID: id, Stream: st.api, Offset: from[i],
				Dropped: func(n uint64) {
					log.G(ctx).Warn("guest dropped container output", "container", id, "stream", st.name, "bytes", n)
				},
			}
			f, err := os.OpenFile(h.offsetPath(id, st.name), os.O_CREATE|os.O_RDWR, 0o600)
			if err != nil {
				log.G(ctx).Warn("persisting log offsets", "container", id, "stream", st.name, "error", err)
			} else {
				defer f.Close()
				var b [8]byte
				out.Progress = func(off uint64) {
					binary.LittleEndian.PutUint64(b[:], off-uint64(lw.partialLen(st.name)))
					f.WriteAt(b[:], 0)
				}
			}
			if end, err := agentproxy.CopyOutput(ctx, c, out, w); err == nil {
				lw.flush(st.name)
				// The flushed last line (no newline) is logged: the
				// offset moves past it, or a reconnect or restart would
				// log it again.
				if out.Progress != nil {
					out.Progress(end)
				}
				complete.Add(1)
			}
		})
	}
	wg.Wait()
	// A stream cut short by a broken connection resumes on the next one
	// (sandboxVM): only output that reached its end ends attach.
	if int(complete.Load()) == len(outputStreams) {
		lw.endOutput()
	}
}

// streamWriter feeds one stream into a logWriter.
type streamWriter struct {
	lw     *logWriter
	stream string
}

func (w *streamWriter) Write(p []byte) (int, error) {
	w.lw.write(w.stream, p)
	return len(p), nil
}

// awaitExit records the container's exit and reports it.
func (h *Handler) awaitExit(ctx context.Context, c *agentproxy.Client, id string) {
	r, err := c.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: id})
	if err != nil {
		return // the VM died: ContainerState reports VMExited
	}
	rec := exitRecord{ExitCode: r.ExitCode, OOMKilled: r.OomKilled, ExitedAt: time.Unix(0, r.ExitedAtUnixNano)}
	if msg := r.GetStartError(); msg != "" {
		rec.Reason, rec.Message = startErrorReason, strings.ToValidUTF8(msg[:min(len(msg), maxExitMessage)], "")
	}
	if b, err := json.Marshal(rec); err == nil {
		tmp := h.exitPath(id) + ".tmp"
		if os.WriteFile(tmp, b, 0o600) == nil {
			os.Rename(tmp, h.exitPath(id))
		}
	}
	if f := h.exited.Load(); f != nil {
		(*f)(id)
	}
}

func (h *Handler) readExit(id string) (*handlers.ContainerState, bool) {
	b, err := os.ReadFile(h.exitPath(id))
	if err != nil {
		return nil, false
	}
	var rec exitRecord
	if json.Unmarshal(b, &rec) != nil {
		return nil, false
	}
	st := &handlers.ContainerState{State: store.ContainerExited, ExitCode: rec.ExitCode, FinishedAt: rec.ExitedAt, Reason: "Completed"}
	switch {
	case rec.Reason != "":
		st.Reason, st.Message = rec.Reason, rec.Message
	case rec.OOMKilled:
		st.Reason = "OOMKilled"
	case rec.ExitCode != 0:
		st.Reason = "Error"
	}
	return st, true
}

func (h *Handler) StartContainer(ctx context.Context, sb *store.Sandbox, c *store.Container) (*handlers.ContainerState, error) {
	v, err := h.connection(ctx, sb)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	if _, err := v.client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: c.ID}); err != nil {
		return nil, fmt.Errorf("starting container in the guest: %w", err)
	}
	return &handlers.ContainerState{State: store.ContainerRunning, StartedAt: started}, nil
}

// StopContainer signals, waits for the recorded exit, then kills.
func (h *Handler) StopContainer(ctx context.Context, c *store.Container, opts handlers.StopOptions) (*handlers.ContainerState, error) {
	if st, ok := h.readExit(c.ID); ok {
		return st, nil
	}
	sb := &store.Sandbox{ID: c.SandboxID}
	v, err := h.connection(ctx, sb)
	if err != nil {
		return vmExited(), nil // no VM: nothing runs
	}
	sig := opts.Signal
	if sig == 0 {
		sig = int(syscall.SIGTERM)
	}
	if opts.Timeout > 0 {
		v.client.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: c.ID, Signal: uint32(sig)})
		if st, ok := h.waitExit(ctx, c.ID, opts.Timeout); ok {
			return st, nil
		}
	}
	v.client.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: c.ID, Signal: uint32(syscall.SIGKILL), All: true})
	if st, ok := h.waitExit(ctx, c.ID, 30*time.Second); ok {
		return st, nil
	}
	return &handlers.ContainerState{State: store.ContainerExited, ExitCode: 137, Reason: "Error", FinishedAt: time.Now(), Message: "no exit code after SIGKILL"}, nil
}

func (h *Handler) waitExit(ctx context.Context, id string, d time.Duration) (*handlers.ContainerState, bool) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		if st, ok := h.readExit(id); ok {
			return st, true
		}
	}
	return nil, false
}

func vmExited() *handlers.ContainerState {
	return &handlers.ContainerState{State: store.ContainerExited, ExitCode: 255, Reason: "VMExited", FinishedAt: time.Now(),
		Message: "the pod's VM is gone"}
}

// RemoveContainer deletes the container in the guest and its share
// entries. Idempotent; a VM that is gone has nothing left to delete.
func (h *Handler) RemoveContainer(ctx context.Context, c *store.Container) error {
	sbID := c.SandboxID
	if sbID == "" {
		return nil
	}
	if v, err := h.connection(ctx, &store.Sandbox{ID: sbID}); err == nil {
		if _, err := v.client.DeleteContainer(ctx, &api.DeleteContainerRequest{ContainerId: c.ID}); err != nil {
			log.G(ctx).Warn("deleting container in the guest", "container", c.ID, "err", err)
		}
	}
	h.forget(sbID, c.ID)
	if lw, ok := h.logs.LoadAndDelete(c.ID); ok {
		lw.(*logWriter).close()
	}
	os.Remove(h.exitPath(c.ID))
	for _, st := range outputStreams {
		os.Remove(h.offsetPath(c.ID, st.name))
	}
	return h.share(sbID).unexpose(c.ID)
}

// ContainerState reads the recorded exit; a running container whose VM is
// gone has exited with reason VMExited.
func (h *Handler) ContainerState(ctx context.Context, c *store.Container) (*handlers.ContainerState, error) {
	if st, ok := h.readExit(c.ID); ok {
		return st, nil
	}
	// From the daemon's state only, no I/O to the guest: this runs for
	// every container of the node on each list.
	if (c.State == store.ContainerRunning || c.State == store.ContainerCreated) && !h.vmRunning(c.SandboxID) {
		return vmExited(), nil
	}
	return &handlers.ContainerState{State: c.State, StartedAt: c.StartedAt}, nil
}

// ExecSync runs cmd inside the container through the agent.
func (h *Handler) ExecSync(ctx context.Context, c *store.Container, req handlers.ExecRequest) (*handlers.ExecResult, error) {
	if len(req.Cmd) == 0 {
		return nil, errdefs.InvalidArgument("exec command is empty")
	}
	v, err := h.connection(ctx, &store.Sandbox{ID: c.SandboxID})
	if err != nil {
		return nil, err
	}
	r, err := v.client.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: c.ID, Args: req.Cmd, TimeoutMs: uint32(req.Timeout.Milliseconds())})
	if err != nil {
		return nil, fmt.Errorf("exec in the guest: %w", err)
	}
	if r.TimedOut {
		return nil, fmt.Errorf("exec %q in %s: %w", strings.Join(req.Cmd, " "), c.ID, context.DeadlineExceeded)
	}
	return &handlers.ExecResult{Stdout: r.Stdout, Stderr: r.Stderr, ExitCode: r.ExitCode}, nil
}

// Stats asks the agent for the container's cgroup usage in the guest.
func (h *Handler) Stats(ctx context.Context, c *store.Container) (*handlers.ContainerStats, error) {
	v, err := h.connection(ctx, &store.Sandbox{ID: c.SandboxID})
	if err != nil {
		return nil, err
	}
	r, err := v.client.StatsContainer(ctx, &api.StatsContainerRequest{ContainerId: c.ID})
	if err != nil {
		return nil, fmt.Errorf("reading guest stats: %w", err)
	}
	return &handlers.ContainerStats{Timestamp: time.Unix(0, r.TimestampUnixNano), CPUUsageNanos: r.CpuUsageNs,
		MemoryUsageBytes: r.MemoryUsageBytes, MemoryWorkingSetBytes: r.MemoryWorkingSetBytes, Processes: r.PidsCurrent,
		Detail: guestStats(r)}, nil
}

// UpdateResources applies new limits in the guest. VMs are not resized:
// limits beyond the VM's memory or vCPUs are refused.
func (h *Handler) UpdateResources(ctx context.Context, c *store.Container, res *specs.LinuxResources) error {
	sbID := c.SandboxID
	v, err := h.connection(ctx, &store.Sandbox{ID: sbID})
	if err != nil {
		return err
	}
	if vm, err := readVMRecord(h.vmDir(sbID)); err == nil {
		if err := vm.admits(res); err != nil {
			return errdefs.FailedPrecondition("updating %s: %w", c.ID, err)
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = v.client.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: c.ID, Resources: b})
	return err
}

// ReopenLog reopens the host log file crivm itself writes.
func (h *Handler) ReopenLog(ctx context.Context, c *store.Container) error {
	lw, ok := h.logs.Load(c.ID)
	if !ok {
		return errdefs.FailedPrecondition("container %s has no log being written", c.ID)
	}
	return lw.(*logWriter).reopen()
}

// guestNamespacePaths are the guest paths of the namespaces req's
// container joins: the pod's, and for pid mode TARGET the target
// container's PID namespace, which the agent resolves.
func guestNamespacePaths(req *handlers.ContainerRequest) map[specs.LinuxNamespaceType]string {
	paths := agentproxy.GuestNamespacePaths(req.SandboxConfig.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_POD)
	if opts := req.Config.GetLinux().GetSecurityContext().GetNamespaceOptions(); opts.GetPid() == runtimeapi.NamespaceMode_TARGET {
		paths[specs.PIDNamespace] = agentproxy.GuestContainerPIDNamespace(opts.GetTargetId())
	}
	return paths
}
