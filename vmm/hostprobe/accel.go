package hostprobe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/vmm"
)

// KVMDevice is the device QEMU opens for -accel kvm.
const KVMDevice = "/dev/kvm"

// DefaultProbeTimeout bounds one probe boot. A KVM guest reaches the panic in
// about a second; under TCG the same bzImage needs 4-10 s.
const DefaultProbeTimeout = 10 * time.Second

// AccelCacheFile is the name of the verdict cache inside ProbeOptions.CacheDir.
const AccelCacheFile = "accel-probe.json"

const bootIDPath = "/proc/sys/kernel/random/boot_id"

// TCGWarning is what callers say when VMs fall back to TCG.
const TCGWarning = "VMs will run under TCG: expect ~2-6 s boots"

// AccelVerdict is the outcome of ProbeAccel. Accel is what VMs will use;
// KVMUsable is true only when a probe guest really booted under KVM.
type AccelVerdict struct {
	Accel     string    `json:"accel"`
	KVMUsable bool      `json:"kvm_usable"`
	Reason    string    `json:"reason"`
	BootID    string    `json:"boot_id,omitempty"`
	ProbedAt  time.Time `json:"probed_at"`
	// Cached is true when the KVM verdict came from CacheDir, not a boot.
	Cached bool `json:"cached,omitempty"`
}

// ProbeOptions configures ProbeAccel.
type ProbeOptions struct {
	QEMUPath string
	Kernel   string
	// CacheDir holds accel-probe.json. Empty: no caching.
	CacheDir string
	// Timeout bounds the probe boot. Zero: DefaultProbeTimeout.
	Timeout time.Duration
	// Requested is the accel setting: auto (or empty), kvm or tcg.
	Requested string
}

// ProbeAccel decides the accelerator. tcg is taken as is; kvm and auto boot
// a probe guest under KVM (unless /dev/kvm is missing or a verdict for this
// boot, QEMU and kernel is cached). kvm fails when KVM is not usable; auto
// falls back to TCG and says why.
func ProbeAccel(ctx context.Context, opts ProbeOptions) (AccelVerdict, error) {
	p := prober{
		kvmDev: KVMDevice,
		bootID: readBootID,
		boot:   runProbeBoot,
		now:    time.Now,
	}
	return p.probe(ctx, opts)
}

// prober holds ProbeAccel's host dependencies so tests can replace them.
type prober struct {
	kvmDev string
	bootID func() (string, error)
	boot   func(ctx context.Context, qemu, kernel, accel string, timeout time.Duration) (bootResult, error)
	now    func() time.Time
}

func (p prober) probe(ctx context.Context, opts ProbeOptions) (AccelVerdict, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultProbeTimeout
	}
	bootID, err := p.bootID()
	if err != nil {
		log.G(ctx).Debug("reading boot id; accel probe cache disabled", "error", err)
		bootID = ""
	}
	v := AccelVerdict{BootID: bootID, ProbedAt: p.now()}

	switch opts.Requested {
	case vmm.AccelTCG:
		v.Accel = vmm.AccelTCG
		v.Reason = "accel = tcg configured"
		return v, nil
	case vmm.AccelKVM, vmm.AccelAuto, "":
	default:
		return v, fmt.Errorf("probing accel: unknown accel %q (want auto, kvm or tcg)", opts.Requested)
	}

	kv, err := p.kvmVerdict(ctx, opts, bootID)
	if err != nil {
		return v, fmt.Errorf("probing kvm: %w", err)
	}
	if kv.KVMUsable {
		kv.Accel = vmm.AccelKVM
		return kv, nil
	}
	if opts.Requested == vmm.AccelKVM {
		return kv, fmt.Errorf("accel = kvm but KVM is not usable: %s", kv.Reason)
	}
	kv.Accel = vmm.AccelTCG
	log.G(ctx).Warn("KVM not usable, falling back to TCG: "+TCGWarning, "reason", kv.Reason)
	return kv, nil
}

// kvmVerdict answers "does a guest boot under KVM here" from /dev/kvm, the
// cache, or a probe boot, in that order. Accel is left empty.
func (p prober) kvmVerdict(ctx context.Context, opts ProbeOptions, bootID string) (AccelVerdict, error) {
	v := AccelVerdict{BootID: bootID, ProbedAt: p.now()}
	// /dev/kvm is checked on every call, never cached: it may appear later in
	// the same boot (modprobe kvm_intel).
	if ok, why := deviceUsable(p.kvmDev); !ok {
		v.Reason = why
		return v, nil
	}
	cachePath := ""
	if opts.CacheDir != "" && bootID != "" {
		cachePath = filepath.Join(opts.CacheDir, AccelCacheFile)
		if c, ok := readAccelCache(cachePath, bootID, opts.QEMUPath, opts.Kernel); ok {
			c.Cached = true
			return c, nil
		}
	}
	if opts.QEMUPath == "" || opts.Kernel == "" {
		return v, errors.New("probe needs a qemu path and a kernel")
	}
	log.G(ctx).Info("probing KVM with a guest boot", "qemu", opts.QEMUPath, "kernel", opts.Kernel, "timeout", opts.Timeout)
	r, err := p.boot(ctx, opts.QEMUPath, opts.Kernel, vmm.AccelKVM, opts.Timeout)
	if err != nil {
		return v, err
	}
	v.ProbedAt = p.now()
	switch {
	case r.booted:
		v.KVMUsable = true
		v.Reason = fmt.Sprintf("probe guest booted under KVM in %s", r.elapsed.Round(10*time.Millisecond))
	case r.timedOut:
		v.Reason = fmt.Sprintf("probe guest did not boot under KVM within %s: KVM is present but cannot run this guest (no VT-x/AMD-V?)", opts.Timeout)
	default:
		v.Reason = "probe guest did not boot under KVM: " + r.detail
	}
	if cachePath != "" {
		if err := writeAccelCache(cachePath, accelCache{BootID: bootID, QEMUPath: opts.QEMUPath, Kernel: opts.Kernel, Verdict: v}); err != nil {
			log.G(ctx).Warn("caching accel probe verdict", "path", cachePath, "error", err)
		}
	}
	return v, nil
}

// accelCache is the on-disk form of a KVM probe verdict. It is valid only
// for the boot, QEMU binary and kernel it names.
type accelCache struct {
	BootID   string       `json:"boot_id"`
	QEMUPath string       `json:"qemu_path"`
	Kernel   string       `json:"kernel"`
	Verdict  AccelVerdict `json:"verdict"`
}

// readAccelCache returns the cached verdict when the file parses and its key
// matches; anything else (missing, corrupt, stale) is a miss.
func readAccelCache(path, bootID, qemu, kernel string) (AccelVerdict, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return AccelVerdict{}, false
	}
	var c accelCache
	if err := json.Unmarshal(data, &c); err != nil {
		return AccelVerdict{}, false
	}
	if c.BootID != bootID || c.QEMUPath != qemu || c.Kernel != kernel {
		return AccelVerdict{}, false
	}
	c.Verdict.Accel = ""
	c.Verdict.BootID = bootID
	return c.Verdict, true
}

// writeAccelCache replaces path atomically: a reader sees the old file or
// the new one, never a partial write.
func writeAccelCache(path string, c accelCache) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+AccelCacheFile+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after a successful rename
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readBootID() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("%s is empty", bootIDPath)
	}
	return id, nil
}
