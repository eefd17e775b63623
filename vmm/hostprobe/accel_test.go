package hostprobe

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/vmm"
	"github.com/crivm/crivm/vmm/assets"
)

// quietCtx drops the fallback warnings the probe logs.
func quietCtx() context.Context {
	return log.WithLogger(context.Background(), slog.New(slog.DiscardHandler))
}

// fakeProber returns a prober whose /dev/kvm is present (a temp file) or
// missing, whose boot id is *bootID, and whose boots are counted and answer
// with *result.
func fakeProber(t *testing.T, kvmPresent bool, bootID *string, result *bootResult, bootErr *error, boots *int) prober {
	t.Helper()
	dev := filepath.Join(t.TempDir(), "kvm")
	if kvmPresent {
		if err := os.WriteFile(dev, nil, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	return prober{
		kvmDev: dev,
		bootID: func() (string, error) { return *bootID, nil },
		boot: func(ctx context.Context, qemu, kernel, accel string, timeout time.Duration) (bootResult, error) {
			*boots++
			if accel != vmm.AccelKVM {
				t.Errorf("probe booted with accel %q, want kvm", accel)
			}
			return *result, *bootErr
		},
		now: func() time.Time { return time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC) },
	}
}

func TestProbeAccelModes(t *testing.T) {
	hung := bootResult{timedOut: true, detail: "did not boot under kvm within 10s"}
	exited := bootResult{detail: "qemu exited before the guest kernel ran (exit status 1): qemu-system-x86_64: -accel kvm: failed to initialize kvm"}
	booted := bootResult{booted: true, elapsed: 900 * time.Millisecond}
	tests := []struct {
		name       string
		requested  string
		kvmPresent bool
		result     bootResult
		bootErr    error
		wantAccel  string
		wantUsable bool
		wantBoots  int
		wantReason string // substring
		wantErr    string // substring; empty: no error
	}{
		{name: "tcg never probes", requested: "tcg", kvmPresent: true, result: booted, wantAccel: vmm.AccelTCG, wantReason: "tcg configured"},
		{name: "auto without /dev/kvm", requested: "auto", wantAccel: vmm.AccelTCG, wantReason: "kvm missing"},
		{name: "empty means auto", requested: "", wantAccel: vmm.AccelTCG, wantReason: "kvm missing"},
		{name: "kvm without /dev/kvm", requested: "kvm", wantErr: "kvm missing"},
		{name: "auto, kvm boots", requested: "auto", kvmPresent: true, result: booted, wantAccel: vmm.AccelKVM, wantUsable: true, wantBoots: 1, wantReason: "booted under KVM in 900ms"},
		{name: "auto, kvm hangs", requested: "auto", kvmPresent: true, result: hung, wantAccel: vmm.AccelTCG, wantBoots: 1, wantReason: "did not boot under KVM within 10s: KVM is present but cannot run this guest"},
		{name: "auto, qemu rejects kvm", requested: "auto", kvmPresent: true, result: exited, wantAccel: vmm.AccelTCG, wantBoots: 1, wantReason: "failed to initialize kvm"},
		{name: "kvm, kvm hangs", requested: "kvm", kvmPresent: true, result: hung, wantBoots: 1, wantErr: "cannot run this guest"},
		{name: "kvm, kvm boots", requested: "kvm", kvmPresent: true, result: booted, wantAccel: vmm.AccelKVM, wantUsable: true, wantBoots: 1},
		{name: "probe cannot run", requested: "auto", kvmPresent: true, bootErr: errors.New("starting qemu: no such file"), wantBoots: 1, wantErr: "probing kvm: starting qemu"},
		{name: "unknown accel", requested: "hvf", wantErr: `unknown accel "hvf"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bootID, boots := "b1", 0
			p := fakeProber(t, tt.kvmPresent, &bootID, &tt.result, &tt.bootErr, &boots)
			v, err := p.probe(quietCtx(), ProbeOptions{QEMUPath: "/usr/bin/qemu", Kernel: "/boot/vmlinuz", Requested: tt.requested})
			if boots != tt.wantBoots {
				t.Errorf("boots = %d, want %d", boots, tt.wantBoots)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Accel != tt.wantAccel || v.KVMUsable != tt.wantUsable || !strings.Contains(v.Reason, tt.wantReason) {
				t.Errorf("got %+v, want accel %s usable %v reason ~%q", v, tt.wantAccel, tt.wantUsable, tt.wantReason)
			}
			if v.BootID != "b1" {
				t.Errorf("boot id %q", v.BootID)
			}
		})
	}
}

func TestProbeAccelCache(t *testing.T) {
	cacheDir := t.TempDir()
	bootID, boots := "boot-A", 0
	result := bootResult{timedOut: true}
	var bootErr error
	p := fakeProber(t, true, &bootID, &result, &bootErr, &boots)
	opts := ProbeOptions{QEMUPath: "/usr/bin/qemu-system-x86_64", Kernel: "/boot/vmlinuz-1", CacheDir: cacheDir, Requested: "auto"}
	ctx := quietCtx()

	steps := []struct {
		name       string
		mutate     func()
		wantBoots  int // cumulative
		wantCached bool
	}{
		{name: "first call probes", mutate: func() {}, wantBoots: 1},
		{name: "same boot uses cache", mutate: func() {}, wantBoots: 1, wantCached: true},
		{name: "new boot id probes again", mutate: func() { bootID = "boot-B" }, wantBoots: 2},
		{name: "then cached again", mutate: func() {}, wantBoots: 2, wantCached: true},
		{name: "other qemu probes again", mutate: func() { opts.QEMUPath = "/opt/qemu/bin/qemu-system-x86_64" }, wantBoots: 3},
		{name: "other kernel probes again", mutate: func() { opts.Kernel = "/boot/vmlinuz-2" }, wantBoots: 4},
		{name: "corrupt cache probes again", mutate: func() {
			if err := os.WriteFile(filepath.Join(cacheDir, AccelCacheFile), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, wantBoots: 5},
		{name: "cache rewritten", mutate: func() {}, wantBoots: 5, wantCached: true},
	}
	for _, s := range steps {
		s.mutate()
		v, err := p.probe(ctx, opts)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if boots != s.wantBoots || v.Cached != s.wantCached {
			t.Errorf("%s: boots %d cached %v, want %d %v", s.name, boots, v.Cached, s.wantBoots, s.wantCached)
		}
		if v.Accel != vmm.AccelTCG || v.KVMUsable || v.BootID != bootID {
			t.Errorf("%s: verdict %+v", s.name, v)
		}
	}

	data, err := os.ReadFile(filepath.Join(cacheDir, AccelCacheFile))
	if err != nil {
		t.Fatal(err)
	}
	var c accelCache
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if c.BootID != "boot-B" || c.QEMUPath != opts.QEMUPath || c.Kernel != opts.Kernel {
		t.Errorf("cache key %+v", c)
	}
	entries, _ := os.ReadDir(cacheDir)
	if len(entries) != 1 {
		t.Errorf("cache dir holds %d entries, want only %s", len(entries), AccelCacheFile)
	}

	// A cached "not usable" verdict makes accel = kvm fail without a boot.
	opts.Requested = vmm.AccelKVM
	if _, err := p.probe(ctx, opts); err == nil || !strings.Contains(err.Error(), "cannot run this guest") {
		t.Errorf("kvm with cached failure: err = %v", err)
	}
	if boots != 5 {
		t.Errorf("kvm with cached failure booted again (%d)", boots)
	}
}

func TestProbeAccelNoCacheWhenKVMMissing(t *testing.T) {
	cacheDir := t.TempDir()
	bootID, boots := "boot-A", 0
	var result bootResult
	var bootErr error
	p := fakeProber(t, false, &bootID, &result, &bootErr, &boots)
	if _, err := p.probe(quietCtx(), ProbeOptions{QEMUPath: "q", Kernel: "k", CacheDir: cacheDir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, AccelCacheFile)); !os.IsNotExist(err) {
		t.Errorf("a missing /dev/kvm was cached (stat: %v)", err)
	}
}

func TestMarkerWriterSplit(t *testing.T) {
	text := "\x1bcSeaBIOS\r\nBooting from ROM..\r\n[    1.4] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n"
	for _, chunk := range []int{1, 3, 7, 64, len(text)} {
		w := newMarkerWriter(panicMarkers, 64)
		for i := 0; i < len(text); i += chunk {
			w.Write([]byte(text[i:min(i+chunk, len(text))]))
		}
		if !w.found() {
			t.Errorf("chunk %d: marker not found", chunk)
		}
		select {
		case <-w.seen:
		default:
			t.Errorf("chunk %d: seen not closed", chunk)
		}
	}
	w := newMarkerWriter(panicMarkers, 64)
	w.Write([]byte("\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16.2)\r\nBooting from ROM..\x1bc\x1b[?7l\x1b[2J"))
	if w.found() {
		t.Error("found a marker in BIOS output")
	}
	if got := lastLine(w.tail()); got != "Booting from ROM.." {
		t.Errorf("lastLine = %q", got)
	}
}

func TestProbeAccelHost(t *testing.T) {
	if _, err := os.Stat(KVMDevice); err == nil && testing.Short() {
		t.Skip("/dev/kvm exists: probing it boots a guest; skipped with -short")
	}
	qemu, kernel := "/usr/bin/qemu-system-x86_64", ""
	if k, err := assets.FindKernel(""); err == nil {
		kernel = k
	}
	cacheDir := t.TempDir()
	v, err := ProbeAccel(quietCtx(), ProbeOptions{QEMUPath: qemu, Kernel: kernel, CacheDir: cacheDir, Requested: vmm.AccelAuto})
	if _, statErr := os.Stat(KVMDevice); errors.Is(statErr, os.ErrNotExist) {
		if err != nil || v.Accel != vmm.AccelTCG || v.KVMUsable || v.Reason != "/dev/kvm missing" {
			t.Errorf("no /dev/kvm: got %+v, %v", v, err)
		}
		if _, err := os.Stat(filepath.Join(cacheDir, AccelCacheFile)); !os.IsNotExist(err) {
			t.Errorf("cache written without a probe (stat: %v)", err)
		}
		return
	}
	if kernel == "" {
		t.Skip("no /boot/vmlinuz-* to probe with")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", v)
	if v.Accel != map[bool]string{true: vmm.AccelKVM, false: vmm.AccelTCG}[v.KVMUsable] {
		t.Errorf("verdict %+v", v)
	}
}
