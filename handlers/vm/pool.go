package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/steps"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/vmm"
)

// VM pool (vm_factory = "pool", or "template" with a vm_pool_size).
//
// The handler keeps vm_pool_size VMs of its default size ready ahead of
// pods, on the current guest assets, one at a time: under "pool" booted
// VMs, under "template" clones of the template, resumed (their entropy
// and clock pushed: as unlike their siblings as a clone started for its
// pod) and warmed (resumeClone). A pooled VM is made as a pod's VM boots
// (a VM dir, mount namespace and share of its own, its own QEMU uid, its
// agent waited for), except for what only a pod gives it: its NIC has no
// host side (an unplugged hub port), its QEMU runs in an empty network
// namespace of its own, and it runs in a cgroup of its own named for its
// pool ID (below CgroupDefaultParent, or a scope in system.slice under
// systemd). Pooled booted VMs share nothing with each other, pooled clones
// what clones of one template share (docs/security.md); each serves one
// pod and dies with it.
//
// A pod that fits (memory and vCPUs no larger, its cgroup able to hold
// the VM) takes one: the pod's VM dir name becomes a symlink to the pooled
// VM's dir (vmDir follows it), QEMU moves to the pod's cgroup, the pod's
// tap is attached to the NIC (under virtio-fs, the pooled VM's virtiofsd
// moves with QEMU), and CreateSandbox configures the guest as
// for a booted VM; the pool then boots a replacement, poolRefillDelay
// after the last take. A pod that does not
// fit, or finds the pool empty, boots, logged and counted.
//
// What a pooled VM touched before its pod took it (its guest's boot and
// QEMU's own memory) stays charged to the pool cgroup it booted in: no
// cgroup version moves charges with a process. The pod's cgroup is
// charged from the move on. docs/security.md says what that costs.
//
// The pool lives in the daemon: Cool (shutdown) kills the VMs no pod
// took, and Warm (start) kills any a previous daemon left, then fills the
// pool again. Pods that took one are VM pods like any other after that,
// and survive a restart.

const factoryPool = "pool"

// poolDirPrefix names pooled VMs' dirs in the handler's dir: the prefix
// and the first 32 hex digits of the pool ID.
const poolDirPrefix = "pool-"

// poolRetry is how long the pool waits after a failed boot before it
// boots again.
const poolRetry = time.Minute

// poolRefillDelay is how long the pool waits after a pod took a VM before
// it boots the next: a boot or clone start would share the CPU with the
// rest of that pod's start (its guest sandbox and first container, a few
// hundred milliseconds under TCG). Each take restarts the wait, so a burst
// of pod starts is not slowed by the pool refilling behind it. Measured
// under TCG on 2 cores, in A/B runs: RunPodSandbox 76-79 ms against
// 86-94 ms, CreateContainer 108 ms against 118-131 ms.
const poolRefillDelay = time.Second

// poolSpec is what a pooled VM is made of; a pod takes one only of the
// handler's current spec.
type poolSpec struct {
	QEMU, Accel, Machine, Kernel, Initrd, Transport string
	// SharedFS is sharedFS9p or sharedFSVirtio (then Virtiofsd serves
	// the share).
	SharedFS, Virtiofsd         string
	VCPUs, MemoryMiB, TBSizeMiB int
	// Clone: the pooled VMs are clones of the template of this spec.
	Clone bool
}

// pooledVM is one booted VM waiting for a pod.
type pooledVM struct {
	id     string // random, in sandbox ID form
	spec   poolSpec
	dir    string
	vm     *vmm.VM
	client *agentproxy.Client
	health *api.HealthResponse
	cg     *vmm.Cgroup    // the pool cgroup it booted in
	fsd    *vmm.Virtiofsd // its share's server under virtio-fs; nil: 9p
	user   *vmm.Identity
	mac    net.HardwareAddr // its guest NIC's until CreateSandbox
	record vmRecord
	took   time.Duration // its boot or clone start
}

// vmPool holds a handler's pooled VMs.
type vmPool struct {
	// mu guards the fields below. It is never held across I/O.
	mu       sync.Mutex
	spec     poolSpec // of ready and of the VM booting
	ready    []*pooledVM
	booting  bool      // a fill goroutine runs
	failedAt time.Time // the last failed boot
	// quietUntil: no boot starts before it (a pod took a VM; see
	// poolRefillDelay).
	quietUntil time.Time
	cooled     bool // Cool ran: nothing boots any more
	// own are the pool dirs this daemon made, by name, from the start of
	// their boot on: sweepPool leaves them alone.
	own map[string]bool
}

// pooling reports whether the handler keeps a pool.
func (h *Handler) pooling() bool {
	return h.cfg.VMPoolSize > 0 && (h.cfg.VMFactory == factoryPool || h.cfg.VMFactory == factoryTemplate)
}

// poolSpecFor is the handler's pooled VM on assets a; false: the handler
// pools none on them (no pool, or clones of assets that cannot be cloned).
func (h *Handler) poolSpecFor(a *guestAssets) (poolSpec, bool) {
	clone := h.cfg.VMFactory == factoryTemplate
	return poolSpec{
		QEMU: h.cfg.HypervisorPath, Accel: a.accel.Accel, Machine: a.machine,
		Kernel: a.vmlinux, Initrd: a.initrd, Transport: a.transport,
		SharedFS: a.sharedFS, Virtiofsd: a.virtiofsd,
		VCPUs: h.cfg.DefaultVCPUs, MemoryMiB: h.cfg.DefaultMemoryMiB, TBSizeMiB: h.tbSizeMiB(a.accel.Accel),
		Clone: clone,
	}, h.pooling() && !(clone && notCloneable(a) != "")
}

// takePooled returns a pooled VM for a pod of memMiB and vcpus on assets
// a, or why it gets none (a metric label). A VM that died waiting is
// discarded. Taking one starts a refill, which reports the pool's metrics
// (reading each waiting VM's memory is no work for a pod start).
func (h *Handler) takePooled(ctx context.Context, a *guestAssets, memMiB, vcpus int) (*pooledVM, string) {
	spec, ok := h.poolSpecFor(a)
	if !ok {
		return nil, ""
	}
	if memMiB > spec.MemoryMiB || vcpus > spec.VCPUs {
		return nil, "too_big"
	}
	defer h.fillPool(h.background(ctx), a)
	for {
		h.pool.mu.Lock()
		if h.pool.spec != spec || len(h.pool.ready) == 0 {
			h.pool.mu.Unlock()
			return nil, "pool_empty"
		}
		pv := h.pool.ready[0]
		h.pool.ready = h.pool.ready[1:]
		h.pool.quietUntil = time.Now().Add(poolRefillDelay)
		h.pool.mu.Unlock()
		select {
		case <-pv.vm.Exited():
			log.G(ctx).Warn("a pooled VM died while it waited: discarding it", "pool_vm", pv.id[:12], "console", tailConsole(pv.vm))
			h.discardPooled(ctx, pv)
			continue
		default:
		}
		return pv, ""
	}
}

// putBack returns a pooled VM a pod took but could not use (its cgroup
// cannot hold it) before anything of the pod touched it.
func (h *Handler) putBack(ctx context.Context, pv *pooledVM) {
	h.pool.mu.Lock()
	if !h.pool.cooled && h.pool.spec == pv.spec {
		h.pool.ready = append(h.pool.ready, pv)
		pv = nil
	}
	h.pool.mu.Unlock()
	if pv != nil {
		h.discardPooled(ctx, pv)
	}
	h.reportPool()
}

// fillPool boots VMs, one after another in the background, until the pool
// holds vm_pool_size of the current spec. VMs of an older spec (the guest
// assets changed) are discarded.
func (h *Handler) fillPool(ctx context.Context, a *guestAssets) {
	spec, ok := h.poolSpecFor(a)
	if !ok {
		return
	}
	h.pool.mu.Lock()
	var stale []*pooledVM
	if h.pool.spec != spec {
		stale, h.pool.ready, h.pool.spec = h.pool.ready, nil, spec
	}
	start := !h.pool.booting && !h.pool.cooled
	if start {
		h.pool.booting = true
	}
	h.pool.mu.Unlock()
	for _, pv := range stale {
		h.discardPooled(ctx, pv)
	}
	if !start {
		return
	}
	go func() {
		for {
			h.reportPool()
			h.pool.mu.Lock()
			wait := poolRetry - time.Since(h.pool.failedAt)
			need := !h.pool.cooled && h.pool.spec == spec && len(h.pool.ready) < h.cfg.VMPoolSize && wait <= 0
			if !need {
				h.pool.booting = false
				h.pool.mu.Unlock()
				return
			}
			quiet := time.Until(h.pool.quietUntil)
			h.pool.mu.Unlock()
			if quiet > 0 {
				time.Sleep(quiet)
				continue
			}
			pv, err := h.bootPooled(ctx, spec, a)
			h.pool.mu.Lock()
			switch {
			case err != nil:
				h.pool.failedAt = time.Now()
			case h.pool.cooled || h.pool.spec != spec:
			default:
				h.pool.ready = append(h.pool.ready, pv)
				pv = nil
			}
			h.pool.mu.Unlock()
			if err != nil {
				log.G(ctx).Warn("booting a pooled VM failed: pods boot their own until the pool retries", "retry_after", poolRetry, "err", err)
			} else if pv != nil {
				h.discardPooled(ctx, pv)
			}
		}
	}()
}

// reportPool sets the pool's metrics.
func (h *Handler) reportPool() {
	h.pool.mu.Lock()
	pids := make([]int, 0, len(h.pool.ready))
	for _, pv := range h.pool.ready {
		pids = append(pids, pv.vm.PID())
	}
	h.pool.mu.Unlock()
	var bytes int64
	for _, pid := range pids {
		bytes += pssOf(pid)
	}
	h.m.VMPool(h.name, len(pids), bytes)
}

// pssOf is a process's proportional set size in bytes; 0 when unknown.
func pssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Pss:"); ok {
			var kb int64
			fmt.Sscan(v, &kb)
			return kb << 10
		}
	}
	return 0
}

// bootPooled boots (or clones) one pooled VM of spec and waits for its
// agent. On error nothing of it is left.
func (h *Handler) bootPooled(ctx context.Context, spec poolSpec, a *guestAssets) (*pooledVM, error) {
	var raw [32]byte
	rand.Read(raw[:])
	pv := &pooledVM{id: hex.EncodeToString(raw[:]), spec: spec}
	pv.dir = filepath.Join(h.dir, poolDirPrefix+pv.id[:32])
	h.pool.mu.Lock()
	if h.pool.own == nil {
		h.pool.own = map[string]bool{}
	}
	h.pool.own[filepath.Base(pv.dir)] = true
	h.pool.mu.Unlock()
	pv.mac = net.HardwareAddr{0x02, 0xc7, 0x9e, raw[0], raw[1], raw[2]}
	ctx = log.With(ctx, "pool_vm", pv.id[:12])
	sh := share{dir: pv.dir}
	start := time.Now()
	var ns *netns.NetNS
	_, err := steps.Run(ctx, []steps.Step{
		{Name: "making the pooled VM's dir and share", Do: func(ctx context.Context) (steps.Cleanup, error) {
			// The dir goes last: destroy unmounts the namespaces pinned in it.
			if err := sh.create([]string{spec.QEMU, spec.Virtiofsd, spec.Kernel, spec.Initrd}); err != nil {
				return nil, errors.Join(err, sh.destroy())
			}
			return func(context.Context) error { return sh.destroy() }, nil
		}},
		{Name: "making its network namespace", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var err error
			ns, err = netns.New(filepath.Join(pv.dir, "net"), "ns")
			return nil, err // in the dir: gone with it
		}},
		{Name: "making its cgroup", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var err error
			if pv.cg, err = h.sandboxCgroup(&runtimeapi.PodSandboxConfig{}, pv.id); err != nil {
				return nil, err
			}
			if err := pv.cg.Create(); err != nil {
				return nil, errors.Join(err, pv.cg.Remove(ctx))
			}
			return func(ctx context.Context) error { return pv.cg.Remove(ctx) }, writeCgroupRecord(pv.dir, pv.cg.Path)
		}},
		{Name: "choosing its QEMU's uid", Do: func(ctx context.Context) (steps.Cleanup, error) {
			user, release, err := h.claimIdentity(poolDirPrefix+pv.id, spec.SharedFS != sharedFSVirtio)
			if err != nil {
				return nil, err
			}
			defer release()
			pv.user = user
			pv.record = vmRecord{MemoryMiB: spec.MemoryMiB, VCPUs: max(spec.VCPUs, 1), VMMUID: user.UID}
			return nil, writeVMRecord(pv.dir, pv.record)
		}},
		{Name: "serving its share over virtio-fs", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if spec.SharedFS != sharedFSVirtio {
				return nil, nil
			}
			var err error
			pv.fsd, err = vmm.StartVirtiofsd(ctx, vmm.VirtiofsdConfig{Path: spec.Virtiofsd, Source: sh.export(), Dir: sh.virtiofsdDir(), Cache: h.cfg.VirtioFSCache, Cgroup: pv.cg, MountNS: sh.pin()})
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { return vmm.StopVirtiofsd(ctx, sh.virtiofsdDir(), time.Second) }, nil
		}},
		{Name: "starting the pooled VM", Do: func(ctx context.Context) (steps.Cleanup, error) {
			mc := vmm.MachineConfig{
				QEMUPath: spec.QEMU, Accel: spec.Accel, MachineType: spec.Machine,
				VCPUs: spec.VCPUs, MemoryMiB: spec.MemoryMiB, TBSizeMiB: spec.TBSizeMiB,
				Kernel: spec.Kernel, Initrd: spec.Initrd, Dir: pv.dir,
				Name:      "crivm-pool-" + pv.id[:8],
				NetNSPath: ns.Path(),
				Taps:      []vmm.Tap{{MAC: pv.mac.String(), Unplugged: true}},
				Cgroup:    pv.cg, MountNS: sh.pin(), User: pv.user,
				MemMerge: h.cfg.KSM, FreePageReporting: true,
			}
			guestChannels(&mc, pv.fsd, sh.export(), spec.Transport)
			var err error
			if spec.Clone {
				err = h.startPooledClone(ctx, pv, a, mc)
			} else {
				pv.vm, pv.record.VsockCID, err = startVM(ctx, mc, pv.id, spec.Transport)
			}
			if err != nil {
				return nil, err
			}
			kill := func(ctx context.Context) error { return pv.vm.Kill(ctx) }
			if err := writeVMRecord(pv.dir, pv.record); err != nil {
				return nil, errors.Join(err, kill(ctx))
			}
			return kill, nil
		}},
		{Name: "waiting for its agent", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var err error
			if pv.client, pv.health, err = connectAgent(ctx, pv.vm); err != nil {
				return nil, err
			}
			if spec.Clone {
				// Its own entropy and clock, and its launch path
				// warmed, before it waits: nothing of a pod runs in it
				// before this.
				if err := resumeClone(ctx, pv.client, resumeOptions{warm: true}); err != nil {
					pv.client.Close()
					return nil, err
				}
			}
			return nil, nil // discardPooled closes the client
		}},
	})
	if err != nil {
		h.disown(pv)
		return nil, err
	}
	pv.took = time.Since(start)
	source := "clone"
	if !spec.Clone {
		source = "boot"
		h.m.VMBooted(spec.Accel, pv.took)
	}
	log.G(ctx).Info("pooled VM ready", "source", source, "template", pv.record.Template, "took", pv.took.Round(time.Millisecond), "guest_kernel", pv.health.KernelRelease)
	return pv, nil
}

// startPooledClone starts pv's VM, of machine mc, as a clone of the
// handler's template on assets a (waiting for its build).
func (h *Handler) startPooledClone(ctx context.Context, pv *pooledVM, a *guestAssets, mc vmm.MachineConfig) error {
	src := h.templateFor(ctx, a, 0, 0)
	if src.tpl == nil {
		return fmt.Errorf("no template to clone (%s)", src.reason)
	}
	cmc, vm, err := startClone(ctx, mc, src.tpl)
	if err != nil {
		h.templateFailed(src.tpl, err)
		return err
	}
	pv.vm, pv.mac = vm, templateMAC
	pv.record.MemoryMiB, pv.record.VCPUs, pv.record.Template = cmc.MemoryMiB, cmc.VCPUs, src.tpl.spec.key()
	return nil
}

// discardPooled kills a pooled VM no pod uses and removes all of it.
func (h *Handler) discardPooled(ctx context.Context, pv *pooledVM) {
	if pv.client != nil {
		pv.client.Close()
	}
	if err := h.releaseVMDir(ctx, pv.dir, pv.id[:32]); err != nil {
		log.G(ctx).Warn("removing a pooled VM", "pool_vm", pv.id[:12], "err", err)
		return // left for the next start's sweep
	}
	h.disown(pv)
}

// disown drops pv from the pool dirs sweepPool leaves alone: it is gone,
// or a pod's VM dir names it.
func (h *Handler) disown(pv *pooledVM) {
	h.pool.mu.Lock()
	delete(h.pool.own, filepath.Base(pv.dir))
	h.pool.mu.Unlock()
}

// ownsPoolDir reports whether this daemon made the pool dir name.
func (h *Handler) ownsPoolDir(name string) bool {
	h.pool.mu.Lock()
	defer h.pool.mu.Unlock()
	return h.pool.own[name]
}

// adoptPooled makes pv the VM of the pod whose VM dir is named by id:
// the pod's VM dir name becomes a symlink to pv's, QEMU moves to cg (the
// pod's cgroup), the pod's tap is attached to the NIC, and the pool's
// cgroup goes. The returned cleanup undoes it by removing all of pv.
func (h *Handler) adoptPooled(ctx context.Context, pv *pooledVM, id string, cg *vmm.Cgroup, nsPath string) (steps.Cleanup, error) {
	alias := filepath.Join(h.dir, id[:32])
	undo := func(ctx context.Context) error {
		h.discardPooled(ctx, pv)
		// Its record names the pod's cgroup by now, which the pod's
		// steps remove: the pool's is left to remove here.
		if err := pv.cg.Remove(ctx); err != nil {
			return err
		}
		if err := os.Remove(alias); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	err := func() error {
		if err := os.Symlink(filepath.Base(pv.dir), alias); err != nil {
			return fmt.Errorf("naming the pooled VM's dir for the pod: %w", err)
		}
		if err := writeCgroupRecord(pv.dir, cg.Path); err != nil {
			return err
		}
		// QEMU, and virtiofsd with its sandboxed child under virtio-fs.
		if err := pv.cg.MoveAll(ctx, cg); err != nil {
			return fmt.Errorf("moving the pooled VM to the pod's cgroup: %w", err)
		}
		if err := pv.vm.AttachTap(ctx, 0, nsPath, tapName); err != nil {
			return fmt.Errorf("attaching the pod's tap: %w", err)
		}
		if err := pv.cg.Remove(ctx); err != nil {
			return fmt.Errorf("removing the pool's cgroup: %w", err)
		}
		return nil
	}()
	if err != nil {
		return nil, errors.Join(err, undo(ctx))
	}
	h.disown(pv) // its alias keeps it from the sweep
	return undo, nil
}

// sweepPool kills the pooled VMs a previous daemon left: every pool dir
// no pod's VM dir names and this daemon did not make.
func (h *Handler) sweepPool(ctx context.Context) {
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		return
	}
	adopted := map[string]bool{}
	for _, e := range entries {
		if t, err := os.Readlink(filepath.Join(h.dir, e.Name())); err == nil {
			adopted[t] = true
		}
	}
	for _, e := range entries {
		key, ok := strings.CutPrefix(e.Name(), poolDirPrefix)
		if !ok || !e.IsDir() || !isVMDirName(key) || adopted[e.Name()] || h.ownsPoolDir(e.Name()) {
			continue
		}
		if err := h.releaseVMDir(ctx, filepath.Join(h.dir, e.Name()), key); err != nil {
			log.G(ctx).Warn("removing a pooled VM a previous crivm left", "dir", e.Name(), "err", err)
			continue
		}
		log.G(ctx).Info("removed a pooled VM a previous crivm left", "dir", e.Name())
	}
}

// coolPool kills the pooled VMs no pod took; nothing boots after it.
func (h *Handler) coolPool(ctx context.Context) {
	h.pool.mu.Lock()
	h.pool.cooled = true
	ready := h.pool.ready
	h.pool.ready = nil
	h.pool.mu.Unlock()
	for _, pv := range ready {
		h.discardPooled(ctx, pv)
	}
	h.reportPool()
}
