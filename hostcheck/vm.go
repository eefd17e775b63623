package hostcheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/vmm"
	"github.com/crivm/crivm/vmm/assets"
	"github.com/crivm/crivm/vmm/hostprobe"
)

// vmItems are the per-handler items of a vm handler and what its verdict
// needs beyond them.
type vmItems struct {
	qemu, kernel, kvm, transport, sharedFS Item

	accelText string // e.g. "TCG (KVM not usable: /dev/kvm missing)"
	accelErr  string // set when the configured accel cannot be honoured
	transp    string // chosen transport; empty on error
	fsErr     string // set when the configured virtiofsd is missing
}

func (c *checker) vmHandler(name string, h *configs.RuntimeHandler) vmItems {
	var v vmItems
	v.qemu = Item{Name: ItemQEMU, Handler: name, Detail: h.HypervisorPath}
	if err := checkExecutable(h.HypervisorPath); err != nil {
		v.qemu.Value = "missing"
		v.qemu.Detail = fmt.Sprintf("hypervisor_path %s: %v", h.HypervisorPath, err)
	} else if ver, err := hostprobe.QEMUVersion(c.ctx, h.HypervisorPath); err != nil {
		v.qemu.Value = "broken"
		v.qemu.Detail = err.Error()
	} else {
		v.qemu.OK, v.qemu.Value = true, ver
	}

	kernel, err := assets.FindKernel(h.Kernel)
	v.kernel = Item{Name: ItemGuestKernel, Handler: name}
	if err != nil {
		v.kernel.Value, v.kernel.Detail = "missing", err.Error()
	} else {
		v.kernel.OK, v.kernel.Value = true, kernel
		v.kernel.Detail = kernelOrigin(h.Kernel, kernel)
	}

	c.accel(name, h, v.qemu.OK, kernel, &v)

	v.transport = Item{Name: ItemTransport, Handler: name}
	t, why, err := hostprobe.ChooseTransport(h.AgentTransport)
	if err != nil {
		v.transport.Value, v.transport.Detail = "none", err.Error()
	} else {
		v.transport.OK, v.transport.Value, v.transport.Detail = true, t, why
		v.transp = t
	}
	v.sharedFS = sharedFSItem(name, h, &v)
	return v
}

// sharedFSItem says how files reach the guest: 9p, or virtio-fs when it is
// configured and virtiofsd is found (else 9p, as the handler falls back).
func sharedFSItem(name string, h *configs.RuntimeHandler, v *vmItems) Item {
	it := Item{Name: ItemSharedFS, Handler: name, OK: true, Value: h.SharedFS}
	if h.SharedFS != "virtio-fs" {
		it.Value, it.Detail = "9p", "QEMU serves the pod's files over 9p"
		return it
	}
	p, err := vmm.FindVirtiofsd(h.VirtioFSDaemon)
	switch {
	case err == nil:
		it.Detail = "virtiofsd " + p + ", cache " + h.VirtioFSCache
	case h.VirtioFSDaemon != "":
		it.OK, it.Value, it.Detail = false, "none", "virtio_fs_daemon: "+err.Error()
		v.fsErr = it.Detail
	default:
		it.Value, it.Detail = "9p", "9P FALLBACK: shared_fs = virtio-fs but "+err.Error()
	}
	return it
}

// accel fills the kvm item. It says "usable" only when a probe guest booted
// under KVM, and calls out the TCG fallback in Detail.
func (c *checker) accel(name string, h *configs.RuntimeHandler, qemuOK bool, kernel string, v *vmItems) {
	it := Item{Name: ItemKVM, Handler: name}
	defer func() { v.kvm = it }()
	tcgFallback := func(reason string) {
		it.Value = vmm.AccelTCG
		it.Detail = "TCG FALLBACK: KVM not usable (" + reason + "): " + hostprobe.TCGWarning
		v.accelText = "TCG (KVM not usable: " + reason + ")"
		if h.Accel == vmm.AccelKVM {
			it.Value = "none"
			v.accelErr = "accel = kvm but KVM is not usable: " + reason
			it.Detail = v.accelErr
		}
	}

	if h.Accel == vmm.AccelTCG {
		it.OK, it.Value = true, vmm.AccelTCG
		it.Detail = "accel = tcg configured: " + hostprobe.TCGWarning
		v.accelText = "TCG (configured)"
		return
	}
	if _, err := os.Stat(hostprobe.KVMDevice); err != nil {
		reason := hostprobe.KVMDevice + " missing"
		if !errors.Is(err, fs.ErrNotExist) {
			reason = err.Error()
		}
		tcgFallback(reason)
		return
	}
	if !c.opts.Probe {
		it.OK, it.Value = true, "present (not probed)"
		it.Detail = hostprobe.KVMDevice + " exists; only a probe boot shows whether KVM can run a guest (accel = auto falls back to TCG when it cannot)"
		v.accelText = "KVM if a guest boots on it (" + hostprobe.KVMDevice + " present, not probed), else TCG"
		return
	}
	if !qemuOK || kernel == "" {
		it.Value = "not probed"
		it.Detail = "probing KVM needs qemu and a guest kernel"
		v.accelText = "unknown (KVM not probed)"
		return
	}
	verdict, err := hostprobe.ProbeAccel(c.ctx, hostprobe.ProbeOptions{
		QEMUPath:  h.HypervisorPath,
		Kernel:    kernel,
		CacheDir:  c.probeCacheDir(),
		Timeout:   c.opts.ProbeTimeout,
		Requested: h.Accel,
	})
	switch {
	case verdict.KVMUsable:
		it.OK, it.Value = true, vmm.AccelKVM
		it.Detail = "usable: " + verdict.Reason
		if verdict.Cached {
			it.Detail += " (cached verdict from this boot)"
		}
		v.accelText = "KVM"
	case err != nil && verdict.Reason == "":
		// The probe itself could not run.
		it.Value = "not probed"
		it.Detail = err.Error()
		v.accelText = "unknown (" + err.Error() + ")"
		v.accelErr = err.Error()
	default:
		reason := verdict.Reason
		if verdict.Cached {
			reason += ", cached verdict from this boot"
		}
		tcgFallback(reason)
	}
}

// kernelOrigin says why FindKernel picked kernel.
func kernelOrigin(configured, kernel string) string {
	if configured != "" {
		return "configured"
	}
	if filepath.Dir(kernel) == assets.GuestKernelDir {
		return "crivm's guest kernel"
	}
	release := assets.HostRelease()
	if release == "" {
		return "newest installed"
	}
	if filepath.Base(kernel) == "vmlinuz-"+release {
		return "matches uname -r"
	}
	return "newest installed (the host runs " + release + ", which has no /boot/vmlinuz)"
}

func (v vmItems) verdict(name string, h *configs.RuntimeHandler) Verdict {
	out := Verdict{Handler: name, Type: h.RuntimeType}
	if !v.qemu.OK {
		out.Problems = append(out.Problems, "qemu: "+v.qemu.Detail)
	}
	if !v.kernel.OK {
		out.Problems = append(out.Problems, "guest kernel: "+v.kernel.Detail)
	}
	if v.accelErr != "" {
		out.Problems = append(out.Problems, v.accelErr)
	}
	if !v.transport.OK {
		out.Problems = append(out.Problems, "agent transport: "+v.transport.Detail)
	}
	if v.fsErr != "" {
		out.Problems = append(out.Problems, "shared fs: "+v.fsErr)
	}
	out.Usable = len(out.Problems) == 0
	if out.Usable {
		out.Summary = fmt.Sprintf("usable: %s, transport %s, shared fs %s", v.accelText, v.transp, v.sharedFS.Value)
	} else {
		out.Summary = notUsable(out.Problems)
	}
	return out
}
