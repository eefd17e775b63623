package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/test/framework"
)

// TestOrphanSweep: a pod with a running container whose records are lost
// while the daemon is down (SIGKILL, then its sandbox and container
// deleted from the store) is released by the next start's sweep, for both
// handlers: no QEMU, conmon, runc container, netns, veth, IP allocation,
// mount, cgroup, storage container or dir of it is left, each release is
// logged, and the start after finds nothing more.
func TestOrphanSweep(t *testing.T) {
	eachHandler(t, func(t *testing.T, handler string) {
		e := newRuncEnv(t)
		ctx := context.Background()

		// 1. A pod with a running container.
		pod := e.podConfig("orphan-" + handler)
		sbID, err := e.rs.RunPodSandbox(ctx, pod, handler)
		if err != nil {
			t.Fatal(err)
		}
		e.ids = append(e.ids, sbID)
		// The framework's cleanup finds namespaces through the
		// records this test deletes.
		t.Cleanup(func() { netns.FromPath("/var/run/netns/crivm-" + sbID[:32]).Remove() })
		ctrID := e.startContainer(t, sbID, e.containerConfig("app", "sleep", "3600"), pod)
		ids := []string{sbID, ctrID}

		// 2. What it holds on the host is there (so that step 5 can
		// fail).
		paths := orphanPaths(e, handler, sbID, ctrID)
		for _, p := range paths {
			if _, err := os.Lstat(p); err != nil {
				t.Fatalf("before the crash: %v", err)
			}
		}
		cgroup := "crivm-" + ctrID // a VM pod's containers are in its VM's
		if handler == "vm" {
			cgroup = "crivm-" + sbID
		}
		if found, _ := filepath.Glob("/sys/fs/cgroup/*/crivm/" + cgroup); len(found) == 0 {
			t.Fatalf("before the crash: no cgroup %s", cgroup)
		}
		if got := monitorsOf(ids); got == "" {
			t.Fatal("before the crash: no process of the pod")
		}
		storage := []string{ctrID}
		if handler == "runc" {
			storage = append(storage, sbID) // the infra container's rootfs
		}
		for _, id := range storage {
			if !inStorage(t, e.d, id) {
				t.Fatalf("before the crash: no storage container %s", id)
			}
		}
		if len(ipAllocationsOf(t, e.d, sbID)) == 0 {
			t.Fatal("before the crash: no IP allocation of the pod")
		}

		// 3. The daemon dies; the pod runs on.
		if err := e.d.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		e.d.Wait(30 * time.Second) // killed: its status is an error
		if got := monitorsOf(ids); got == "" {
			t.Fatal("the pod died with the daemon")
		}

		// 4. Its records are lost.
		st, err := store.Open(filepath.Join(e.d.Root, "store"))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Containers.Delete(ctrID); err != nil {
			t.Fatal(err)
		}
		if err := st.Sandboxes.Delete(sbID); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}

		// 5. The restart's sweep releases all of it, saying so.
		e.d.Start(ctx)
		e.rs, e.is = e.d.RuntimeService(ctx), e.d.ImageService(ctx)
		released := []string{"owner=\"pod network\" id=" + sbID, "owner=\"pod dirs\" id=" + sbID, "owner=\"image storage\" id=" + ctrID}
		if handler == "runc" {
			released = append(released, "owner=\"handler runc\" id="+sbID, "owner=\"handler runc\" id="+ctrID, "owner=\"image storage\" id="+sbID)
		} else {
			released = append(released, "owner=\"handler vm\" id="+sbID[:32]+" ")
		}
		for _, r := range released {
			if err := e.d.WaitLog(10*time.Second, `msg="released an orphan no record names" `+r); err != nil {
				t.Error(err)
			}
		}
		e.checkNoLeaks(t, ids...)
		for _, p := range paths {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("%s left behind (%v)", p, err)
			}
		}
		for _, id := range storage {
			if inStorage(t, e.d, id) {
				t.Errorf("storage container %s left behind", id)
			}
		}
		if got := monitorsOf(ids); got != "" {
			t.Errorf("processes left behind:\n%s", got)
		}
		if got := ipAllocationsOf(t, e.d, sbID); len(got) > 0 {
			t.Errorf("IP allocations left behind: %v", got)
		}

		// 6. The next start finds nothing more to release.
		if err := e.d.Stop(15 * time.Second); err != nil {
			t.Fatal(err)
		}
		n := strings.Count(e.d.Log(), "released an orphan no record names")
		e.d.Start(ctx)
		e.rs, e.is = e.d.RuntimeService(ctx), e.d.ImageService(ctx)
		if again := strings.Count(e.d.Log(), "released an orphan no record names") - n; again != 0 {
			t.Errorf("the second start released %d more orphans", again)
		}
		for _, l := range strings.Split(e.d.Log(), "\n") {
			if strings.Contains(l, "an orphan no record names could not be released") || strings.Contains(l, "an orphan no record names waits") {
				t.Errorf("a release failed: %s", l)
			}
		}
	})
}

// orphanPaths are the files and dirs the daemon keeps for a pod of
// handler with one container: its netns (named by the first 32 characters
// of its ID, which the leak check's match on whole IDs misses), pod dir
// and handler dirs.
func orphanPaths(e *runcEnv, handler, sbID, ctrID string) []string {
	dirs := []string{"/var/run/netns/crivm-" + sbID[:32], filepath.Join(e.d.Runroot, "pods", sbID)}
	if handler == "vm" {
		return append(dirs, filepath.Join(e.d.Runroot, "handlers", "vm", sbID[:32]))
	}
	for _, id := range []string{sbID, ctrID} {
		dirs = append(dirs,
			filepath.Join(e.d.Runroot, "handlers", "runc", "bundles", id),
			filepath.Join(e.d.Runroot, "handlers", "runc", "state", id),
			filepath.Join(e.d.Runroot, "handlers", "runc", "sock", id))
	}
	return dirs
}

// monitorsOf lists the conmon, runc, QEMU and virtiofsd processes whose
// command line names one of ids (QEMU by the first 12 characters of its
// sandbox's, virtiofsd by the first 32).
func monitorsOf(ids []string) string {
	out, _ := exec.Command("sh", "-c", "ps -eo pid,args | grep -E 'conmon|runc|qemu-system|virtiofsd' | grep -v grep || true").Output()
	var mine []string
	for _, l := range strings.Split(string(out), "\n") {
		for _, id := range ids {
			if strings.Contains(l, id[:32]) || strings.Contains(l, "crivm-"+id[:12]) {
				mine = append(mine, l)
				break
			}
		}
	}
	return strings.Join(mine, "\n")
}

// inStorage reports whether d's image storage holds the storage container
// id (read from the store's file: the daemon holds the store).
func inStorage(t *testing.T, d *framework.Daemon, id string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(d.Root, "storage", "*-containers", "containers.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no containers.json in %s/storage (%v)", d.Root, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), `"`+id+`"`) {
			return true
		}
	}
	return false
}

// ipAllocationsOf lists the addresses host-local holds for sandbox id in
// d's network (its IPAM data dir is the daemon's own: see
// framework.UseBridgeNetwork).
func ipAllocationsOf(t *testing.T, d *framework.Daemon, id string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(d.Dir, "ipam", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), id) {
			out = append(out, filepath.Base(f))
		}
	}
	return out
}
