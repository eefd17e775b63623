package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/vmm"
)

// procStatus is /proc/<pid>/status as key -> value.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// capMask is the capability bit set of caps.
func capMask(caps []uintptr) uint64 {
	var m uint64
	for _, c := range caps {
		m |= 1 << c
	}
	return m
}

const (
	capNetAdmin = 12
	capSysAdmin = 21
)

// TestVMLeastPrivilege: a VM pod's QEMU runs as an unprivileged uid of its
// own, with no capability but the 9p server's file capabilities (none with
// virtio-fs), with no_new_privs and its seccomp filter, in a mount
// namespace that holds none of the host's files but /usr and its own; the
// VM gets the vCPUs of the pod's CPU limit, the guest overcommits memory
// as a kubelet node does (a container past its limit is OOM-killed), and
// a pod above max_vcpus or max_memory_mib is InvalidArgument.
func TestVMLeastPrivilege(t *testing.T) {
	requiresVM(t)
	eachSharedFS(t, func(t *testing.T, fs string) {
		e := newRuncEnv(t, "[crivm.runtime.runtimes.vm]", fmt.Sprintf("shared_fs = %q", fs), "max_vcpus = 2", "max_memory_mib = 1024")
		ctx := context.Background()

		// 1. A pod with a 1500m CPU limit and 128 MiB of memory.
		pod := e.podConfig("vmpriv")
		pod.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 150000, MemoryLimitInBytes: 128 << 20}
		sbID, err := e.rs.RunPodSandbox(ctx, pod, "vm")
		if err != nil {
			t.Fatal(err)
		}
		e.ids = append(e.ids, sbID)
		t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
		_, info := e.sandboxStatus(t, sbID)
		qemu := info.Process.Pid

		// 2. QEMU's credentials and capabilities.
		st := procStatus(t, qemu)
		uids := strings.Fields(st["Uid"])
		if len(uids) != 4 {
			t.Fatalf("qemu Uid line %q", st["Uid"])
		}
		for _, u := range append(uids, strings.Fields(st["Gid"])...) {
			if n, _ := strconv.ParseUint(u, 10, 32); n < 3000000000 {
				t.Errorf("qemu runs with id %s (Uid %q Gid %q), want one from vmm_uid_base", u, st["Uid"], st["Gid"])
			}
		}
		capEff, _ := strconv.ParseUint(st["CapEff"], 16, 64)
		capPrm, _ := strconv.ParseUint(st["CapPrm"], 16, 64)
		want := uint64(0)
		if fs == "9p" {
			want = capMask(vmm.NinePCaps)
		}
		if capEff != want || capPrm != want {
			t.Errorf("qemu CapEff %#x CapPrm %#x, want %#x", capEff, capPrm, want)
		}
		if capEff&(1<<capSysAdmin|1<<capNetAdmin) != 0 {
			t.Errorf("qemu holds CAP_SYS_ADMIN or CAP_NET_ADMIN: %#x", capEff)
		}
		if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
			t.Errorf("qemu NoNewPrivs %q Seccomp %q, want 1 and 2", st["NoNewPrivs"], st["Seccomp"])
		}
		t.Logf("qemu (pid %d): Uid %s, CapEff %#x, NoNewPrivs %s, Seccomp %s", qemu, st["Uid"], capEff, st["NoNewPrivs"], st["Seccomp"])

		// 3. Its mount namespace is not the host's and holds only
		//    /usr, device nodes, proc, /var/run and the VM dir.
		hostNS, _ := os.Readlink("/proc/self/ns/mnt")
		qemuNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", qemu))
		if qemuNS == "" || qemuNS == hostNS {
			t.Errorf("qemu's mount namespace %q is the host's %q", qemuNS, hostNS)
		}
		vmDir := info.Extra["vm_dir"]
		mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", qemu))
		if err != nil {
			t.Fatal(err)
		}
		allowed := []string{"/usr", "/etc/ld.so.cache", "/dev", "/proc", "/var/run", vmDir, "/boot", e.d.Dir}
		for _, l := range strings.Split(strings.TrimSpace(string(mi)), "\n") {
			f := strings.Fields(l)
			if len(f) < 5 || f[4] == "/" {
				continue
			}
			ok := false
			for _, a := range allowed {
				if f[4] == a || strings.HasPrefix(f[4], a+"/") {
					ok = true
				}
			}
			if !ok {
				t.Errorf("qemu's namespace holds the host mount %s", f[4])
			}
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/etc/passwd", qemu)); err == nil {
			t.Error("qemu sees the host's /etc/passwd")
		}

		// 4. The guest has the vCPUs of the CPU limit, rounded up.
		ctr := e.startContainer(t, sbID, e.containerConfig("app", "sleep", "3600"), pod)
		if got := strings.TrimSpace(e.exec(t, ctr, "grep", "-c", "^processor", "/proc/cpuinfo")); got != "2" {
			t.Errorf("a 1500m pod sees %s CPUs, want 2", got)
		}

		// 5. Past its limit a container is OOM-killed (137), not
		//    refused memory: the guest overcommits as a node does.
		if got := strings.TrimSpace(e.exec(t, ctr, "cat", "/proc/sys/vm/overcommit_memory")); got != "1" {
			t.Errorf("guest vm.overcommit_memory %s, want 1", got)
		}
		hog := e.containerConfig("hog", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
		hog.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}
		hogID := e.startContainer(t, sbID, hog, pod)
		if got := e.waitExited(t, hogID, 60*time.Second); got.Reason != "OOMKilled" || got.ExitCode != 137 {
			t.Errorf("a 64 MiB allocation under a 16 MiB limit: reason %q exit %d, want OOMKilled 137", got.Reason, got.ExitCode)
		}

		// 6. The pod's cgroup holds what QEMU allocated itself.
		cg := info.Extra["cgroup"]
		if mem, q := cgroupMemory(t, cg), smaps(qemu); mem < uint64(q["Pss_Anon"]+q["Pss_Shmem"])<<10 {
			t.Errorf("cgroup %s memory %d MB, below qemu's anon+shmem %d MB", cg, mem>>20, (q["Pss_Anon"]+q["Pss_Shmem"])>>10)
		}

		// 7. Above max_vcpus or max_memory_mib: InvalidArgument, and
		//    nothing made for the pod.
		before, _ := filepath.Glob(filepath.Join(filepath.Dir(vmDir), "*"))
		for _, r := range []struct {
			name string
			res  *runtimeapi.LinuxContainerResources
			key  string
		}{
			{"cpu", &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 300000}, "max_vcpus"},
			{"memory", &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2 << 30}, "max_memory_mib"},
			{"huge", &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 62}, "max_memory_mib"},
		} {
			big := e.podConfig("vmbig-" + r.name)
			big.Linux.Resources = r.res
			_, err := e.rs.RunPodSandbox(ctx, big, "vm")
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), r.key) {
				t.Errorf("a pod above %s (%s): %v, want InvalidArgument naming %s", r.key, r.name, err, r.key)
			}
		}
		if after, _ := filepath.Glob(filepath.Join(filepath.Dir(vmDir), "*")); len(after) != len(before) {
			t.Errorf("refused pods left VM dirs: %q, before %q", after, before)
		}
	})
}
