package vmm_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/vmm"
)

// rssAnonKB is pid's RssAnon in KiB.
func rssAnonKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no RssAnon for %d", pid)
	return 0
}

// TestFreePageReporting: memory a guest frees goes back to the host: a
// guest that fills and frees 150 MiB of tmpfs leaves QEMU's anonymous
// memory about where it was before, with the balloon's free page
// reporting; the same guest without it keeps the pages.
func TestFreePageReporting(t *testing.T) {
	requireVM(t)
	vmlinux, initrd, _ := buildAssets(t)
	bootMu.Lock()
	defer bootMu.Unlock()
	share := busyboxShare(t)
	for _, tt := range []struct {
		name     string
		report   bool
		returned bool // the freed pages leave QEMU
	}{
		{"with free page reporting", true, true},
		{"without", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			vm, err := vmm.Start(ctx, vmm.MachineConfig{
				QEMUPath: qemuPath, Accel: vmm.AccelTCG, MemoryMiB: 384, TBSizeMiB: 32,
				Kernel: vmlinux, Initrd: initrd, Dir: shortDir(t),
				SharedDirs:        []vmm.SharedDir{{Tag: "crivmtest", HostPath: share, ReadOnly: true}},
				FreePageReporting: tt.report,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Kill(context.Background())
			c := healthyAgent(t, ctx, vm)
			if _, err := c.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "sb", Hostname: "fpr",
				Mounts: []*api.SharedMount{{Tag: "crivmtest", MountPoint: "/run/crivm/test", ReadOnly: true}}}); err != nil {
				t.Fatal(err)
			}
			sh := func(script string) {
				t.Helper()
				r, err := c.ExecProcess(ctx, &api.ExecProcessRequest{Args: []string{"/run/crivm/test/busybox", "sh", "-c", script}, TimeoutMs: 60000})
				if err != nil || r.ExitCode != 0 {
					t.Fatalf("%s: %v (exit %d, %s)", script, err, r.GetExitCode(), r.GetStderr())
				}
			}
			bb := "/run/crivm/test/busybox "
			time.Sleep(3 * time.Second)
			before := rssAnonKB(t, vm.PID())
			sh(bb + "mkdir -p /fpr && " + bb + "mount -t tmpfs -o size=200m tmpfs /fpr && " + bb + "dd if=/dev/zero of=/fpr/f bs=1M count=150 2>/dev/null")
			peak := rssAnonKB(t, vm.PID())
			sh(bb + "rm /fpr/f && " + bb + "umount /fpr")
			// The guest reports freed pages within a few seconds; a
			// guest without the device is given 8 s to show it keeps them.
			wait := 20 * time.Second
			if !tt.returned {
				wait = 8 * time.Second
			}
			after := peak
			for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
				if after = rssAnonKB(t, vm.PID()); after < before+50<<10 {
					break
				}
			}
			t.Logf("QEMU anon memory: %d MB before, %d MB with 150 MiB filled, %d MB after freeing", before>>10, peak>>10, after>>10)
			if peak < before+100<<10 {
				t.Fatalf("filling 150 MiB grew QEMU by %d MB only: the test did not fill guest RAM", (peak-before)>>10)
			}
			if returned := after < before+50<<10; returned != tt.returned {
				t.Errorf("after freeing: %d MB (before %d, peak %d): returned to the host = %v, want %v", after>>10, before>>10, peak>>10, returned, tt.returned)
			}
		})
	}
}
