// Package handlers defines the one interface both pod handlers implement:
// runc (plain OCI containers under conmon, handlers/runc) and vm (a microVM
// per pod, handlers/vm). server/ drives a pod through it after the shared
// pipeline (trust, image, netns/CNI, spec generation inputs) has run.
package handlers

import (
	"context"
	"io"
	"os"
	"time"

	imgspec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/store"
)

// Handler runs pods and their containers. Every method is context-first and
// returns domain errors (internal/errdefs classes). Methods that take store
// records never persist them: the caller owns the store and persists what a
// method returns.
type Handler interface {
	// StartSandbox starts the pod's isolation boundary in req.NetNSPath:
	// runc runs the infra (pause) container, or pins the pod's IPC and UTS
	// namespaces when it needs none (drop_infra_ctr); vm boots or clones
	// the VM and connects to its agent.
	// On failure it leaves nothing running.
	StartSandbox(ctx context.Context, req *SandboxRequest) (*SandboxStarted, error)
	// StopSandbox stops the boundary; the caller has stopped the containers.
	// Idempotent.
	StopSandbox(ctx context.Context, sb *store.Sandbox) error
	// RemoveSandbox releases what StartSandbox created. Idempotent.
	RemoveSandbox(ctx context.Context, sb *store.Sandbox) error

	// CreateContainer creates (does not start) a container in sb.
	CreateContainer(ctx context.Context, sb *store.Sandbox, req *ContainerRequest) (*ContainerCreated, error)
	StartContainer(ctx context.Context, sb *store.Sandbox, c *store.Container) (*ContainerState, error)
	// StopContainer sends the stop signal, waits up to opts.Timeout, then
	// kills. Idempotent on a stopped container.
	StopContainer(ctx context.Context, c *store.Container, opts StopOptions) (*ContainerState, error)
	// RemoveContainer removes a stopped container's runtime state.
	// Idempotent.
	RemoveContainer(ctx context.Context, c *store.Container) error
	// ContainerState reports the container's current state from the
	// runtime (exit files, the agent), for the caller to persist.
	ContainerState(ctx context.Context, c *store.Container) (*ContainerState, error)

	ExecSync(ctx context.Context, c *store.Container, req ExecRequest) (*ExecResult, error)
	Exec(ctx context.Context, c *store.Container, req StreamRequest) error
	Attach(ctx context.Context, c *store.Container, req StreamRequest) error
	PortForward(ctx context.Context, sb *store.Sandbox, port int32, stream io.ReadWriteCloser) error

	UpdateResources(ctx context.Context, c *store.Container, res *specs.LinuxResources) error
	Stats(ctx context.Context, c *store.Container) (*ContainerStats, error)
	// SandboxStats is what the pod's boundary itself costs the host, when
	// that is more than its containers: a VM pod's QEMU and virtiofsd
	// (guest RAM, device model, translation cache), read from the VM's
	// cgroup. Nil when the pod is the sum of its containers (runc).
	SandboxStats(ctx context.Context, sb *store.Sandbox) (*ContainerStats, error)
	ReopenLog(ctx context.Context, c *store.Container) error

	// Features are what this handler can do beyond the CRI baseline, for
	// RuntimeStatus's runtime_handlers.
	Features() Features

	// WatchExits calls exited with the ID of each container or sandbox of
	// this handler whose process exits, from a goroutine, until ctx ends.
	WatchExits(ctx context.Context, exited func(id string)) error
	// Restore reattaches to a ready sandbox that a previous daemon started
	// (its monitor, VM or agent) and to its containers that have not
	// exited, so that they are managed and watched again. It never starts
	// or stops anything.
	Restore(ctx context.Context, sb *store.Sandbox, ctrs []*store.Container) error
}

// OrphanSweeper is implemented by an owner of per-pod or per-container
// host state (a handler, the image store, the pod network) that can find
// that state without a store record. The daemon's start-up sweep
// releases what no record and no intent names (server.Sweep), before
// anything else runs.
type OrphanSweeper interface {
	// Owned lists the IDs of everything the owner holds on the host,
	// provably crivm's (in crivm's own directories, by its naming, with
	// its marker): sandbox, container or image volume IDs, or the first 32
	// characters of one where that is all a name carries (a VM dir).
	Owned(ctx context.Context) ([]Owned, error)
	// ReleaseOrphan releases what the owner holds for id, as Owned listed
	// it: kills its processes, unmounts, removes its files. Idempotent;
	// an ID whose state does not prove it crivm's is refused.
	ReleaseOrphan(ctx context.Context, id string) error
}

// Owned is one ID's state an OrphanSweeper found.
type Owned struct {
	ID string
	// Found says what is there, for the log ("bundle, runtime state,
	// conmon 1234 running").
	Found string
}

// Features are optional CRI features a handler supports.
type Features struct {
	// RecursiveReadOnlyMounts: a mount with recursive_read_only is
	// read-only in every submount.
	RecursiveReadOnlyMounts bool
	// UserNamespaces: pods may ask for a user namespace.
	UserNamespaces bool
}

// SandboxRequest is what StartSandbox needs.
type SandboxRequest struct {
	Sandbox *store.Sandbox
	Config  *runtimeapi.PodSandboxConfig
	// Dir is the pod's private directory under runroot; handlers put
	// their files there. It exists.
	Dir string
	// NetNSPath is the pod's network namespace ("" for host network).
	NetNSPath string
	// WaitNetwork blocks until CNI has set the namespace up (it runs while
	// StartSandbox does) and fails when it failed. A handler that needs
	// the pod's interfaces calls it first. It returns at once for host
	// network.
	WaitNetwork func(ctx context.Context) error
	// ResolvConfPath, HostsPath and HostnamePath are prepared files to
	// bind into every container. ShmPath is the pod's /dev/shm mount.
	ResolvConfPath, HostsPath, HostnamePath, ShmPath string
	// PauseRootfs and PauseImage are the infra container's mounted rootfs and
	// image config (runc only; vm ignores them).
	PauseRootfs string
	PauseImage  *imgspec.ImageConfig
}

// SandboxStarted is what the caller persists after StartSandbox.
type SandboxStarted struct {
	Process *store.Process
	Extra   map[string]string
}

// ContainerRequest is what CreateContainer needs.
type ContainerRequest struct {
	Container     *store.Container
	Config        *runtimeapi.ContainerConfig
	SandboxConfig *runtimeapi.PodSandboxConfig
	Image         *imgspec.ImageConfig
	Rootfs        string
	// LogPath is the absolute CRI log path ("" for none).
	LogPath string
	// ResolvConfPath etc. are the pod's prepared files (see SandboxRequest).
	ResolvConfPath, HostsPath, HostnamePath, ShmPath string
	// Untrusted is the pod's trust verdict, typed; handlers never read it
	// back from annotations.
	Untrusted bool
	// Sources is set for untrusted pods: for each CRI mount's host_path,
	// the source the mount policy allowed. A handler mounts from its fd
	// and never resolves the path again. The caller closes the files after
	// CreateContainer returns.
	Sources map[string]HostSource
	// ImageVolumes are the container's image volumes, by the index of
	// their mount in Config.Mounts, for trusted and untrusted pods alike.
	// The caller closes the files after CreateContainer returns.
	ImageVolumes map[int]ImageVolume
	// Target is, for a container whose PID namespace mode is TARGET (an
	// ephemeral container of `kubectl debug --target`), the host process
	// of the running container of the same pod whose PID namespace it
	// joins (nil when it has none on the host: a VM pod's).
	Target *store.Process
}

// ImageVolume is an image volume the server mounted: crivm's own storage,
// not a hostPath, so the mount policy does not judge it. Path is what the
// container gets, the image's root or the image_sub_path inside it
// (resolved without leaving the image), and File its O_PATH descriptor. It
// is read-only: a handler mounts it read-only, from File where it mounts by
// descriptor.
type ImageVolume struct {
	Path string
	File *os.File
}

// ImageVolumePaths maps each image volume's mount index to its Path, for
// oci.ContainerSpecInput.
func (r *ContainerRequest) ImageVolumePaths() map[int]string {
	out := make(map[int]string, len(r.ImageVolumes))
	for i, v := range r.ImageVolumes {
		out[i] = v.Path
	}
	return out
}

// HostSource is a mount source checked by the mount policy: Resolved is the
// path its O_PATH descriptor File was found at when the policy judged it,
// so a symlink swapped after the check is not followed.
type HostSource struct {
	Resolved string
	File     *os.File
}

// ContainerCreated is what the caller persists after CreateContainer.
type ContainerCreated struct {
	Process  *store.Process
	ExitFile string
	Extra    map[string]string
	// User is the identity the spec starts the container's process with
	// (ContainerStatus.user reports it).
	User *store.User
}

// SpecUser is the store form of a spec's process user.
func SpecUser(s *specs.Spec) *store.User {
	if s == nil || s.Process == nil {
		return nil
	}
	u := s.Process.User
	return &store.User{UID: u.UID, GID: u.GID, AdditionalGids: append([]uint32(nil), u.AdditionalGids...)}
}

// StopOptions bound a stop.
type StopOptions struct {
	Timeout time.Duration
	// Signal is the image's stop signal; zero means SIGTERM.
	Signal int
}

// ContainerState is a container's state as the runtime sees it.
type ContainerState struct {
	State      store.ContainerState
	StartedAt  time.Time
	FinishedAt time.Time
	ExitCode   int32
	// Reason is OOMKilled, Completed or Error once exited.
	Reason  string
	Message string
	Process *store.Process
}

// Apply copies s into the record c.
func (s *ContainerState) Apply(c *store.Container) {
	c.State = s.State
	if !s.StartedAt.IsZero() {
		c.StartedAt = s.StartedAt
	}
	if !s.FinishedAt.IsZero() {
		c.FinishedAt = s.FinishedAt
	}
	// An exit time read from a file's mtime (conmon's exit file) comes
	// from the kernel's coarse clock and can trail the start time taken
	// just before a process that exits at once: it never ended before it
	// started.
	if !c.FinishedAt.IsZero() && c.FinishedAt.Before(c.StartedAt) {
		c.FinishedAt = c.StartedAt
	}
	c.ExitCode, c.Reason, c.Message = s.ExitCode, s.Reason, s.Message
	if s.Process != nil {
		c.Process = s.Process
	}
}

// ExecRequest is a synchronous exec.
type ExecRequest struct {
	Cmd     []string
	Timeout time.Duration // zero: none
}

// ExecResult is the outcome of ExecSync.
type ExecResult struct {
	Stdout, Stderr []byte
	ExitCode       int32
}

// StreamRequest is an exec or attach over the streaming server.
type StreamRequest struct {
	Cmd    []string // exec only
	Stdin  io.Reader
	Stdout io.WriteCloser
	Stderr io.WriteCloser
	TTY    bool
	Resize <-chan remotecommand.TerminalSize
}

// ContainerStats are a container's resource usage.
type ContainerStats struct {
	Timestamp time.Time
	// CPUUsageNanos is cumulative CPU time.
	CPUUsageNanos uint64
	// MemoryWorkingSetBytes is usage minus inactive file pages.
	MemoryWorkingSetBytes uint64
	MemoryUsageBytes      uint64
	// Processes is the number of processes (pids.current).
	Processes uint64
	// Detail is everything the handler measured, for the CRI metrics:
	// runc reads the host cgroup and /proc, vm the agent's account of the
	// guest's. Nil when the handler has none.
	Detail *cgroupstat.Stats
}
