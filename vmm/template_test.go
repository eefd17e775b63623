package vmm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/vmm"
)

// TestTemplateClones: a template saved with its RAM in a sealed memfd
// gives clones that answer on the agent channel, differ in their
// randomness (vmgenid), and leave the template's RAM unchanged; no
// process can write the sealed RAM.
func TestTemplateClones(t *testing.T) {
	requireVM(t)
	vmlinux, initrd, _ := buildAssets(t)
	bootMu.Lock()
	defer bootMu.Unlock()
	share := busyboxShare(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	machine := func(dir string, ram *vmm.RAMFile, state *os.File) vmm.MachineConfig {
		return vmm.MachineConfig{
			QEMUPath: qemuPath, Accel: vmm.AccelTCG, MemoryMiB: 256, TBSizeMiB: 32,
			Kernel: vmlinux, Initrd: initrd, Dir: dir,
			SharedDirs: []vmm.SharedDir{{Tag: "crivmtest", HostPath: share, ReadOnly: true}},
			Taps:       []vmm.Tap{{MAC: "02:00:00:00:00:aa", Unplugged: true}},
			RAM:        ram, Incoming: state, VMGenID: true,
		}
	}

	// 1. Boot the template until its agent waits for a host, and save it.
	ram, err := vmm.NewTemplateRAM("test", 256)
	if err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	tpl, err := vmm.Start(ctx, machine(shortDir(t), &vmm.RAMFile{File: ram, Shared: true}, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Kill(context.Background())
	if err := tpl.WaitAgentPort(ctx); err != nil {
		dumpConsole(t, tpl)
		t.Fatal(err)
	}
	state, err := os.CreateTemp(shortDir(t), "state")
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	if err := tpl.SaveState(ctx, state); err != nil {
		t.Fatal(err)
	}
	if err := tpl.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := state.Stat()
	t.Logf("device state: %d bytes", st.Size())
	if st.Size() == 0 || st.Size() > 16<<20 {
		t.Fatalf("device state of %d bytes: want the devices only (guest RAM stays in the memfd)", st.Size())
	}

	// 2. Seal the RAM: nobody writes it from now on.
	if err := vmm.SealTemplateRAM(ram); err != nil {
		t.Fatal(err)
	}
	const allSeals = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL
	if seals, err := unix.FcntlInt(ram.Fd(), unix.F_GET_SEALS, 0); err != nil || seals&allSeals != allSeals {
		t.Fatalf("template RAM seals %#x (%v) after SealTemplateRAM, want %#x", seals, err, allSeals)
	}
	if _, err := unix.Pwrite(int(ram.Fd()), []byte("x"), 4096); !errors.Is(err, unix.EPERM) {
		t.Errorf("writing the sealed RAM: %v, want EPERM", err)
	}
	if _, err := unix.Mmap(int(ram.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); !errors.Is(err, unix.EPERM) {
		t.Errorf("mapping the sealed RAM shared and writable: %v, want EPERM", err)
	}
	before := ramHash(t, ram)

	// 3. Two clones load the state, answer, and draw different bytes.
	var draws []string
	for i := range 2 {
		start := time.Now()
		in, err := os.Open(state.Name())
		if err != nil {
			t.Fatal(err)
		}
		vm, err := vmm.Start(ctx, machine(shortDir(t), &vmm.RAMFile{File: ram}, in))
		in.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer vm.Kill(context.Background())
		if err := vm.LoadState(ctx); err != nil {
			dumpConsole(t, vm)
			t.Fatal(err)
		}
		c := healthyAgent(t, ctx, vm)
		t.Logf("clone %d: QEMU start to healthy agent in %v", i, time.Since(start).Round(time.Millisecond))
		entropy := make([]byte, 64)
		rand.Read(entropy)
		// A time an hour ahead: the guest's clock must be Resume's, not the
		// template's.
		if _, err := c.Resume(ctx, &api.ResumeRequest{Entropy: entropy, RealtimeUnixNano: time.Now().Add(time.Hour).UnixNano()}); err != nil {
			t.Fatalf("resuming the clone: %v", err)
		}
		if _, err := c.CreateSandbox(ctx, &api.CreateSandboxRequest{
			SandboxId: "sb", Hostname: "clone",
			Mounts: []*api.SharedMount{{Tag: "crivmtest", MountPoint: "/run/crivm/test", ReadOnly: true}},
		}); err != nil {
			t.Fatal(err)
		}
		r, err := c.ExecProcess(ctx, &api.ExecProcessRequest{
			Args:      []string{"/run/crivm/test/busybox", "sh", "-c", "/run/crivm/test/busybox head -c 32 /dev/urandom | /run/crivm/test/busybox od -An -tx1"},
			TimeoutMs: 30000,
		})
		if err != nil || r.ExitCode != 0 {
			t.Fatalf("reading the guest's urandom: %v (exit %d, %q)", err, r.GetExitCode(), r.GetStderr())
		}
		draws = append(draws, strings.Join(strings.Fields(string(r.Stdout)), ""))
		r, err = c.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"/run/crivm/test/busybox", "date", "+%s"}, TimeoutMs: 30000})
		if err != nil {
			t.Fatal(err)
		}
		guest, _ := strconv.ParseInt(strings.TrimSpace(string(r.Stdout)), 10, 64)
		if d := time.Now().Add(time.Hour).Unix() - guest; d < -5 || d > 5 {
			t.Errorf("clone %d: guest clock %d is %d s off the time Resume set", i, guest, d)
		}
		c.Close()
	}
	if len(draws[0]) != 64 || draws[0] == draws[1] {
		t.Errorf("the clones drew %q and %q: want 32 different bytes each", draws[0], draws[1])
	}
	if after := ramHash(t, ram); !bytes.Equal(before, after) {
		t.Error("the template's RAM changed while clones ran")
	}
}

func ramHash(t *testing.T, f *os.File) []byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 256<<20)); err != nil {
		t.Fatal(err)
	}
	return h.Sum(nil)
}
