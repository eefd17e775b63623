package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/agent"
	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/vmm"
)

// guestRootAgent builds the agent with the crivm_guestroot tag: it runs an
// exec whose first argument is agent.GuestRootExec as guest root, outside
// every container, which is what a guest whose kernel or agent has been
// taken over can do.
func guestRootAgent(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "crivm-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "containers_image_openpgp exclude_graphdriver_btrfs crivm_guestroot",
		"-ldflags", "-s -w", "-o", out, "github.com/crivm/crivm/cmd/crivm-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the guest-root test agent: %v\n%s", err, b)
	}
	return out
}

// hostMountPoints lists the host's mount points, decoded, but for those
// other tests running at the same time make and remove: below the temp dir
// (unless below one of ours) and below the netns dirs.
func hostMountPoints(t *testing.T, ours ...string) []string {
	t.Helper()
	ms, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Fatal(err)
	}
	below := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	var out []string
	for _, m := range ms {
		p := m.Mountpoint
		mine := slices.ContainsFunc(ours, func(d string) bool { return below(p, d) })
		if !mine && (below(p, os.TempDir()) || below(p, "/run/netns") || below(p, "/var/run/netns")) {
			continue
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// eachHandler runs fn as a subtest for the runc and the vm handler (the
// latter skipped, saying why, where VMs cannot run).
func eachHandler(t *testing.T, fn func(t *testing.T, handler string)) {
	for _, handler := range []string{"runc", "vm"} {
		t.Run(handler, func(t *testing.T) {
			if handler == "vm" {
				requiresVM(t)
			}
			fn(t, handler)
		})
	}
}

// eachSharedFS runs fn as a subtest for 9p and for virtio-fs (skipped,
// saying why, where virtiofsd is missing).
func eachSharedFS(t *testing.T, fn func(t *testing.T, fs string)) {
	for _, fs := range []string{"9p", "virtio-fs"} {
		t.Run(fs, func(t *testing.T) {
			if fs == "virtio-fs" {
				if _, err := vmm.FindVirtiofsd(""); err != nil {
					t.Skipf("virtio-fs needs virtiofsd: %v", err)
				}
			}
			fn(t, fs)
		})
	}
}

// TestVMShareBoundary attacks the pod's share as guest root, over 9p and
// over virtio-fs: the structure the host manipulates cannot be changed,
// a read-only volume cannot be written, a device node made in the guest
// does not open a host device, no host mount appears or disappears, and
// removing the pod neither deletes a volume's files nor unmounts a host
// mount below a shared host mount it used.
func TestVMShareBoundary(t *testing.T) {
	requiresVM(t)
	eachSharedFS(t, testShareBoundary)
}

func testShareBoundary(t *testing.T, sharedFS string) {
	vols := t.TempDir()
	e := newRuncEnv(t,
		"[crivm.runtime]", fmt.Sprintf("untrusted_allowed_host_paths = [%q]", vols),
		"[crivm.runtime.runtimes.vm]", fmt.Sprintf("agent_path = %q", guestRootAgent(t)), fmt.Sprintf("shared_fs = %q", sharedFS))
	ctx := context.Background()

	// 1. Volumes: a read-only one whose path holds a space and a newline,
	// a writable one, and a host mount made shared that has a child mount.
	ro := filepath.Join(vols, "read only\nvolume")
	rw := filepath.Join(vols, "rw")
	hostShared := filepath.Join(vols, "shared-host-mount")
	child := filepath.Join(hostShared, "child")
	for _, d := range []string{ro, rw, hostShared} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ro, "secret"), []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", hostShared, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(hostShared, unix.MNT_DETACH) })
	if err := unix.Mount("", hostShared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(child, 0o755)
	if err := unix.Mount("tmpfs", child, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(child, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(child, "marker"), []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// 2. An untrusted pod mounts them; the canary says it runs in a VM.
	pod := e.podConfig("boundary")
	pod.Annotations = map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}
	ctr := e.containerConfig("app", "sleep", "3600")
	ctr.Mounts = []*runtimeapi.Mount{
		{HostPath: ro, ContainerPath: "/ro", Readonly: true},
		{HostPath: rw, ContainerPath: "/rw"},
		{HostPath: hostShared, ContainerPath: "/hostshared"},
	}
	sbID, ctrID := e.runPod(t, pod, ctr)
	_, info := e.sandboxStatus(t, sbID)
	if info.Handler != "vm" || info.Extra["shared_fs"] != sharedFS {
		t.Fatalf("handler %q shared_fs %q, want vm and %s", info.Handler, info.Extra["shared_fs"], sharedFS)
	}
	var host unix.Utsname
	unix.Uname(&host)
	if guest := strings.TrimSpace(e.exec(t, ctrID, "uname", "-r")); guest == unix.ByteSliceToString(host.Release[:]) {
		t.Fatalf("the container sees the host kernel %s: not in a VM", guest)
	}
	if got := e.exec(t, ctrID, "cat", "/hostshared/child/marker"); got != "host\n" {
		t.Fatalf("the host's child mount in the container: %q", got)
	}
	vmDir := info.Extra["vm_dir"]
	mountsBefore := hostMountPoints(t, vols, e.d.Dir)

	// 3. Guest root, with the container's busybox.
	share := agentproxy.GuestSharedDir
	me := share + "/" + ctrID
	bb := me + "/rootfs/bin/busybox"
	// guestExit runs script as guest root and returns its exit status and
	// output.
	guestExit := func(script string) (int, string) {
		t.Helper()
		script = "export PATH=" + me + "/rootfs/bin:$PATH; " + script + `; echo "exit=$?"`
		stdout, stderr, err := e.rs.ExecSync(ctx, ctrID, []string{agent.GuestRootExec, bb, "sh", "-c", script}, 30*time.Second)
		if err != nil {
			t.Fatalf("guest-root exec %q: %v (%s): is the agent a crivm_guestroot build?", script, err, stderr)
		}
		out := string(stdout) + string(stderr)
		i := strings.LastIndex(out, "exit=")
		if i < 0 {
			t.Fatalf("no exit status from %q: %s", script, out)
		}
		var code int
		fmt.Sscanf(out[i:], "exit=%d", &code)
		return code, out[:i]
	}

	// 4. Controls: guest root is root, and writes where the pod may write.
	if code, out := guestExit(`id -u | grep -qx 0 && [ ! -e /proc/1/root/` + "bin/busybox" + ` ] || [ "$(cat /proc/1/comm)" = crivm-agent ] && echo x > ` + me + `/rootfs/tmp/guest-was-here`); code != 0 {
		t.Fatalf("guest root cannot write in the container's rootfs: %s", out)
	}
	_, roPath := guestExit(`for d in ` + me + `/mounts/*; do [ -f "$d/secret" ] && echo -n "$d"; done; true`)
	rwPath := ""
	if _, out := guestExit(`for d in ` + me + `/mounts/*; do [ -f "$d/child/marker" ] || [ -f "$d/secret" ] || echo -n "$d"; done; true`); out != "" {
		rwPath = out
	}
	if roPath == "" || rwPath == "" {
		t.Fatalf("volumes in the share: read-only %q, writable %q", roPath, rwPath)
	}
	if code, out := guestExit(`echo from-guest-root > ` + rwPath + `/w`); code != 0 {
		t.Fatalf("guest root cannot write the writable volume: %s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(rw, "w")); string(b) != "from-guest-root\n" {
		t.Fatalf("the writable volume's write on the host: %q", b)
	}

	// 5. Attacks: each must fail.
	var st unix.Stat_t
	unix.Stat("/", &st)
	attacks := []struct{ name, script string }{
		{"create an entry in the share", `mkdir ` + share + `/evil`},
		{"create an entry in the container's dir", `mkdir ` + me + `/evil`},
		{"rename mounts", `mv ` + me + `/mounts "` + me + `/mounts x"`},
		{"rename the container's dir", `mv ` + me + ` ` + me + `x`},
		{"plant a symlink to a host dir", `ln -s /etc ` + me + `/mounts2`},
		{"plant a symlink named like an escaped mount point", `ln -s / "` + me + `/mounts\040y"`},
		{"remove a volume's mount point", `rmdir ` + rwPath},
		{"remove the rootfs mount point", `rmdir ` + me + `/rootfs`},
		{"write into the read-only volume", `echo x > ` + roPath + `/new`},
		{"delete from the read-only volume", `rm -f ` + roPath + `/secret && [ ! -e ` + roPath + `/secret ]`},
		{"chmod in the read-only volume", `chmod 777 ` + roPath + `/secret`},
		{"open a host disk through a device node", fmt.Sprintf(`mknod %s/rootfs/tmp/disk b %d %d; head -c 512 %s/rootfs/tmp/disk > /dev/null`,
			me, unix.Major(st.Dev), unix.Minor(st.Dev), me)},
	}
	for _, a := range attacks {
		if code, out := guestExit(a.script); code == 0 {
			t.Errorf("attack %q succeeded (%s)", a.name, out)
		}
	}

	// 6. The host: nothing mounted or unmounted, the read-only volume and
	// the share's structure as they were.
	if after := hostMountPoints(t, vols, e.d.Dir); !slices.Equal(after, mountsBefore) {
		t.Errorf("host mounts changed by the attacks:\nbefore %q\nafter  %q", mountsBefore, after)
	}
	if b, err := os.ReadFile(filepath.Join(ro, "secret")); string(b) != "keep me\n" {
		t.Errorf("read-only volume's file on the host: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); err == nil {
		t.Error("a write to the read-only volume reached the host")
	}
	entries, _ := os.ReadDir(filepath.Join(vmDir, "staging", ctrID))
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	if !slices.Equal(names, []string{"mounts", "rootfs"}) {
		t.Errorf("the container's share entries are %q, want [mounts rootfs]", names)
	}

	// 7. Removal: the volumes keep their files, the host's child mount
	// stays, nothing of the VM dir is left.
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(ro, "secret")); string(b) != "keep me\n" {
		t.Errorf("after removal, the read-only volume's file: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "w")); string(b) != "from-guest-root\n" {
		t.Errorf("after removal, the writable volume's file: %q, %v", b, err)
	}
	if !slices.Contains(hostMountPoints(t, vols), child) {
		t.Errorf("removing the pod unmounted the host's %s", child)
	}
	if b, err := os.ReadFile(filepath.Join(child, "marker")); string(b) != "host\n" {
		t.Errorf("the host's child mount: %q, %v", b, err)
	}
	for _, m := range hostMountPoints(t, vmDir) {
		if strings.HasPrefix(m, vmDir) {
			t.Errorf("mount left below the VM dir: %q", m)
		}
	}
	if _, err := os.Stat(vmDir); !os.IsNotExist(err) {
		t.Errorf("VM dir %s left behind (%v)", vmDir, err)
	}
}
