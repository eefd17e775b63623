package vm

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/steps"
	"github.com/crivm/crivm/vmm"
)

// VM factories (vm_factory).
//
// With "template", the handler boots one template VM per templateSpec (the
// handler's default size on the current guest assets), waits until its
// agent waits for a host, saves its device state, and keeps two sealed
// memfds: the guest RAM and the device state (vmm.SealTemplateRAM). A pod
// that fits the template (memory and vCPUs no larger, its pod cgroup able
// to hold the template's RAM) gets a clone: QEMU maps the RAM
// copy-on-write and loads the state; the agent's first call is Resume
// (host entropy, host clock), before CreateSandbox gives the clone its
// pod's MAC, addresses, hostname and share. A pod that does not fit boots,
// logged and counted (crivm_vm_starts_total).
//
// Templates live in the daemon's memory only (their memfds): a restart
// builds them again on first use; running clones keep their own mapping.
// A template whose inputs changed (assets, size) is a different spec, and
// replaces the old one, whose memfds close with the last clone start that
// holds them.

const (
	factoryNone     = "none"
	factoryTemplate = "template"
)

// templateMAC is every template's NIC address, and so every clone's at
// resume; CreateSandbox finds the NIC by it (BootMac) and gives it the
// pod's.
var templateMAC = net.HardwareAddr{0x02, 0xc7, 0x7e, 0x00, 0x00, 0x01}

// templateWait bounds a template build: a cold boot under TCG takes 2-6 s
// here, 30 s on a loaded host is possible.
const templateWait = 90 * time.Second

// templateRetry is how long a failed template build is remembered: pods
// boot meanwhile instead of retrying it each.
const templateRetry = time.Minute

// templateSpec is what a template's machine is made of. Clones must match
// it device for device, so it is the template's key.
type templateSpec struct {
	QEMU, Accel, Machine, Kernel, Initrd string
	VCPUs, MemoryMiB, TBSizeMiB          int
}

func (s templateSpec) key() string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// vmTemplate is one saved template VM.
type vmTemplate struct {
	spec templateSpec
	// built is closed when the build ended; err, ram and state are set
	// before and read-only after.
	built    chan struct{}
	err      error
	failedAt time.Time
	ram      *os.File // sealed guest RAM
	state    *os.File // sealed device state
}

// factory holds a handler's templates.
type factory struct {
	// mu guards cur. It is never held across I/O; a build runs without
	// it and publishes through vmTemplate.built.
	mu  sync.Mutex
	cur *vmTemplate // the template of the current spec; nil: none yet
}

// openState opens the template's device state as a new file description
// (a clone's QEMU reads it from offset 0, whatever other clones read).
func (t *vmTemplate) openState() (*os.File, error) {
	return os.Open(fmt.Sprintf("/proc/self/fd/%d", t.state.Fd()))
}

// cloneSource is the template a pod's VM is cloned from, or why not.
type cloneSource struct {
	tpl *vmTemplate
	// reason a pod under a factory boots instead (a metric label).
	reason string
}

// templateFor returns the template for the handler's current spec,
// building it on first use (the caller waits for the build, bounded by
// ctx). A pod needing more than the template holds boots.
func (h *Handler) templateFor(ctx context.Context, a *guestAssets, memMiB, vcpus int) cloneSource {
	if h.cfg.VMFactory != factoryTemplate {
		return cloneSource{}
	}
	if reason := notCloneable(a); reason != "" {
		return cloneSource{reason: reason}
	}
	spec := templateSpec{
		QEMU: h.cfg.HypervisorPath, Accel: a.accel.Accel, Machine: a.machine,
		Kernel: a.vmlinux, Initrd: a.initrd,
		VCPUs: h.cfg.DefaultVCPUs, MemoryMiB: h.cfg.DefaultMemoryMiB, TBSizeMiB: h.tbSizeMiB(a.accel.Accel),
	}
	if memMiB > spec.MemoryMiB || vcpus > spec.VCPUs {
		return cloneSource{reason: "too_big"}
	}
	t := h.template(ctx, spec)
	select {
	case <-t.built:
	case <-ctx.Done():
		return cloneSource{reason: "template_building"}
	}
	if t.err != nil {
		return cloneSource{reason: "template_failed"}
	}
	return cloneSource{tpl: t}
}

// notCloneable is why VMs on assets a cannot be clones (a metric label),
// or "". A template is saved with its devices; QEMU 7.2 cannot migrate a
// vhost-user-fs device, and virtiofsd would map the template's RAM, not a
// clone's private copy of it. vsock clones are not built: no machine here
// has /dev/vhost-vsock to test them.
func notCloneable(a *guestAssets) string {
	switch {
	case a.transport != agentproxy.TransportSerial:
		return "vsock"
	case a.sharedFS != sharedFS9p:
		return "virtio_fs"
	}
	return ""
}

// template returns the template of spec, starting its build when there is
// none (or the last one failed more than templateRetry ago, or was of
// another spec).
func (h *Handler) template(ctx context.Context, spec templateSpec) *vmTemplate {
	h.factory.mu.Lock()
	defer h.factory.mu.Unlock()
	if t := h.factory.cur; t != nil && t.spec == spec {
		select {
		case <-t.built:
			if t.err == nil || time.Since(t.failedAt) < templateRetry {
				return t
			}
		default:
			return t
		}
	}
	t := &vmTemplate{spec: spec, built: make(chan struct{})}
	h.factory.cur = t
	// The build outlives the pod start that asked for it.
	bctx, cancel := context.WithTimeout(h.background(ctx), templateWait)
	go func() {
		defer cancel()
		defer close(t.built)
		start := time.Now()
		if t.err = h.buildTemplate(bctx, t); t.err != nil {
			t.failedAt = time.Now()
			log.G(bctx).Warn("building the VM template failed: VM pods boot until it is retried", "template", spec.key(), "retry_after", templateRetry, "err", t.err)
			return
		}
		log.G(bctx).Info("VM template ready", "template", spec.key(), "memory_mib", spec.MemoryMiB, "vcpus", spec.VCPUs, "took", time.Since(start).Round(time.Millisecond))
	}()
	return t
}

// templateFailed replaces t, whose clone failed to start, by a failed
// template of its spec: pods boot until templateRetry has passed and a new
// build is tried.
func (h *Handler) templateFailed(t *vmTemplate, err error) {
	h.factory.mu.Lock()
	defer h.factory.mu.Unlock()
	if h.factory.cur != t {
		return
	}
	failed := &vmTemplate{spec: t.spec, built: make(chan struct{}), err: err, failedAt: time.Now()}
	close(failed.built)
	h.factory.cur = failed
}

// startClone starts a clone of t with mc's pod parts (its dir, tap,
// cgroup, namespace, uid) and t's machine, and resumes it. On failure
// nothing of it runs.
func startClone(ctx context.Context, mc vmm.MachineConfig, t *vmTemplate) (vmm.MachineConfig, *vmm.VM, error) {
	mc.VCPUs, mc.MemoryMiB = t.spec.VCPUs, t.spec.MemoryMiB
	mc.RAM = &vmm.RAMFile{File: t.ram}
	mc.VMGenID = true
	mc.FreePageReporting = false
	mc.Taps = slices.Clone(mc.Taps)
	mc.Taps[0].MAC = templateMAC.String()
	in, err := t.openState()
	if err != nil {
		return mc, nil, fmt.Errorf("opening the template's state: %w", err)
	}
	defer in.Close()
	mc.Incoming = in
	vm, err := vmm.Start(ctx, mc)
	if err != nil {
		return mc, nil, err
	}
	if err := vm.LoadState(ctx); err != nil {
		return mc, nil, errors.Join(fmt.Errorf("loading the template's state: %w", err), vm.Kill(context.WithoutCancel(ctx)))
	}
	return mc, vm, nil
}

// templatesDir holds a template's VM dir while it is built.
func (h *Handler) templatesDir() string { return filepath.Join(h.dir, "templates") }

// buildTemplate boots t's VM as the pods' VMs boot (its own unprivileged
// uid, a mount namespace holding only its files, an empty share), but
// with no network (an unplugged NIC) and its RAM in a memfd, then saves
// and seals it. Its VM dir is gone afterwards, built or not.
func (h *Handler) buildTemplate(ctx context.Context, t *vmTemplate) error {
	key := t.spec.key()
	ctx = log.With(ctx, "template", key)
	dir := filepath.Join(h.templatesDir(), key)
	sh := share{dir: dir}
	var (
		ram, state *os.File
		user       *vmm.Identity
		vm         *vmm.VM
		// built: the RAM and state outlive the steps' undo, which then
		// releases the VM dir, the namespace and the uid claim only.
		built bool
	)
	undo, err := steps.Run(ctx, []steps.Step{
		{Name: "making the template's dir and share", Do: func(ctx context.Context) (steps.Cleanup, error) {
			// A previous daemon's, of this spec or another: their memfds
			// died with it.
			entries, _ := os.ReadDir(h.templatesDir())
			for _, e := range entries {
				if err := (share{dir: filepath.Join(h.templatesDir(), e.Name())}).destroy(); err != nil {
					return nil, fmt.Errorf("removing an old template's dir: %w", err)
				}
			}
			if err := sh.create([]string{t.spec.QEMU, t.spec.Kernel, t.spec.Initrd}); err != nil {
				return nil, errors.Join(err, sh.destroy())
			}
			return func(context.Context) error { return sh.destroy() }, nil
		}},
		{Name: "choosing the template QEMU's uid", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var release func()
			var err error
			if user, release, err = h.claimIdentity("template-"+key, true); err != nil {
				return nil, err
			}
			return func(context.Context) error { release(); return nil }, nil
		}},
		{Name: "making the template's RAM", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var err error
			if ram, err = vmm.NewTemplateRAM(key, t.spec.MemoryMiB); err != nil {
				return nil, err
			}
			return func(context.Context) error {
				if built {
					return nil
				}
				return ram.Close()
			}, nil
		}},
		{Name: "booting the template", Do: func(ctx context.Context) (steps.Cleanup, error) {
			mc := h.cloneMachine(t.spec, dir, sh)
			mc.Name = "crivm-template-" + key[:8]
			mc.Taps = []vmm.Tap{{MAC: templateMAC.String(), Unplugged: true}}
			mc.MountNS = sh.pin()
			mc.User = user
			mc.RAM = &vmm.RAMFile{File: ram, Shared: true}
			var err error
			if vm, err = vmm.Start(ctx, mc); err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { return vm.Kill(ctx) }, nil
		}},
		{Name: "waiting for the template's agent", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if err := vm.WaitAgentPort(ctx); err != nil {
				return nil, fmt.Errorf("%w (console: %s)", err, tailConsole(vm))
			}
			return nil, nil
		}},
		{Name: "saving the template", Do: func(ctx context.Context) (steps.Cleanup, error) {
			fd, err := unix.MemfdCreate("crivm-template-state-"+key, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
			if err != nil {
				return nil, fmt.Errorf("creating the state file: %w", err)
			}
			state = os.NewFile(uintptr(fd), "crivm-template-state-"+key)
			if err := vm.SaveState(ctx, state); err != nil {
				state.Close()
				return nil, err
			}
			return func(context.Context) error {
				if built {
					return nil
				}
				return state.Close()
			}, nil
		}},
		{Name: "stopping the template VM", Do: func(ctx context.Context) (steps.Cleanup, error) {
			return nil, vm.Kill(ctx)
		}},
		{Name: "sealing the template", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if err := vmm.SealTemplateRAM(ram); err != nil {
				return nil, err
			}
			return nil, vmm.SealTemplateRAM(state)
		}},
	})
	if err != nil {
		return err
	}
	built = true
	t.ram, t.state = ram, state
	if err := undo.Run(ctx); err != nil {
		log.G(ctx).Warn("the template is saved, but its VM dir was not released", "err", err)
	}
	return nil
}

// cloneMachine is the machine of a template of spec and of its clones:
// every device a clone loads state into must be there, in the same order,
// as the template had it.
func (h *Handler) cloneMachine(spec templateSpec, dir string, sh share) vmm.MachineConfig {
	return vmm.MachineConfig{
		QEMUPath:    spec.QEMU,
		Accel:       spec.Accel,
		MachineType: spec.Machine,
		VCPUs:       spec.VCPUs,
		MemoryMiB:   spec.MemoryMiB,
		TBSizeMiB:   spec.TBSizeMiB,
		Kernel:      spec.Kernel,
		Initrd:      spec.Initrd,
		Dir:         dir,
		SharedDirs:  []vmm.SharedDir{{Tag: agentproxy.SharedTag, HostPath: sh.export()}},
		VMGenID:     true,
		MemMerge:    h.cfg.KSM,
	}
}

// resumeEntropy is how many random bytes a clone's agent gets at Resume.
const resumeEntropy = 64

// resumeOptions are what a clone's Resume does beyond entropy and clock.
type resumeOptions struct {
	// warm: run the guest's container launch path once, for a clone that
	// waits in a pool (off a pod's critical path, it takes what the first
	// container would take to translate that code).
	warm bool
}

// resumeClone is a clone's first agent call: host entropy and clock, and
// what opts asks.
func resumeClone(ctx context.Context, c *agentproxy.Client, opts resumeOptions) error {
	b := make([]byte, resumeEntropy)
	rand.Read(b)
	if _, err := c.Resume(ctx, &api.ResumeRequest{Entropy: b, RealtimeUnixNano: time.Now().UnixNano(), Warm: opts.warm}); err != nil {
		return fmt.Errorf("resuming the clone: %w", err)
	}
	return nil
}

// tailConsole is the end of a VM's console, for errors.
func tailConsole(vm *vmm.VM) string {
	b, err := os.ReadFile(vm.ConsoleLog())
	if err != nil {
		return vm.ConsoleLog()
	}
	if len(b) > 1024 {
		b = b[len(b)-1024:]
	}
	return string(b)
}

var _ handlers.Warmer = (*Handler)(nil)

// Warm starts bounding the handler's VMs' logs until ctx ends, and
// prepares the handler's factory ahead of the first pod: the template of
// its default size (vm_factory = "template"), or, with a vm_pool_size,
// the pool (of booted VMs, or of clones under "template"), after removing
// the pooled VMs a previous daemon left.
func (h *Handler) Warm(ctx context.Context) {
	h.baseLog.Store(log.G(ctx).With("handler", h.name))
	go h.trimLogs(log.WithLogger(ctx, h.baseLog.Load()))
	if h.cfg.VMFactory != factoryTemplate && h.cfg.VMFactory != factoryPool {
		return
	}
	if h.pooling() {
		h.sweepPool(ctx)
	}
	a, err := h.prepareAssets(ctx)
	if err != nil {
		log.G(ctx).Warn("preparing guest assets for the VM factory", "handler", h.name, "err", err)
		return
	}
	if h.pooling() {
		h.fillPool(h.background(ctx), a)
		return
	}
	h.templateFor(ctx, a, 0, 0)
}

// background is ctx without its cancellation and, once Warm has run, with
// the handler's own logger instead of the request's: work a request
// starts for later pods (a template build, a pool refill) outlives it and
// is not its.
func (h *Handler) background(ctx context.Context) context.Context {
	bctx := context.WithoutCancel(ctx)
	if l := h.baseLog.Load(); l != nil {
		bctx = log.WithLogger(bctx, l)
	}
	return bctx
}

// Cool kills the pooled VMs no pod took.
func (h *Handler) Cool(ctx context.Context) {
	if h.pooling() {
		h.coolPool(ctx)
	}
}
