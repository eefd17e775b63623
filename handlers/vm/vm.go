// Package vm is the handler for untrusted pods: one QEMU microVM per pod,
// Kata/Clear-Containers style. The pod's network namespace (made by the
// shared pipeline) holds QEMU and a tap mirrored to the CNI veth; a 9p or
// virtio-fs share carries container rootfs and volumes into the guest; the
// guest agent (PID 1 of the initrd) is reached over virtio-serial + yamux
// (vsock where the host has vhost-vsock) with ttrpc.
//
// # Threat model
//
// The guest is hostile: assume guest root, through a container escape or
// a compromised guest kernel or agent. Everything the guest can write is
// attacker input: the share's contents, every byte on the agent channel,
// every reply of the agent. Hence:
//
//   - The host never resolves a path through a guest-writable directory and
//     never follows a symlink the guest could have placed. The share (see
//     share) is exported read-only at its structure: the guest writes only
//     inside rootfs and writable volumes, which the host never walks; the
//     host builds the structure in a staging tree by descriptor.
//   - The host never trusts the guest's account of what is mounted where:
//     it unmounts only what it mounted, at paths the guest cannot change,
//     reads its own mount table decoded, and removes nothing across a
//     mount point (internal/mountfs).
//   - No unmount in the share propagates to a host mount: every copy in it
//     is a slave of its source, below a private VM dir.
//   - QEMU and virtiofsd run in the pod's own mount namespace
//     (internal/podns), which holds only the system dirs, devices, VM dir
//     and VMM files it is built with; the share's copies exist only there,
//     so none of them is a mount in the host's namespace.
//   - Read-only volumes are read-only on the host side too, recursively;
//     the share is nodev and nosuid, so a device node the guest makes in a
//     writable rootfs does not open a host device through QEMU or
//     virtiofsd.
//   - Which host paths an untrusted pod may mount is decided before this
//     handler runs, by the mount policy beside the trust classifier
//     (trust/), on resolved paths opened by descriptor; the handler mounts
//     from those descriptors (handlers.ContainerRequest.Sources).
//
// The pod spec is hostile too: server/ validates its paths and strings
// before they reach a handler.
package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/utils/cpuset"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/crashpoint"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/metrics"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/vmm"
	"github.com/crivm/crivm/vmm/assets"
	"github.com/crivm/crivm/vmm/hostprobe"
)

var _ handlers.Handler = (*Handler)(nil)

// Options configure a Handler.
type Options struct {
	Name   string
	Config *configs.RuntimeHandler
	// Dir is the handler's state dir under runroot (per-VM dirs with QMP
	// and agent sockets live here, so a restarted daemon finds them).
	Dir string
	// CacheDir holds the extracted vmlinux, initrds and the accel verdict.
	CacheDir string
	Metrics  *metrics.Metrics
	// SeccompUseDefaultWhenEmpty is the config key of that name: a
	// container that asks for no seccomp profile gets the default one.
	SeccompUseDefaultWhenEmpty bool
	// CgroupDriver is cgroup_manager: under "systemd" a VM's cgroup is a
	// transient scope in the pod's slice, else a directory (vmm.Cgroup).
	CgroupDriver string
}

// Handler runs pods in VMs. It holds the agent connections; everything a
// restart needs is in the sandbox records and the per-VM dirs.
type Handler struct {
	name  string
	cfg   *configs.RuntimeHandler
	dir   string
	cache string
	m     *metrics.Metrics
	// seccompDefault is Options.SeccompUseDefaultWhenEmpty.
	seccompDefault bool
	// cgroupDriver is Options.CgroupDriver.
	cgroupDriver string

	// assetsMu guards assets, built on the first pod start.
	assetsMu sync.Mutex
	assets   *guestAssets

	// idMu guards pendingIDs (see claimIdentity).
	idMu       sync.Mutex
	pendingIDs map[string]uint32 // QEMU uid by sandbox ID, until recorded

	// mu guards vms. It is never held across I/O, and never taken while
	// a sandboxVM's mu is held.
	mu  sync.Mutex
	vms map[string]*sandboxVM // by sandbox ID

	// factory holds the VM template (vm_factory = "template").
	factory factory
	// pool holds the booted VMs of vm_factory = "pool".
	pool vmPool
	// baseLog is the daemon's logger for the handler, set by Warm (see
	// background).
	baseLog atomic.Pointer[slog.Logger]

	// logs holds each container's *logWriter, by container ID.
	logs sync.Map
	// exited is the WatchExits callback, set once.
	exited atomic.Pointer[func(string)]

	// dialer, when set, is how a reconnect reaches a VM's agent instead
	// of agentDialer of its dir, and reconnectTimeout, when set, bounds
	// it instead of defaultReconnectTimeout: tests set both, New neither.
	dialer           func(*vmm.VM) agentproxy.Dialer
	reconnectTimeout time.Duration
}

// guestAssets are what every VM boots from.
type guestAssets struct {
	vmlinux, initrd, release string
	accel                    hostprobe.AccelVerdict
	machine, transport       string
	// sharedFS is sharedFS9p or sharedFSVirtio (then virtiofsd is its
	// daemon).
	sharedFS, virtiofsd string
}

// shared_fs values.
const (
	sharedFS9p     = "9p"
	sharedFSVirtio = "virtio-fs"
)

// New checks the configuration the handler cannot run without; the guest
// assets are built on the first pod start, where a failure becomes that
// pod's FailedPrecondition.
func New(opts Options) (*Handler, error) {
	if _, err := os.Stat(opts.Config.HypervisorPath); err != nil {
		return nil, errdefs.FailedPrecondition("handler %q: hypervisor %s: %w", opts.Name, opts.Config.HypervisorPath, err)
	}
	for _, d := range []string{opts.Dir, opts.CacheDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	h := &Handler{name: opts.Name, cfg: opts.Config, dir: opts.Dir, cache: opts.CacheDir, m: opts.Metrics,
		seccompDefault: opts.SeccompUseDefaultWhenEmpty, cgroupDriver: opts.CgroupDriver, vms: map[string]*sandboxVM{}, pendingIDs: map[string]uint32{}}
	crashpoint.OnDrop(h.dropConnections)
	return h, nil
}

// AgentPath finds the guest agent binary for cfg.
func AgentPath(cfg *configs.RuntimeHandler) (string, error) {
	if cfg.AgentPath != "" {
		return cfg.AgentPath, nil
	}
	var candidates []string
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "crivm-agent"))
	}
	candidates = append(candidates, "/usr/libexec/crivm/crivm-agent")
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", errdefs.FailedPrecondition("no guest agent: looked in %v (set agent_path)", candidates)
}

// prepareAssets finds the kernel, extracts its vmlinux, builds the initrd
// and settles the accelerator and transport, once.
func (h *Handler) prepareAssets(ctx context.Context) (*guestAssets, error) {
	h.assetsMu.Lock()
	defer h.assetsMu.Unlock()
	if h.assets != nil {
		return h.assets, nil
	}
	kernel, err := assets.FindKernel(h.cfg.Kernel)
	if err != nil {
		return nil, errdefs.FailedPrecondition("handler %q: %w", h.name, err)
	}
	agent, err := AgentPath(h.cfg)
	if err != nil {
		return nil, err
	}
	a := &guestAssets{sharedFS: sharedFS9p}
	modules := assets.BaseGuestModules
	if h.cfg.SharedFS == sharedFSVirtio {
		if a.virtiofsd, err = vmm.FindVirtiofsd(h.cfg.VirtioFSDaemon); err != nil {
			if h.cfg.VirtioFSDaemon != "" {
				return nil, errdefs.FailedPrecondition("handler %q: virtio_fs_daemon: %w", h.name, err)
			}
			log.G(ctx).Warn("shared_fs is virtio-fs but no virtiofsd is installed: pods share files over 9p", "reason", err)
		} else {
			a.sharedFS = sharedFSVirtio
			modules = slices.Concat(modules, assets.VirtioFSGuestModules)
		}
	}
	if a.vmlinux, err = assets.Vmlinux(ctx, kernel, h.cache); err != nil {
		return nil, errdefs.FailedPrecondition("extracting vmlinux from %s: %w", kernel, err)
	}
	if a.release, err = assets.KernelRelease(kernel); err != nil {
		return nil, errdefs.FailedPrecondition("reading the release of %s: %w", kernel, err)
	}
	if a.accel, err = hostprobe.ProbeAccel(ctx, hostprobe.ProbeOptions{QEMUPath: h.cfg.HypervisorPath, Kernel: kernel, CacheDir: h.cache, Requested: h.cfg.Accel}); err != nil {
		return nil, errdefs.FailedPrecondition("handler %q: %w", h.name, err)
	}
	if a.accel.Accel == vmm.AccelTCG {
		log.G(ctx).Warn("VMs run under TCG (software emulation): expect multi-second boots", "reason", a.accel.Reason)
	}
	var why string
	if a.machine, why = vmm.MachineFor(h.cfg.MachineType, a.accel.Accel); why != "" {
		log.G(ctx).Warn(why, "handler", h.name)
	}
	transport, why, err := hostprobe.ChooseTransport(h.cfg.AgentTransport)
	if err != nil {
		return nil, errdefs.FailedPrecondition("handler %q: %w", h.name, err)
	}
	if transport == agentproxy.TransportVsock {
		modules = slices.Concat(modules, assets.VsockGuestModules)
	}
	log.G(ctx).Info("agent transport chosen", "transport", transport, "why", why)
	if a.initrd, err = assets.Initrd(ctx, assets.InitrdOptions{AgentBinary: agent, KernelRelease: a.release, CacheDir: h.cache, Modules: modules}); err != nil {
		return nil, errdefs.FailedPrecondition("building the guest initrd: %w", err)
	}
	a.transport = transport
	h.assets = a
	log.G(ctx).Info("guest assets ready", "vmlinux", a.vmlinux, "initrd", a.initrd, "release", a.release, "accel", a.accel.Accel, "transport", transport, "shared_fs", a.sharedFS)
	return a, nil
}

// vmDir is sandbox id's VM dir: its name is the first 32 characters of
// id, a dir, or a symlink to the pooled VM's dir the pod took (see
// adoptPooled), which vmDir follows. Only the daemon writes the handler's
// dir.
func (h *Handler) vmDir(id string) string { return h.vmDirNamed(id[:32]) }

// vmDirNamed is the VM dir the entry name of the handler's dir stands
// for: the pooled VM's dir when name is a symlink to one, else name.
func (h *Handler) vmDirNamed(name string) string {
	d := filepath.Join(h.dir, name)
	if t, err := os.Readlink(d); err == nil && isPoolDirName(t) {
		return filepath.Join(h.dir, t)
	}
	return d
}

// isPoolDirName holds for the names of pooled VMs' dirs.
func isPoolDirName(s string) bool {
	key, ok := strings.CutPrefix(s, poolDirPrefix)
	return ok && isVMDirName(key)
}

// share is the sandbox's file share with its guest (9p or virtio-fs).
func (h *Handler) share(id string) share { return share{dir: h.vmDir(id)} }

// tapName is QEMU's tap in the pod's netns, mirrored to vethName, the
// CNI's interface.
const (
	tapName  = "tap0"
	vethName = "eth0"
)

// vmRecordFile in a VM's dir records how it was started (vmRecord as
// JSON), for the daemon that reattaches to it and for resource updates.
const vmRecordFile = "vm.json"

// vmRecord is what a VM was booted with.
type vmRecord struct {
	MemoryMiB int `json:"memory_mib"`
	VCPUs     int `json:"vcpus"`
	// VsockCID is the guest's CID when the agent is reached over vsock;
	// zero: over the virtio-serial socket.
	VsockCID uint32 `json:"vsock_cid,omitempty"`
	// VMMUID is the uid (and gid) QEMU runs as; see claimIdentity.
	VMMUID uint32 `json:"vmm_uid,omitempty"`
	// Template is the key of the template the VM is a clone of; empty:
	// it booted.
	Template string `json:"template,omitempty"`
}

func writeVMRecord(dir string, r vmRecord) error {
	b, _ := json.Marshal(r)
	return os.WriteFile(filepath.Join(dir, vmRecordFile), b, 0o600)
}

func readVMRecord(dir string) (vmRecord, error) {
	var r vmRecord
	b, err := os.ReadFile(filepath.Join(dir, vmRecordFile))
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}

// admits fails for limits the VM cannot give: more memory than it has, a
// CPU quota above its vCPUs, or CPUs it does not have.
func (s vmRecord) admits(res *specs.LinuxResources) error {
	if res == nil {
		return nil
	}
	if m := res.Memory; m != nil && m.Limit != nil && *m.Limit > int64(s.MemoryMiB)<<20 {
		return fmt.Errorf("memory limit %d MiB exceeds the VM's %d MiB (VMs are not resized)", *m.Limit>>20, s.MemoryMiB)
	}
	if c := res.CPU; c != nil {
		if c.Quota != nil && *c.Quota > 0 && c.Period != nil && *c.Period > 0 && *c.Quota > int64(*c.Period)*int64(s.VCPUs) {
			return fmt.Errorf("CPU quota of %.2f CPUs exceeds the VM's %d vCPUs (VMs are not resized)", float64(*c.Quota)/float64(*c.Period), s.VCPUs)
		}
		if c.Cpus != "" {
			set, err := cpuset.Parse(c.Cpus)
			if err != nil {
				return fmt.Errorf("cpuset %q: %w", c.Cpus, err)
			}
			if l := set.List(); len(l) > 0 && l[len(l)-1] >= s.VCPUs {
				return fmt.Errorf("cpuset %q names CPUs the VM's %d vCPUs do not have", c.Cpus, s.VCPUs)
			}
		}
	}
	return nil
}

// agentDialer reaches the agent of the VM in dir the way it was started.
func agentDialer(dir string) agentproxy.Dialer {
	if r, err := readVMRecord(dir); err == nil && r.VsockCID != 0 {
		return &agentproxy.VsockDialer{CID: r.VsockCID}
	}
	return &agentproxy.SerialDialer{Path: filepath.Join(dir, vmm.AgentSocketName)}
}

// vsockCID picks the guest CID of a sandbox's VM: derived from its id, so
// it is stable, and moved by attempt when QEMU finds it taken. CIDs 0-2
// are reserved.
func vsockCID(id string, attempt int) uint32 {
	h := fnv.New32a()
	h.Write([]byte(id))
	return 3 + (h.Sum32()+uint32(attempt)*7919)%(math.MaxUint32-3)
}

// PortForward relays the stream to port on the guest's loopback through a
// transport stream the agent serves.
func (h *Handler) PortForward(ctx context.Context, sb *store.Sandbox, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	v, err := h.connection(ctx, sb)
	if err != nil {
		return err
	}
	conn, err := v.client.DialPort(ctx, port)
	if err != nil {
		return fmt.Errorf("port-forward to %d in sandbox %s: %w", port, sb.ID, err)
	}
	defer conn.Close()
	handlers.Splice(stream, conn)
	return nil
}

// vmStopTimeout bounds the guest's power-off before QEMU is killed.
const vmStopTimeout = 10 * time.Second

// Features: recursive read-only volumes are read-only on the host side of
// the share in every submount (and in the guest's bind); user namespaces
// are not offered in the guest yet.
func (h *Handler) Features() handlers.Features {
	return handlers.Features{RecursiveReadOnlyMounts: true}
}
