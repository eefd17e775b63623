package vm

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/podhost"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/internal/steps"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/vmm"
)

// StartSandbox boots the pod's VM as named steps; a failing step undoes
// the ones before it, so a pod that does not boot leaves no VM, tap or
// directory behind.
func (h *Handler) StartSandbox(ctx context.Context, req *handlers.SandboxRequest) (*handlers.SandboxStarted, error) {
	sb := req.Sandbox
	ctx = log.With(ctx, "handler", h.name)
	if err := checkHostNamespaces(h.name, req.Config); err != nil {
		return nil, err
	}
	var (
		assets    *guestAssets
		gn        *netns.GuestNetwork
		vm        *vmm.VM
		virtiofsd *vmm.Virtiofsd
		cg        *vmm.Cgroup
		src       cloneSource
		pv        *pooledVM // taken from the pool
		adopting  bool      // pv is the pod's: adoptPooled undoes it
		client    *agentproxy.Client
		health    *api.HealthResponse
		started   time.Time
	)
	dir := h.vmDir(sb.ID)
	sh := h.share(sb.ID)
	bootMAC := bootMACFor(sb.ID)
	guestMiB, vcpus, err := h.size(req.Config)
	if err != nil {
		return nil, err
	}
	var (
		record vmRecord
		user   *vmm.Identity
	)
	_, err = steps.Run(ctx, []steps.Step{
		{Name: "preparing guest assets", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var err error
			assets, err = h.prepareAssets(ctx)
			return nil, err
		}},
		{Name: "taking a pooled VM", Do: func(ctx context.Context) (steps.Cleanup, error) {
			pv, src.reason = h.takePooled(ctx, assets, guestMiB, vcpus)
			// Until adopted (the dir step), nothing of the pod touched it.
			return func(ctx context.Context) error {
				if pv != nil && !adopting {
					h.putBack(ctx, pv)
				}
				return nil
			}, nil
		}},
		{Name: "finding the VM's template", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if pv != nil {
				return nil, nil
			}
			// Waits for the template's first build; nothing to undo. A
			// handler without templates keeps the pool's reason.
			if t := h.templateFor(ctx, assets, guestMiB, vcpus); t != (cloneSource{}) {
				src = t
			}
			return nil, nil
		}},
		{Name: "creating the VM's cgroup", Do: func(ctx context.Context) (steps.Cleanup, error) {
			// Before anything runs in it; removed after QEMU and
			// virtiofsd are gone (the steps undo in reverse). A systemd
			// scope is started with the first of them (vmm.Cgroup).
			var err error
			if cg, err = h.sandboxCgroup(req.Config, sb.ID); err != nil {
				return nil, err
			}
			if src.tpl != nil {
				if err := h.checkCgroupFits(cg, req.Config, src.tpl.spec.MemoryMiB); err != nil {
					log.G(ctx).Info("the pod's cgroup cannot hold the template's RAM: booting", "err", err)
					src = cloneSource{reason: "cgroup_too_small"}
				}
			}
			if pv != nil {
				if err := h.checkCgroupFits(cg, req.Config, pv.spec.MemoryMiB); err != nil {
					log.G(ctx).Info("the pod's cgroup cannot hold the pooled VM: booting", "err", err)
					h.putBack(ctx, pv)
					pv, src = nil, cloneSource{reason: "cgroup_too_small"}
				}
			}
			if err := h.checkCgroupFits(cg, req.Config, guestMiB); err != nil {
				return nil, err
			}
			if err := cg.Create(); err != nil {
				return nil, errors.Join(err, cg.Remove(ctx))
			}
			return func(ctx context.Context) error { return cg.Remove(ctx) }, nil
		}},
		{Name: "creating VM dir and share", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if pv != nil {
				// The pooled VM's, named for the pod; the VM moves in
				// with the tap, below.
				dir, sh, user, record, virtiofsd = pv.dir, share{dir: pv.dir}, pv.user, pv.record, pv.fsd
				return nil, nil
			}
			if err := sh.create([]string{h.cfg.HypervisorPath, assets.virtiofsd, assets.vmlinux, assets.initrd}); err != nil {
				return nil, errors.Join(err, sh.destroy())
			}
			if err := writeCgroupRecord(dir, cg.Path); err != nil {
				return nil, errors.Join(err, sh.destroy())
			}
			return func(context.Context) error { return sh.destroy() }, nil
		}},
		{Name: "choosing QEMU's uid", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if pv != nil {
				return nil, nil // the pooled VM's
			}
			var release func()
			var err error
			if user, release, err = h.claimIdentity(sb.ID, assets.sharedFS != sharedFSVirtio); err != nil {
				return nil, err
			}
			defer release()
			// Recorded before QEMU starts: the record is the claim.
			record.VMMUID = user.UID
			return nil, writeVMRecord(dir, record)
		}},
		{Name: "serving the share over virtio-fs", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if assets.sharedFS != sharedFSVirtio || pv != nil { // a pooled VM's is served already
				return nil, nil
			}
			fsd, err := vmm.StartVirtiofsd(ctx, vmm.VirtiofsdConfig{Path: assets.virtiofsd, Source: sh.export(), Dir: sh.virtiofsdDir(), Cache: h.cfg.VirtioFSCache, Cgroup: cg, MountNS: sh.pin()})
			if err != nil {
				return nil, err
			}
			virtiofsd = fsd
			return func(ctx context.Context) error { return vmm.StopVirtiofsd(ctx, sh.virtiofsdDir(), time.Second) }, nil
		}},
		{Name: "creating the tap", Do: func(ctx context.Context) (steps.Cleanup, error) {
			// The VM boots while CNI sets the pod's interface up; the tap is
			// mirrored to it once it exists.
			if err := netns.CreateTap(req.NetNSPath, tapName); err != nil {
				return nil, err
			}
			return func(context.Context) error { return netns.RemoveTap(req.NetNSPath, vethName, tapName) }, nil
		}},
		{Name: "booting VM", Do: func(ctx context.Context) (steps.Cleanup, error) {
			started = time.Now()
			if pv != nil {
				vm, bootMAC, adopting = pv.vm, pv.mac, true
				return h.adoptPooled(ctx, pv, sb.ID, cg, req.NetNSPath)
			}
			var err error
			mc := vmm.MachineConfig{
				QEMUPath:    h.cfg.HypervisorPath,
				Accel:       assets.accel.Accel,
				MachineType: assets.machine,
				VCPUs:       vcpus,
				MemoryMiB:   guestMiB,
				TBSizeMiB:   h.tbSizeMiB(assets.accel.Accel),
				Kernel:      assets.vmlinux,
				Initrd:      assets.initrd,
				Dir:         dir,
				Name:        "crivm-" + sb.ID[:12],
				NetNSPath:   req.NetNSPath,
				Taps:        []vmm.Tap{{Name: tapName, MAC: bootMAC.String()}},
				Cgroup:      cg,
				MountNS:     sh.pin(),
				User:        user,
				MemMerge:    h.cfg.KSM,
				// A clone (startClone) drops it: its RAM is the template's.
				FreePageReporting: true,
			}
			guestChannels(&mc, virtiofsd, sh.export(), assets.transport)
			if t := src.tpl; t != nil {
				cmc, cvm, err := startClone(ctx, mc, t)
				if err == nil {
					vm, bootMAC = cvm, templateMAC
					record = vmRecord{MemoryMiB: cmc.MemoryMiB, VCPUs: cmc.VCPUs, VMMUID: user.UID, Template: t.spec.key()}
					return func(ctx context.Context) error { return vm.Kill(ctx) }, nil
				}
				if ctx.Err() != nil {
					return nil, err
				}
				log.G(ctx).Warn("cloning the VM template failed: this pod boots, and so do later ones until the template is rebuilt", "template", t.spec.key(), "err", err)
				h.templateFailed(t, err)
				src = cloneSource{reason: "clone_failed"}
			}
			var cid uint32
			if vm, cid, err = startVM(ctx, mc, sb.ID, assets.transport); err != nil {
				return nil, err
			}
			record = vmRecord{MemoryMiB: mc.MemoryMiB, VCPUs: max(mc.VCPUs, 1), VsockCID: cid, VMMUID: user.UID}
			return func(ctx context.Context) error { return vm.Kill(ctx) }, nil
		}},
		{Name: "recording the VM", Do: func(ctx context.Context) (steps.Cleanup, error) {
			return nil, writeVMRecord(dir, record)
		}},
		{Name: "waiting for the pod network", Do: func(ctx context.Context) (steps.Cleanup, error) {
			return nil, req.WaitNetwork(ctx)
		}},
		{Name: "mirroring the pod interface to the tap", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var err error
			gn, err = netns.MirrorExistingTap(req.NetNSPath, vethName, tapName)
			return nil, err // the tap's cleanup removes the mirror too
		}},
		{Name: "connecting to the guest agent", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if pv != nil {
				client, health = pv.client, pv.health
				h.m.VMStarted(h.name, "pool", "")
				log.G(ctx).Info("VM taken from the pool", "pool_vm", pv.id[:12], "booted_in", pv.took.Round(time.Millisecond))
				return nil, nil // adoptPooled's undo closes it
			}
			var err error
			if client, health, err = connectAgent(ctx, vm); err != nil {
				return nil, err
			}
			if src.tpl != nil {
				if err := resumeClone(ctx, client, resumeOptions{}); err != nil {
					client.Close()
					return nil, err
				}
				h.m.VMStarted(h.name, "clone", "")
				log.G(ctx).Info("VM cloned", "template", src.tpl.spec.key(), "took", time.Since(started).Round(time.Millisecond))
				return func(context.Context) error { return client.Close() }, nil
			}
			h.m.VMBooted(assets.accel.Accel, time.Since(started))
			h.m.VMStarted(h.name, "boot", src.reason)
			log.G(ctx).Info("VM booted", "accel", assets.accel.Accel, "took", time.Since(started).Round(time.Millisecond), "guest_kernel", health.KernelRelease, "not_cloned", src.reason)
			return func(context.Context) error { return client.Close() }, nil
		}},
		{Name: "creating the guest sandbox", Do: func(ctx context.Context) (steps.Cleanup, error) {
			cfg := req.Config
			creq := &api.CreateSandboxRequest{
				SandboxId: sb.ID,
				Hostname:  podHostname(cfg),
				Mounts:    []*api.SharedMount{podShare(assets.sharedFS)},
			}
			if d := cfg.GetDnsConfig(); d != nil {
				creq.Dns = &api.DNSConfig{Servers: d.Servers, Searches: d.Searches, Options: d.Options}
			}
			// The guest takes over the pod's address: same MAC, addresses
			// and routes as the CNI veth the tap mirrors.
			ifc := &api.Interface{Name: vethName, Mac: gn.MAC.String(), BootMac: bootMAC.String(), Mtu: uint32(gn.MTU)}
			for _, a := range gn.Addrs {
				ifc.Addresses = append(ifc.Addresses, a.String())
			}
			creq.Interfaces = []*api.Interface{ifc}
			for _, r := range gn.Routes {
				ar := &api.Route{Device: vethName}
				if r.Dst != nil {
					ar.Dest = r.Dst.String()
				}
				if r.Gw != nil {
					ar.Gateway = r.Gw.String()
				}
				creq.Routes = append(creq.Routes, ar)
			}
			_, err := client.CreateSandbox(ctx, creq)
			return nil, err
		}},
	})
	if err != nil {
		return nil, err
	}
	owner := h.sandbox(sb.ID)
	owner.mu.Lock()
	owner.adopt(context.WithoutCancel(ctx), h, &conn{vm: vm, client: client})
	owner.mu.Unlock()
	p := &store.Process{Pid: vm.PID(), BootID: proc.BootID()}
	p.StartTime, _ = proc.StartTime(vm.PID())
	extra := map[string]string{
		"vm_dir":        dir,
		"accel":         assets.accel.Accel,
		"guest_kernel":  health.KernelRelease,
		"agent_version": health.AgentVersion,
		"guest_mac":     gn.MAC.String(),
		"boot_ms":       strconv.FormatInt(time.Since(started).Milliseconds(), 10),
		"shared_fs":     assets.sharedFS,
		"machine_type":  assets.machine,
		"transport":     assets.transport,
		"cgroup":        cg.Path,
		"vm_source":     "boot",
	}
	switch {
	case pv != nil:
		extra["vm_source"] = "pool"
		if pv.record.Template != "" {
			extra["vm_template"] = pv.record.Template
		}
	case src.tpl != nil:
		extra["vm_source"] = "clone"
		extra["vm_template"] = src.tpl.spec.key()
	case src.reason != "":
		extra["vm_not_cloned"] = src.reason
	}
	if virtiofsd != nil {
		extra["virtiofsd_pid"] = strconv.Itoa(virtiofsd.PID())
	}
	return &handlers.SandboxStarted{Process: p, Extra: extra}, nil
}

// checkHostNamespaces refuses what a VM cannot give a pod: the host's
// network, PID or IPC namespace.
func checkHostNamespaces(handler string, cfg *runtimeapi.PodSandboxConfig) error {
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	for _, a := range []struct {
		mode runtimeapi.NamespaceMode
		name string
	}{{ns.GetNetwork(), "network"}, {ns.GetPid(), "PID"}, {ns.GetIpc(), "IPC"}} {
		if a.mode == runtimeapi.NamespaceMode_NODE {
			return errdefs.FailedPrecondition("handler %q: a VM pod cannot use the host's %s namespace", handler, a.name)
		}
	}
	return nil
}

// podShare is how the guest mounts the pod's share. It holds the
// containers' rootfs, so setuid bits count (a setuid program in an image
// runs as its owner, as under runc: critest's "allow privilege
// escalation"). That affects the guest only: the host's side of the share
// is nosuid and nodev whatever the guest does, and device nodes are never
// honoured in the guest either.
func podShare(sharedFS string) *api.SharedMount {
	return &api.SharedMount{Tag: agentproxy.SharedTag, MountPoint: agentproxy.GuestSharedDir, FsType: guestFsType(sharedFS), AllowSuid: true}
}

// guestFsType is the agent's name for a shared_fs value.
func guestFsType(sharedFS string) string {
	if sharedFS == sharedFSVirtio {
		return "virtiofs"
	}
	return "9p"
}

// StopSandbox powers the VM off through QMP and kills it after a timeout.
// A VM that is already gone is fine.
func (h *Handler) StopSandbox(ctx context.Context, sb *store.Sandbox) error {
	h.mu.Lock()
	v := h.vms[sb.ID]
	delete(h.vms, sb.ID)
	h.mu.Unlock()
	var vm *vmm.VM
	if v != nil {
		vm = v.close()
	}
	if vm == nil {
		vm, _ = vmm.Reconnect(ctx, h.vmDir(sb.ID)) // nil: no VM runs for this sandbox
	}
	if vm != nil {
		if err := vm.Stop(ctx, vmStopTimeout); err != nil {
			return fmt.Errorf("stopping VM: %w", err)
		}
	}
	// virtiofsd ends by itself once QEMU has gone.
	if err := vmm.StopVirtiofsd(ctx, h.share(sb.ID).virtiofsdDir(), virtiofsdGrace); err != nil {
		return fmt.Errorf("stopping virtiofsd: %w", err)
	}
	return nil
}

// virtiofsdGrace bounds virtiofsd's own exit after QEMU's before it is
// killed.
const virtiofsdGrace = 2 * time.Second

// RemoveSandbox removes the tap (when the netns still exists) and the VM
// dir. Idempotent.
func (h *Handler) RemoveSandbox(ctx context.Context, sb *store.Sandbox) error {
	h.mu.Lock()
	v := h.vms[sb.ID]
	delete(h.vms, sb.ID)
	h.mu.Unlock()
	if v != nil {
		v.close()
	}
	var errs []error
	if sb.NetNSPath != "" {
		if _, err := os.Stat(sb.NetNSPath); err == nil {
			errs = append(errs, netns.RemoveTap(sb.NetNSPath, vethName, tapName))
		}
	}
	if err := vmm.StopVirtiofsd(ctx, h.share(sb.ID).virtiofsdDir(), virtiofsdGrace); err != nil {
		return errors.Join(append(errs, err)...)
	}
	derr := h.share(sb.ID).destroy()
	errs = append(errs, derr)
	// A pod that took a pooled VM: the name of its VM dir, a symlink,
	// which finds the dir at a retry until the dir is gone.
	if alias := filepath.Join(h.dir, sb.ID[:32]); derr == nil && h.vmDir(sb.ID) != alias {
		errs = append(errs, os.Remove(alias))
	}
	// Last: QEMU (StopSandbox) and virtiofsd are gone by now.
	errs = append(errs, h.removeCgroup(ctx, sb))
	return errors.Join(errs...)
}

// sandboxCgroup is the cgroup QEMU and virtiofsd of sandbox id run in,
// below the pod's cgroup_parent (see vmm.Cgroup): under cgroupfs
// <cgroup_parent>/crivm-<id>, the parent defaulting to /crivm; under
// systemd the transient scope crivm-vm-<id>.scope in the pod's slice
// (system.slice by default).
func (h *Handler) sandboxCgroup(cfg *runtimeapi.PodSandboxConfig, id string) (*vmm.Cgroup, error) {
	parent := cfg.GetLinux().GetCgroupParent()
	switch h.cgroupDriver {
	case "", "cgroupfs":
		p, err := vmm.SandboxCgroupPath(parent, id)
		if err != nil {
			return nil, err
		}
		return vmm.NewCgroup(p)
	case "systemd":
		return vmm.NewSystemdCgroup(parent, id)
	}
	return nil, errdefs.FailedPrecondition("handler %q: unknown cgroup_manager %q", h.name, h.cgroupDriver)
}

// removeCgroup removes sb's cgroup, found again from its stored config
// (so after a daemon restart too). Nothing to do when none was made.
func (h *Handler) removeCgroup(ctx context.Context, sb *store.Sandbox) error {
	cfg, err := handlers.SandboxConfig(sb)
	if err != nil {
		return err
	}
	cg, err := h.sandboxCgroup(cfg, sb.ID)
	if err != nil {
		return nil // refused at start: no cgroup was made
	}
	// Anything still in it (QEMU or virtiofsd that no pidfile recorded) is
	// the sandbox's and goes with it.
	if err := cg.KillAll(); err != nil {
		return err
	}
	return cg.Remove(ctx)
}

// Host memory of a VM beyond its guest RAM, and the guest's headroom.
const (
	// qemuOverheadMiB is what QEMU itself holds beyond guest RAM, with
	// virtiofsd: its heap, device state and, under TCG, the translation
	// cache (bounded by tcg_cache_mib). ~90 MB of anonymous memory measured
	// under TCG (docs/performance.md), plus a margin for page tables,
	// slab and virtiofsd; KVM has no translation cache, so it holds less.
	qemuOverheadMiB = 128
	// guestHeadroomMiB is guest RAM on top of the containers' limits, for
	// the guest kernel, the agent and its page cache.
	guestHeadroomMiB = 64
)

// tbSizeMiB is the translation cache size for accel (zero: not TCG):
// tcg_cache_mib. QEMU's default (1 GiB on these hosts) can fill over a
// guest's life and its pages stay resident, which no pod memory limit
// could hold.
func (h *Handler) tbSizeMiB(accel string) int {
	if accel == vmm.AccelTCG {
		return h.cfg.TCGCacheMiB
	}
	return 0
}

// checkCgroupFits refuses a pod whose cgroup's memory limit (the kubelet
// sets the containers' limits plus the RuntimeClass overhead on the pod
// cgroup) cannot hold its VM: guest RAM plus QEMU's own. Booting it would
// end with the host's OOM killer taking QEMU, the whole pod, at boot or
// once the guest has touched its RAM.
func (h *Handler) checkCgroupFits(cg *vmm.Cgroup, cfg *runtimeapi.PodSandboxConfig, guestMiB int) error {
	limit, at, err := cg.MemoryLimit()
	if err != nil {
		return fmt.Errorf("reading the memory limit above cgroup %s: %w", cg.Path, err)
	}
	return vmFits(h.name, limit, at, guestMiB, uint64(cfg.GetLinux().GetResources().GetMemoryLimitInBytes()))
}

// vmFits checks a memory limit (bytes, zero: none) set at cgroup at
// against a VM with guestMiB of RAM for containers whose limits add up to
// ctrs bytes.
func vmFits(handler string, limit uint64, at string, guestMiB int, ctrs uint64) error {
	need := uint64(guestMiB+qemuOverheadMiB) << 20
	if limit == 0 || limit >= need {
		return nil
	}
	return errdefs.FailedPrecondition("handler %q: the pod's cgroup %s has a memory limit of %d MiB, but its VM needs %d MiB "+
		"(%d MiB of guest RAM for containers' limits of %d MiB, + %d MiB for QEMU itself): "+
		"give the pod's RuntimeClass an overhead.podFixed.memory of at least %dMi (the kubelet adds it to the pod's limit)",
		handler, at, limit>>20, need>>20, guestMiB, ctrs>>20, qemuOverheadMiB, (need-min(ctrs, need)+(1<<20)-1)>>20)
}

// WatchExits reports a VM that dies: the sandbox ID of each VM this daemon
// started or reattached to, when its QEMU exits.
func (h *Handler) WatchExits(ctx context.Context, exited func(id string)) error {
	h.exited.Store(&exited)
	go func() {
		seen := map[*vmm.VM]bool{}
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			h.mu.Lock()
			var watch []struct {
				id string
				vm *vmm.VM
			}
			for id, v := range h.vms {
				if vm := v.vm.Load(); vm != nil && !seen[vm] {
					seen[vm] = true
					watch = append(watch, struct {
						id string
						vm *vmm.VM
					}{id, vm})
				}
			}
			h.mu.Unlock()
			for _, w := range watch {
				go func() {
					select {
					case <-w.vm.Exited():
						exited(w.id)
					case <-ctx.Done():
					}
				}()
			}
		}
	}()
	return nil
}

// podHostname is the guest's hostname: the config's, else derived from the
// pod name as the kubelet does (at most 63 bytes, which sethostname takes).
func podHostname(cfg *runtimeapi.PodSandboxConfig) string {
	return podhost.Hostname(cfg)
}

// size is the guest RAM and vCPUs of a pod: memoryMiB and its CPU limit
// rounded up (at least default_vcpus). Above max_memory_mib or max_vcpus
// (the host's RAM and CPUs when unset) the pod is InvalidArgument.
func (h *Handler) size(cfg *runtimeapi.PodSandboxConfig) (memMiB, vcpus int, err error) {
	memMiB = memoryMiB(cfg, h.cfg.DefaultMemoryMiB)
	if maxMiB := h.maxMemoryMiB(); memMiB > maxMiB {
		return 0, 0, errdefs.InvalidArgument("handler %q: the pod's memory limit (%d MiB of guest RAM with %d MiB for the guest itself) is above max_memory_mib (%d MiB)",
			h.name, memMiB, guestHeadroomMiB, maxMiB)
	}
	vcpus = h.cfg.DefaultVCPUs
	r := cfg.GetLinux().GetResources()
	if q, p := r.GetCpuQuota(), r.GetCpuPeriod(); q > 0 && p > 0 {
		vcpus = max(vcpus, int((q+p-1)/p))
	}
	if maxV := h.maxVCPUs(); vcpus > maxV {
		return 0, 0, errdefs.InvalidArgument("handler %q: the pod's CPU limit needs %d vCPUs, above max_vcpus (%d)", h.name, vcpus, maxV)
	}
	return memMiB, vcpus, nil
}

func (h *Handler) maxVCPUs() int {
	if h.cfg.MaxVCPUs > 0 {
		return h.cfg.MaxVCPUs
	}
	return runtime.NumCPU()
}

func (h *Handler) maxMemoryMiB() int {
	if h.cfg.MaxMemoryMiB > 0 {
		return h.cfg.MaxMemoryMiB
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return h.cfg.DefaultMemoryMiB
	}
	return int(uint64(si.Totalram) * uint64(si.Unit) >> 20)
}

// memoryMiB sizes the guest: the containers' limits (the pod's
// resources) plus guestHeadroomMiB, else the handler's default. The pod's
// overhead is not guest RAM: it pays for QEMU itself on the host (see
// checkCgroupFits).
func memoryMiB(cfg *runtimeapi.PodSandboxConfig, def int) int {
	limit := cfg.GetLinux().GetResources().GetMemoryLimitInBytes() >> 20
	if limit > 0 {
		return int(limit) + guestHeadroomMiB
	}
	return def
}

// Restore reattaches to the VM of a sandbox a previous daemon started,
// through its pidfile and QMP socket, reconnects to its agent, and resumes
// copying its containers' output (from the offsets the previous daemon
// persisted) and waiting for their exits.
func (h *Handler) Restore(ctx context.Context, sb *store.Sandbox, ctrs []*store.Container) error {
	owner := h.sandbox(sb.ID)
	owner.mu.Lock()
	for _, c := range ctrs {
		h.logs.Store(c.ID, newLogWriter(c.LogPath))
		owner.track(context.WithoutCancel(ctx), h, c.ID)
	}
	owner.mu.Unlock()
	v, err := owner.get(ctx, h)
	if err != nil {
		return err
	}
	if _, err := v.client.WaitHealthy(ctx, 5*time.Second); err != nil {
		return fmt.Errorf("agent of %s after the restart: %w", sb.ID, err)
	}
	log.G(ctx).Info("reattached to a running VM", "sandbox", sb.ID, "pid", v.vm.PID(), "containers", len(ctrs))
	return nil
}

// watchOOM logs and counts each OOM kill the guest of sandbox id reports,
// until its agent connection ends. It runs for every agent connection the
// handler makes (StartSandbox, and connection when it reconnects). A kill that ends a container's init
// also shows as the container's OOMKilled exit; this catches the others.
func (h *Handler) watchOOM(ctx context.Context, id string, c *agentproxy.Client) {
	for {
		ev, err := c.GetOOMEvent(ctx, &api.GetOOMEventRequest{})
		if err != nil {
			select {
			case <-c.Done():
				return
			case <-time.After(time.Second): // a transient failure: ask again
				continue
			}
		}
		h.m.OOMKill(h.name)
		log.G(ctx).Warn("the guest kernel OOM-killed a process in a container", "sandbox", id, "container", ev.ContainerId, "oom_kills", ev.OomKills)
	}
}

// bootMACFor is the guest NIC's address at boot, before the pod's network
// exists: locally administered, derived from the sandbox id. The agent
// gives the NIC the CNI interface's MAC at CreateSandbox.
func bootMACFor(id string) net.HardwareAddr {
	h := fnv.New64a()
	h.Write([]byte(id))
	v := h.Sum64()
	mac := net.HardwareAddr{0x02, byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	return mac
}

// guestChannels gives mc the pod's share (over virtio-fs when fsd serves
// export, else 9p) and tells the guest how to reach its agent.
func guestChannels(mc *vmm.MachineConfig, fsd *vmm.Virtiofsd, export, transport string) {
	if fsd != nil {
		mc.VirtioFS = []vmm.VirtioFSDevice{{Tag: agentproxy.SharedTag, Socket: fsd.Socket()}}
	} else {
		mc.SharedDirs = []vmm.SharedDir{{Tag: agentproxy.SharedTag, HostPath: export}}
	}
	if transport == agentproxy.TransportVsock {
		mc.KernelArgs = agentproxy.KernelParamTransport + "=" + agentproxy.TransportVsock
	}
}

// startVM starts mc's QEMU, under vsock with a guest CID derived from id:
// a CID another VM holds makes QEMU fail at start, so others are tried.
// It returns the CID used (0 without vsock).
func startVM(ctx context.Context, mc vmm.MachineConfig, id, transport string) (*vmm.VM, uint32, error) {
	var vm *vmm.VM
	var err error
	for attempt := range 3 {
		if transport == agentproxy.TransportVsock {
			mc.VsockCID = vsockCID(id, attempt)
		}
		if vm, err = vmm.Start(ctx, mc); err == nil || mc.VsockCID == 0 || !strings.Contains(err.Error(), "guest cid") {
			break
		}
	}
	return vm, mc.VsockCID, err
}

// connectAgent connects to vm's agent and waits until it answers.
func connectAgent(ctx context.Context, vm *vmm.VM) (*agentproxy.Client, *api.HealthResponse, error) {
	client, err := agentproxy.Connect(ctx, agentDialer(vm.Dir()))
	if err != nil {
		return nil, nil, err
	}
	health, err := client.WaitHealthy(ctx, 5*time.Second)
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("waiting for the agent: %w (console: %s)", err, tailConsole(vm))
	}
	return client, health, nil
}
