package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/test/testutil/testsystemd"
	"github.com/crivm/crivm/vmm"
)

// cgroupV2 reports a pure cgroup v2 host.
func cgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// procCgroup is pid's cgroup in the v1 hierarchy holding controller, or
// its unified one on v2 (controller ignored).
func procCgroup(pid int, controller string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if cgroupV2() && f[0] == "0" && f[1] == "" {
			return f[2]
		}
		if !cgroupV2() && slices.Contains(strings.Split(f[1], ","), controller) {
			return f[2]
		}
	}
	return ""
}

// cgroupFile is file of cgroup path cg in controller's hierarchy (v1) or
// the unified tree (v2).
func cgroupFile(cg, controller, file string) string {
	if cgroupV2() {
		return filepath.Join("/sys/fs/cgroup", cg, file)
	}
	return filepath.Join("/sys/fs/cgroup", controller, cg, file)
}

func readUint(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// cgroupMemory is a cgroup's memory usage in bytes.
func cgroupMemory(t *testing.T, cg string) uint64 {
	if cgroupV2() {
		return readUint(t, cgroupFile(cg, "", "memory.current"))
	}
	return readUint(t, cgroupFile(cg, "memory", "memory.usage_in_bytes"))
}

// cgroupCPU is a cgroup's CPU time in nanoseconds.
func cgroupCPU(t *testing.T, cg string) uint64 {
	t.Helper()
	if !cgroupV2() {
		return readUint(t, cgroupFile(cg, "cpuacct", "cpuacct.usage"))
	}
	f, err := os.Open(cgroupFile(cg, "", "cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "usage_usec "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n * 1000
		}
	}
	t.Fatalf("no usage_usec in %s", f.Name())
	return 0
}

// smaps is a process's memory from smaps_rollup, in kB, by key (Rss, Pss,
// Pss_Anon, Pss_File, Pss_Shmem).
func smaps(pid int) map[string]int {
	out := map[string]int{}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB")); err == nil {
			out[k] = n
		}
	}
	return out
}

// cgroupDirs lists the directories of cgroup path cg in every hierarchy.
func cgroupDirs(cg string) []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + cg)
	if d := "/sys/fs/cgroup" + cg; cgroupV2() {
		if _, err := os.Stat(d); err == nil {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// removeCgroupAtEnd removes the test's cgroup parent p in every hierarchy
// when the test ends (after its pods, which it must be registered before),
// with whatever crivm left in it (nothing, if the test passes).
func removeCgroupAtEnd(t *testing.T, p string) {
	t.Cleanup(func() {
		for _, d := range cgroupDirs(p) {
			kids, _ := filepath.Glob(d + "/crivm-*")
			for _, k := range kids {
				os.Remove(k)
			}
			if err := os.Remove(d); err != nil {
				t.Logf("removing test cgroup %s: %v", d, err)
			}
		}
	})
}

// makeParent makes cgroup parent p with a memory limit (bytes) and
// removes it at the end of the test, with whatever crivm made in it
// (nothing, if the test passes).
func makeParent(t *testing.T, p string, limit uint64) {
	t.Helper()
	memDir, file := "/sys/fs/cgroup/memory"+p, "memory.limit_in_bytes"
	if cgroupV2() {
		memDir, file = "/sys/fs/cgroup"+p, "memory.max"
	}
	if err := os.MkdirAll(memDir, 0o755); err != nil {
		t.Fatal(err)
	}
	removeCgroupAtEnd(t, p)
	if err := os.WriteFile(filepath.Join(memDir, file), []byte(strconv.FormatUint(limit, 10)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestVMCgroup: a VM pod's QEMU and virtiofsd run inside the pod's cgroup,
// <cgroup_parent>/crivm-<id>, in the memory and CPU hierarchies (v1) or
// the unified tree (v2), so the VM's memory and CPU are charged to the
// pod; a pod whose cgroup limit cannot hold its VM is refused with the
// numbers; RemovePodSandbox removes the cgroup.
func TestVMCgroup(t *testing.T) {
	requiresVM(t)
	if _, err := vmm.FindVirtiofsd(""); err != nil {
		t.Skipf("virtio-fs needs virtiofsd: %v", err)
	}
	e := newRuncEnv(t, "[crivm.runtime.runtimes.vm]", `shared_fs = "virtio-fs"`)
	ctx := context.Background()
	n := time.Now().UnixNano() % 100000
	parent := fmt.Sprintf("/crivm-e2e-%d", n)
	makeParent(t, parent, 2<<30)

	// 1. A VM pod under a parent the test made (the kubelet's pod
	//    cgroup in a cluster): its cgroup is <parent>/crivm-<id>.
	pod := e.podConfig("vmcgroup")
	pod.Linux.CgroupParent = parent
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	_, info := e.sandboxStatus(t, sbID)
	want := parent + "/crivm-" + sbID
	if info.Extra["cgroup"] != want {
		t.Errorf("sandbox extra cgroup %q, want %q", info.Extra["cgroup"], want)
	}
	ctrID := e.startContainer(t, sbID, e.containerConfig("app", "sleep", "3600"), pod)

	// 2. QEMU and virtiofsd are in it, in the memory and CPU hierarchies.
	qemu := info.Process.Pid
	fsd, _ := strconv.Atoi(info.Extra["virtiofsd_pid"])
	if info.Extra["shared_fs"] != "virtio-fs" || fsd == 0 {
		t.Fatalf("sandbox extra %v: want shared_fs virtio-fs and a virtiofsd pid", info.Extra)
	}
	for _, p := range []struct {
		name string
		pid  int
	}{{"qemu", qemu}, {"virtiofsd", fsd}} {
		for _, c := range []string{"memory", "cpu", "cpuacct", "pids", "cpuset", "blkio"} {
			if got := procCgroup(p.pid, c); got != want {
				t.Errorf("%s (pid %d): %s cgroup %q, want %q", p.name, p.pid, c, got, want)
			}
		}
	}
	if len(cgroupDirs(want)) == 0 {
		t.Fatalf("no directory for cgroup %s", want)
	}

	// 3. The VM's memory is charged to the pod's cgroup, and its CPU time
	//    grows there while the guest works.
	mem := cgroupMemory(t, want)
	if mem < 100<<20 {
		t.Errorf("cgroup %s memory usage %d MB, want > 100 MB (a booted VM)", want, mem>>20)
	}
	cpu0 := cgroupCPU(t, want)
	e.exec(t, ctrID, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
	cpu1 := cgroupCPU(t, want)
	if cpu1 <= cpu0 {
		t.Errorf("cgroup %s CPU time did not grow: %d then %d ns", want, cpu0, cpu1)
	}
	q, f := smaps(qemu), smaps(fsd)
	t.Logf("cgroup %s: memory %d MB, CPU %.2f s (+%.2f s for an exec); qemu Rss %d MB Pss %d MB (anon %d, file %d, shmem %d); virtiofsd Rss %d MB Pss %d MB",
		want, mem>>20, float64(cpu1)/1e9, float64(cpu1-cpu0)/1e9, q["Rss"]>>10, q["Pss"]>>10, q["Pss_Anon"]>>10, q["Pss_File"]>>10, q["Pss_Shmem"]>>10, f["Rss"]>>10, f["Pss"]>>10)
	if st, err := os.ReadFile(cgroupFile(want, "memory", "memory.stat")); err == nil {
		var keep []string
		for _, l := range strings.Split(string(st), "\n") {
			k, _, _ := strings.Cut(l, " ")
			if slices.Contains([]string{"rss", "cache", "shmem", "mapped_file", "anon", "file", "kernel"}, k) {
				keep = append(keep, l)
			}
		}
		t.Logf("memory.stat: %s", strings.Join(keep, ", "))
	}

	// 3b. The pod's stats are the VM's, host-side (the kubelet's
	//     /stats/summary and eviction read them): memory at least the
	//     cgroup's, CPU cumulative, usage_nano_cores from the second
	//     sample on.
	first, err := e.rs.PodSandboxStats(ctx, sbID)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	e.exec(t, ctrID, "sh", "-c", "i=0; while [ $i -lt 5000 ]; do i=$((i+1)); done")
	second, err := e.rs.PodSandboxStats(ctx, sbID)
	if err != nil {
		t.Fatal(err)
	}
	if ws := second.GetLinux().GetMemory().GetWorkingSetBytes().GetValue(); ws < 100<<20 {
		t.Errorf("pod working set %d MB, want the VM's (> 100 MB)", ws>>20)
	}
	if c0, c1 := first.GetLinux().GetCpu().GetUsageCoreNanoSeconds().GetValue(), second.GetLinux().GetCpu().GetUsageCoreNanoSeconds().GetValue(); c1 <= c0 || c1 < cpu0 {
		t.Errorf("pod CPU %d then %d ns, want the VM cgroup's, growing (cgroup had %d)", c0, c1, cpu0)
	}
	if nc := second.GetLinux().GetCpu().GetUsageNanoCores(); nc == nil || nc.GetValue() == 0 {
		t.Errorf("pod usage_nano_cores %v on the second sample, want > 0", nc)
	} else {
		t.Logf("pod stats: working set %d MB, %.3f cores", second.GetLinux().GetMemory().GetWorkingSetBytes().GetValue()>>20, float64(nc.GetValue())/1e9)
	}

	// 4. A pod whose cgroup cannot hold its VM (containers' limits of
	//    64 MiB and no RuntimeClass overhead) is refused up front, with
	//    the numbers, and leaves no cgroup.
	small := fmt.Sprintf("/crivm-e2e-%d-small", n)
	makeParent(t, small, 64<<20)
	tight := e.podConfig("vmtight")
	tight.Linux.CgroupParent = small
	tight.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}
	_, err = e.rs.RunPodSandbox(ctx, tight, "vm")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "memory limit of 64 MiB") || !strings.Contains(err.Error(), "overhead.podFixed.memory") {
		t.Errorf("a VM pod in a 64 MiB cgroup: %v, want FailedPrecondition naming the limit and the overhead to set", err)
	} else {
		t.Logf("refused: %v", err)
	}
	for _, d := range cgroupDirs(small) {
		if kids, _ := filepath.Glob(d + "/crivm-*"); len(kids) > 0 {
			t.Errorf("a refused pod left cgroups: %v", kids)
		}
	}

	// 5. Removal: QEMU and virtiofsd end, the cgroup goes in every
	//    hierarchy; its parent stays (it is the kubelet's).
	removeVMPod(t, e, sbID, want, qemu, fsd)
	if len(cgroupDirs(parent)) == 0 {
		t.Errorf("the parent %s was removed: it is not crivm's", parent)
	}
}

// removeVMPod stops and removes sandbox sbID and asserts that pids
// (QEMU, virtiofsd) ended and cg is gone in every hierarchy.
func removeVMPod(t *testing.T, e *runcEnv, sbID, cg string, pids ...int) {
	t.Helper()
	ctx := context.Background()
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if proc.Alive(pid, 0, "") {
			t.Errorf("pid %d alive after RemovePodSandbox", pid)
		}
	}
	if dirs := cgroupDirs(cg); len(dirs) > 0 {
		t.Errorf("cgroup dirs left after RemovePodSandbox: %v", dirs)
	}
}

// underTestSystemd runs the calling test again inside a private systemd's
// namespaces (testsystemd), after the gates of a VM test on virtio-fs,
// and reports whether the caller is that run, which does the test's work.
func underTestSystemd(t *testing.T) bool {
	t.Helper()
	if testsystemd.Inside() {
		return true
	}
	requiresVM(t)
	if _, err := vmm.FindVirtiofsd(""); err != nil {
		t.Skipf("virtio-fs needs virtiofsd: %v", err)
	}
	testsystemd.Run(t, testsystemd.Start(t), t.Name())
	return false
}

// TestVMCgroupSystemd: with cgroup_manager = "systemd", under a real
// systemd (a test one here), a VM pod's QEMU and virtiofsd run in the
// transient scope crivm-vm-<id>.scope of the pod's slice, in every
// hierarchy, with Delegate set; the pod's stats are the scope's; the
// slice's memory limit is honoured; RemovePodSandbox stops the scope and
// its cgroup goes.
func TestVMCgroupSystemd(t *testing.T) {
	if !underTestSystemd(t) {
		return
	}
	conn := testsystemd.Conn(t)
	e := newRuncEnv(t, "[crivm.runtime]", `cgroup_manager = "systemd"`, "[crivm.runtime.runtimes.vm]", `shared_fs = "virtio-fs"`)
	ctx := context.Background()
	n := time.Now().UnixNano() % 100000
	slice := fmt.Sprintf("crivme2e-pod%d.slice", n)
	testsystemd.StartSlice(t, conn, slice, 2<<30)

	// 1. The pod's cgroup is the scope, below the expanded slice.
	pod := e.podConfig("vmsystemd")
	pod.Linux.CgroupParent = slice
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	_, info := e.sandboxStatus(t, sbID)
	unit := "crivm-vm-" + sbID + ".scope"
	want := "/crivme2e.slice/" + slice + "/" + unit
	if info.Extra["cgroup"] != want {
		t.Errorf("sandbox extra cgroup %q, want %q", info.Extra["cgroup"], want)
	}
	ctrID := e.startContainer(t, sbID, e.containerConfig("app", "sleep", "3600"), pod)

	// 2. QEMU and virtiofsd are in it in every hierarchy; systemd knows
	//    the scope there, delegated, in the pod's slice.
	qemu := info.Process.Pid
	fsd, _ := strconv.Atoi(info.Extra["virtiofsd_pid"])
	if fsd == 0 {
		t.Fatalf("sandbox extra %v: want a virtiofsd pid", info.Extra)
	}
	for _, p := range []struct {
		name string
		pid  int
	}{{"qemu", qemu}, {"virtiofsd", fsd}} {
		for _, c := range []string{"memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "name=systemd"} {
			if got := procCgroup(p.pid, c); got != want {
				t.Errorf("%s (pid %d): %s cgroup %q, want %q", p.name, p.pid, c, got, want)
			}
		}
	}
	props, err := conn.GetUnitTypePropertiesContext(ctx, unit, "Scope")
	if err != nil {
		t.Fatal(err)
	}
	for k, w := range map[string]any{"ControlGroup": want, "Slice": slice, "Delegate": true} {
		if got := props[k]; fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("scope %s: %s = %v, want %v", unit, k, got, w)
		}
	}

	// 3. The VM's memory and CPU are the scope's, and the pod's stats.
	mem := cgroupMemory(t, want)
	if mem < 100<<20 {
		t.Errorf("scope memory usage %d MB, want > 100 MB (a booted VM)", mem>>20)
	}
	cpu0 := cgroupCPU(t, want)
	e.exec(t, ctrID, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
	cpu1 := cgroupCPU(t, want)
	if cpu1 <= cpu0 {
		t.Errorf("scope CPU time did not grow: %d then %d ns", cpu0, cpu1)
	}
	t.Logf("scope %s: memory %d MB, CPU %.2f s (+%.2f s for an exec)", unit, mem>>20, float64(cpu1)/1e9, float64(cpu1-cpu0)/1e9)
	st, err := e.rs.PodSandboxStats(ctx, sbID)
	if err != nil {
		t.Fatal(err)
	}
	if ws := st.GetLinux().GetMemory().GetWorkingSetBytes().GetValue(); ws < 100<<20 {
		t.Errorf("pod working set %d MB, want the VM's (> 100 MB)", ws>>20)
	}

	// 4. A slice whose limit cannot hold the VM refuses the pod, naming
	//    it, and leaves no scope.
	small := fmt.Sprintf("crivme2e-pod%dsmall.slice", n)
	testsystemd.StartSlice(t, conn, small, 64<<20)
	tight := e.podConfig("vmsystemdtight")
	tight.Linux.CgroupParent = small
	tight.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}
	_, err = e.rs.RunPodSandbox(ctx, tight, "vm")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "/crivme2e.slice/"+small) || !strings.Contains(err.Error(), "memory limit of 64 MiB") {
		t.Errorf("a VM pod in a 64 MiB slice: %v, want FailedPrecondition naming the slice's limit", err)
	}
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/crivme2e.slice/" + small + "/crivm-vm-*"); len(dirs) > 0 {
		t.Errorf("a refused pod left scopes: %v", dirs)
	}

	// 5. Removal: QEMU and virtiofsd end, the scope is stopped and its
	//    cgroup goes in every hierarchy; the slice stays (the kubelet's).
	removeVMPod(t, e, sbID, want, qemu, fsd)
	u, err := conn.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		t.Fatal(err)
	}
	if u["ActiveState"] == "active" || u["LoadState"] == "loaded" {
		t.Errorf("scope %s after RemovePodSandbox: %v, %v", unit, u["LoadState"], u["ActiveState"])
	}
	if len(cgroupDirs("/crivme2e.slice/"+slice)) == 0 {
		t.Errorf("the slice %s was removed: it is not crivm's", slice)
	}
}
