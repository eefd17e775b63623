package vm

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/vmm"
)

func podWith(parent string, limit, overhead int64) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{
		CgroupParent: parent,
		Resources:    &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit},
		Overhead:     &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: overhead},
	}}
}

// TestMemoryMiB: the guest gets the containers' limits plus headroom, or
// the default; the RuntimeClass overhead pays for QEMU, not guest RAM.
func TestMemoryMiB(t *testing.T) {
	for _, tt := range []struct {
		cfg  *runtimeapi.PodSandboxConfig
		want int
	}{
		{&runtimeapi.PodSandboxConfig{}, 256},
		{podWith("", 0, 320<<20), 256},
		{podWith("", 64<<20, 0), 64 + guestHeadroomMiB},
		{podWith("", 64<<20, 320<<20), 64 + guestHeadroomMiB},
		{podWith("", 1<<30, 0), 1024 + guestHeadroomMiB},
	} {
		if got := memoryMiB(tt.cfg, 256); got != tt.want {
			t.Errorf("memoryMiB(%v) = %d, want %d", tt.cfg, got, tt.want)
		}
	}
}

// TestVMFits: a pod cgroup limit below guest RAM plus QEMU's own is
// refused, naming the numbers and the overhead to set; no limit, or
// enough, passes.
func TestVMFits(t *testing.T) {
	const mi = 1 << 20
	need := func(guest int) uint64 { return uint64(guest+qemuOverheadMiB) * mi }
	for _, tt := range []struct {
		name     string
		limit    uint64
		guestMiB int
		ctrs     uint64
		ok       bool
		want     []string
	}{
		{name: "no limit", guestMiB: 256, ok: true},
		{name: "exactly enough", limit: need(128), guestMiB: 128, ctrs: 64 * mi, ok: true},
		{name: "plenty", limit: 4 << 30, guestMiB: 128, ctrs: 64 * mi, ok: true},
		{name: "containers' limits without overhead", limit: 64 * mi, guestMiB: 128, ctrs: 64 * mi,
			want: []string{"memory limit of 64 MiB", "needs 256 MiB", "128 MiB of guest RAM", "limits of 64 MiB", "overhead.podFixed.memory of at least 192Mi"}},
		{name: "one MiB short", limit: need(128) - mi, guestMiB: 128, ctrs: 64 * mi,
			want: []string{"memory limit of 255 MiB", "at least 192Mi"}},
		{name: "limit set above the pod, default guest", limit: 300 * mi, guestMiB: 256,
			want: []string{"needs 384 MiB", "at least 384Mi"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := vmFits("vm", tt.limit, "/kubepods/burstable/pod1", tt.guestMiB, tt.ctrs)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("%v, want FailedPrecondition", err)
			}
			for _, w := range append(tt.want, "/kubepods/burstable/pod1", `handler "vm"`) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestSandboxCgroup: cgroupfs places the VM under the pod's parent (or
// /crivm); systemd in the scope crivm-vm-<id>.scope of the pod's slice (or
// system.slice); a parent of the other driver is refused.
func TestSandboxCgroup(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tt := range []struct {
		driver, parent, want, unit string
		class                      error
	}{
		{driver: "", parent: "", want: vmm.CgroupDefaultParent + "/crivm-" + id},
		{driver: "cgroupfs", parent: "/kubepods/besteffort/pod1", want: "/kubepods/besteffort/pod1/crivm-" + id},
		{driver: "cgroupfs", parent: "kubepods-besteffort-pod1.slice", class: errdefs.ErrInvalidArgument},
		{driver: "systemd", parent: "kubepods-besteffort-pod1.slice", unit: "crivm-vm-" + id + ".scope",
			want: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crivm-vm-" + id + ".scope"},
		{driver: "systemd", parent: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2.slice", unit: "crivm-vm-" + id + ".scope",
			want: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2.slice/crivm-vm-" + id + ".scope"},
		{driver: "systemd", parent: "", unit: "crivm-vm-" + id + ".scope", want: "/system.slice/crivm-vm-" + id + ".scope"},
		{driver: "systemd", parent: "/kubepods/besteffort/pod1", class: errdefs.ErrInvalidArgument},
		{driver: "systemd", parent: "kubepods--pod1.slice", class: errdefs.ErrInvalidArgument},
		{driver: "cgroupfs2", parent: "/kubepods", class: errdefs.ErrFailedPrecondition},
	} {
		h := &Handler{name: "vm", cgroupDriver: tt.driver}
		cg, err := h.sandboxCgroup(podWith(tt.parent, 0, 0), id)
		if tt.class != nil {
			if !errdefs.IsClass(err, tt.class) {
				t.Errorf("driver %q parent %q: %v, want %v", tt.driver, tt.parent, err, tt.class)
			}
			continue
		}
		if err != nil {
			t.Skipf("no cgroup hierarchy here: %v", err)
		}
		if cg.Path != tt.want || cg.Unit() != tt.unit {
			t.Errorf("driver %q parent %q: %s unit %q, want %s unit %q", tt.driver, tt.parent, cg.Path, cg.Unit(), tt.want, tt.unit)
		}
	}
}
