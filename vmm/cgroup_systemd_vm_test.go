package vmm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/test/testutil/testsystemd"
	"github.com/crivm/crivm/vmm"
)

// TestVMSystemdScope: under a test systemd (testsystemd.Start), a VM
// over 9p starts its scope with QEMU (the shim waits inside vmm.Start), a
// VM over virtio-fs with virtiofsd, QEMU joining it; both are in the
// scope in every hierarchy from their start, its memory is theirs, and
// Remove takes it away.
func TestVMSystemdScope(t *testing.T) {
	requireVM(t)
	vmlinux, initrd, _ := buildAssets(t)
	fsd, _ := vmm.FindVirtiofsd("")
	bootMu.Lock()
	defer bootMu.Unlock()
	testsystemd.Run(t, testsystemd.Start(t), "TestVMSystemdScopeInside",
		"CRIVM_TEST_VMLINUX="+vmlinux, "CRIVM_TEST_INITRD="+initrd, "CRIVM_TEST_VIRTIOFSD="+fsd)
}

// inCgroup reports that pid is listed in dir's cgroup.procs.
func inCgroup(dir string, pid int) bool {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	return slices.Contains(strings.Fields(string(b)), strconv.Itoa(pid))
}

func TestVMSystemdScopeInside(t *testing.T) {
	testsystemd.Conn(t) // skips unless run by TestVMSystemdScope; waits for systemd to settle
	vmlinux, initrd, fsdPath := os.Getenv("CRIVM_TEST_VMLINUX"), os.Getenv("CRIVM_TEST_INITRD"), os.Getenv("CRIVM_TEST_VIRTIOFSD")
	for i, fs := range []string{"9p", "virtio-fs"} {
		t.Run(fs, func(t *testing.T) {
			if fs == "virtio-fs" && fsdPath == "" {
				t.Skip("no virtiofsd installed")
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			id := fmt.Sprintf("%064x", 0xc0ffee00+i)
			slice := "crivmtest-pod" + strconv.Itoa(i) + ".slice"
			cg, err := vmm.NewSystemdCgroup(slice, id)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(cg.Path, "/crivmtest.slice/"+slice+"/") {
				t.Fatalf("cgroup %s is not in %s", cg.Path, slice)
			}
			if err := cg.Create(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cg.KillAll(); cg.Remove(context.Background()) })
			dir := shortDir(t)
			mc := vmm.MachineConfig{QEMUPath: qemuPath, Accel: vmm.AccelTCG, MemoryMiB: 128, TBSizeMiB: 32,
				Kernel: vmlinux, Initrd: initrd, Dir: dir, Cgroup: cg}
			pids := map[string]int{}
			if fs == "virtio-fs" {
				d, err := vmm.StartVirtiofsd(ctx, vmm.VirtiofsdConfig{Path: fsdPath, Source: t.TempDir(), Dir: dir, Cgroup: cg})
				if err != nil {
					t.Fatal(err)
				}
				pids["virtiofsd"] = d.PID()
				mc.VirtioFS = []vmm.VirtioFSDevice{{Tag: "crivmtest", Socket: d.Socket()}}
			} else {
				mc.SharedDirs = []vmm.SharedDir{{Tag: "crivmtest", HostPath: t.TempDir(), ReadOnly: true}}
			}
			vm, err := vmm.Start(ctx, mc)
			if err != nil {
				t.Fatal(err)
			}
			pids["qemu"] = vm.PID()
			for name, pid := range pids {
				for _, d := range cg.Dirs() {
					if !inCgroup(d, pid) {
						t.Errorf("%s (pid %d) is not in %s", name, pid, d)
					}
				}
			}
			st, err := cg.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if m := st.Values[cgroupstat.MemoryUsage]; m < 8<<20 {
				t.Errorf("scope's memory usage %d bytes, want QEMU's (> 8 MiB)", m)
			} else {
				t.Logf("scope %s: memory %d MiB, pids %v", cg.Unit(), m>>20, pids)
			}

			if err := vm.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			if err := vmm.StopVirtiofsd(ctx, dir, time.Second); err != nil {
				t.Fatal(err)
			}
			if err := cg.KillAll(); err != nil {
				t.Fatal(err)
			}
			if err := cg.Remove(ctx); err != nil {
				t.Fatal(err)
			}
			for _, d := range cg.Dirs() {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind (%v)", d, err)
				}
			}
		})
	}
}
