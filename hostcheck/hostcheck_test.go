package hostcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/vmm"
)

func TestRunDefaults(t *testing.T) {
	cfg := configs.Defaults()
	opts := Options{Probe: !testing.Short(), CacheDir: t.TempDir()}
	r := Run(context.Background(), cfg, opts)

	want := []struct{ name, handler string }{
		{ItemRuntime, "runc"}, {ItemMonitor, "runc"},
		{ItemCgroups, ""}, {ItemOverlay, ""},
		{ItemQEMU, "vm"}, {ItemGuestKernel, "vm"}, {ItemKVM, "vm"},
		{ItemVhostVsock, ""}, {ItemTransport, "vm"},
		{ItemCNIPlugins, ""}, {ItemCNIConfig, ""},
	}
	for _, w := range want {
		it, ok := r.Item(w.name, w.handler)
		if !ok {
			t.Errorf("no item %q for handler %q", w.name, w.handler)
			continue
		}
		if it.Value == "" && it.Detail == "" {
			t.Errorf("item %q/%q says nothing", w.name, w.handler)
		}
	}

	var handlers []string
	for _, v := range r.Verdicts {
		handlers = append(handlers, v.Handler+"/"+v.Type)
		if v.Usable != (len(v.Problems) == 0) || v.Summary == "" {
			t.Errorf("verdict %+v: Usable must mean no problems, and a summary is required", v)
		}
	}
	if got, want := handlers, []string{"runc/oci", "vm/vm"}; !slices.Equal(got, want) {
		t.Errorf("verdicts %v, want %v", got, want)
	}

	// What this test can verify independently of the code under test.
	rt, _ := r.Item(ItemRuntime, "runc")
	runcV, _ := r.Verdict("runc")
	if _, err := os.Stat(cfg.Runtime.Runtimes["runc"].RuntimePath); err != nil {
		if rt.OK || runcV.Usable || !strings.Contains(strings.Join(runcV.Problems, "\n"), "runtime_path") {
			t.Errorf("runc missing but runtime item %+v, verdict %+v", rt, runcV)
		}
	} else if rt.OK && !strings.Contains(rt.Value, "version") {
		t.Errorf("runtime value %q has no version", rt.Value)
	}

	vm, _ := r.Verdict("vm")
	kvm, _ := r.Item(ItemKVM, "vm")
	if _, err := os.Stat("/dev/kvm"); errors.Is(err, os.ErrNotExist) {
		if kvm.OK || kvm.Value != "tcg" || !strings.Contains(kvm.Detail, "TCG") || !strings.Contains(kvm.Detail, "/dev/kvm missing") {
			t.Errorf("no /dev/kvm but kvm item %+v", kvm)
		}
		if vm.Usable && !strings.Contains(vm.Summary, "TCG (KVM not usable: /dev/kvm missing)") {
			t.Errorf("vm summary %q does not call out TCG", vm.Summary)
		}
	}
	vs, _ := r.Item(ItemVhostVsock, "")
	tr, _ := r.Item(ItemTransport, "vm")
	if _, err := os.Stat("/dev/vhost-vsock"); errors.Is(err, os.ErrNotExist) {
		if vs.OK || tr.Value != "serial" {
			t.Errorf("no /dev/vhost-vsock but vhost-vsock %+v, transport %+v", vs, tr)
		}
	}

	ov, _ := r.Item(ItemOverlay, "")
	if os.Geteuid() != 0 {
		t.Logf("not root: overlay mount not tested, item says %q", ov.Detail)
		if !strings.Contains(ov.Detail, "not root") {
			t.Errorf("overlay item %+v does not say it only read /proc/filesystems", ov)
		}
	}

	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("JSON round trip differs:\n%s", js.String())
	}

	var txt bytes.Buffer
	if err := r.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"CHECK", "HANDLER", "runc", "vm", vm.Summary, runcV.Summary} {
		if !strings.Contains(txt.String(), s) {
			t.Errorf("text report lacks %q", s)
		}
	}
	t.Logf("\n%s", txt.String())
}

func TestVerdictProblems(t *testing.T) {
	cfg := &configs.Config{
		Runroot: t.TempDir(),
		Runtime: configs.RuntimeConfig{Runtimes: map[string]*configs.RuntimeHandler{
			"broken-oci": {RuntimeType: "oci", RuntimePath: "/nonexistent/runc", MonitorPath: "/nonexistent/conmon"},
			"broken-vm":  {RuntimeType: "vm", HypervisorPath: "/nonexistent/qemu", Kernel: "/nonexistent/vmlinuz", Accel: "auto", AgentTransport: "carrier-pigeon"},
			"a-first":    {RuntimeType: "oci", RuntimePath: "/nonexistent/crun", MonitorPath: "/nonexistent/conmon"},
		}},
		Network: configs.NetworkConfig{CNIPluginDirs: []string{t.TempDir()}, NetworkDir: t.TempDir()},
	}
	r := Run(context.Background(), cfg, Options{CacheDir: t.TempDir()})

	var names []string
	for _, v := range r.Verdicts {
		names = append(names, v.Handler)
	}
	if want := []string{"a-first", "broken-oci", "broken-vm"}; !slices.Equal(names, want) {
		t.Errorf("verdict order %v, want %v", names, want)
	}
	tests := []struct {
		handler string
		want    []string // each must appear in some problem
	}{
		{"broken-oci", []string{"runtime_path /nonexistent/runc", "monitor_path /nonexistent/conmon"}},
		{"broken-vm", []string{"hypervisor_path /nonexistent/qemu", "/nonexistent/vmlinuz", "agent transport", "carrier-pigeon"}},
	}
	for _, tt := range tests {
		v, ok := r.Verdict(tt.handler)
		if !ok {
			t.Fatalf("no verdict for %s", tt.handler)
		}
		if v.Usable || !strings.HasPrefix(v.Summary, "not usable: ") {
			t.Errorf("%s: %+v, want not usable", tt.handler, v)
		}
		all := strings.Join(v.Problems, "\n")
		for _, w := range tt.want {
			if !strings.Contains(all, w) {
				t.Errorf("%s: problems %q lack %q", tt.handler, v.Problems, w)
			}
		}
	}
}

func TestVMHandlerTCGConfigured(t *testing.T) {
	qemu := "/usr/bin/qemu-system-x86_64"
	if checkExecutable(qemu) != nil {
		t.Skipf("%s not installed", qemu)
	}
	kernel := filepath.Join(t.TempDir(), "vmlinuz-test")
	if err := os.WriteFile(kernel, []byte("not really a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &configs.Config{
		Runtime: configs.RuntimeConfig{Runtimes: map[string]*configs.RuntimeHandler{
			"slow": {RuntimeType: "vm", HypervisorPath: qemu, Kernel: kernel, Accel: "tcg", AgentTransport: "serial"},
		}},
	}
	// Probe is on, but accel = tcg must not boot anything.
	r := Run(context.Background(), cfg, Options{Probe: true, CacheDir: t.TempDir()})
	v, _ := r.Verdict("slow")
	if !v.Usable || v.Summary != "usable: TCG (configured), transport serial, shared fs 9p" {
		t.Errorf("verdict %+v", v)
	}
	kvm, _ := r.Item(ItemKVM, "slow")
	if !kvm.OK || kvm.Value != "tcg" || !strings.Contains(kvm.Detail, "expect ~2-6 s boots") {
		t.Errorf("kvm item %+v", kvm)
	}
}

func TestCgroupDetection(t *testing.T) {
	const procCgroups = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n" +
		"cpuset\t3\t1\t1\ncpu\t1\t1\t1\nmemory\t4\t28\t1\nnet_cls\t0\t1\t1\npids\t8\t1\t1\nrdma\t9\t1\t0\n"
	tests := []struct {
		name      string
		magics    map[string]int64 // by path; absent: ENOENT
		files     map[string]string
		wantMode  string
		wantCtrls string // substring of Detail
		wantOK    bool
	}{
		{
			name:     "v2",
			magics:   map[string]int64{"/cg": unix.CGROUP2_SUPER_MAGIC},
			files:    map[string]string{"/cg/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n"},
			wantMode: CgroupV2, wantCtrls: "controllers: cpu cpuset hugetlb io memory misc pids rdma", wantOK: true,
		},
		{
			name:     "v2 without memory",
			magics:   map[string]int64{"/cg": unix.CGROUP2_SUPER_MAGIC},
			files:    map[string]string{"/cg/cgroup.controllers": "cpu pids\n"},
			wantMode: CgroupV2, wantCtrls: "missing controllers memory", wantOK: false,
		},
		{
			name:     "hybrid",
			magics:   map[string]int64{"/cg": unix.TMPFS_MAGIC, "/cg/unified": unix.CGROUP2_SUPER_MAGIC},
			files:    map[string]string{"/proc/cgroups": procCgroups},
			wantMode: CgroupHybrid, wantCtrls: "cpu cpuset memory pids", wantOK: true,
		},
		{
			name:     "v1",
			magics:   map[string]int64{"/cg": unix.TMPFS_MAGIC},
			files:    map[string]string{"/proc/cgroups": procCgroups},
			wantMode: CgroupV1, wantCtrls: "controllers: cpu cpuset memory pids", wantOK: true,
		},
		{
			name:     "v1 with unified not cgroup2",
			magics:   map[string]int64{"/cg": unix.TMPFS_MAGIC, "/cg/unified": unix.TMPFS_MAGIC},
			files:    map[string]string{"/proc/cgroups": procCgroups},
			wantMode: CgroupV1, wantOK: true,
		},
		{
			name:     "not mounted",
			magics:   map[string]int64{"/cg": 0xEF53}, // ext4
			wantMode: "none", wantCtrls: "neither cgroup2 nor tmpfs", wantOK: false,
		},
		{
			name:     "missing",
			magics:   map[string]int64{},
			wantMode: "none", wantCtrls: "statfs /cg", wantOK: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfs := cgroupFS{
				root: "/cg",
				statfs: func(p string) (int64, error) {
					if m, ok := tt.magics[p]; ok {
						return m, nil
					}
					return 0, os.ErrNotExist
				},
				readFile: func(p string) ([]byte, error) {
					if s, ok := tt.files[p]; ok {
						return []byte(s), nil
					}
					return nil, os.ErrNotExist
				},
			}
			it := checkCgroups(cfs)
			if it.Value != tt.wantMode || it.OK != tt.wantOK || !strings.Contains(it.Detail, tt.wantCtrls) {
				t.Errorf("got %+v, want mode %s ok %v detail ~%q", it, tt.wantMode, tt.wantOK, tt.wantCtrls)
			}
		})
	}
}

func TestCgroupsHost(t *testing.T) {
	it := checkCgroups(hostCgroupFS())
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		t.Skipf("no /sys/fs/cgroup: %v", err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC && it.Value != CgroupV2 {
		t.Errorf("cgroup2 at the root but mode %q", it.Value)
	}
	if st.Type == unix.TMPFS_MAGIC && it.Value == CgroupV2 {
		t.Errorf("tmpfs at the root but mode v2")
	}
	t.Logf("%+v", it)
}

func TestProcFilesystems(t *testing.T) {
	data := []byte("nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n")
	if !procFilesystemsHas(data, "overlay") || !procFilesystemsHas(data, "ext4") || procFilesystemsHas(data, "btrfs") {
		t.Error("procFilesystemsHas")
	}
}

func TestOverlayMountTest(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot mount overlay; the check reads /proc/filesystems instead")
	}
	base := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(base, &st); err == nil && st.Type == unix.OVERLAYFS_SUPER_MAGIC {
		t.Skipf("%s is itself on overlayfs, which cannot be an upperdir", base)
	}
	if err := overlayMountTest(base); err != nil {
		t.Fatal(err)
	}
	left, _ := os.ReadDir(base)
	if len(left) != 0 {
		t.Errorf("left behind in %s: %v", base, left)
	}
}

func TestCNI(t *testing.T) {
	mk := func(dir string, names ...string) {
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, b := t.TempDir(), t.TempDir()
	mk(a, "bridge", "host-local", "loopback")
	mk(b, "portmap", "bridge")
	if err := os.WriteFile(filepath.Join(b, "loopback-noexec"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		dirs       []string
		wantOK     bool
		wantDetail string
	}{
		{"all across two dirs", []string{a, b}, true, "bridge host-local loopback in " + a + "; portmap in " + b},
		{"portmap missing", []string{a}, false, "missing portmap"},
		{"no dir exists", []string{"/nonexistent/cni"}, false, "no plugin dir exists"},
	}
	for _, tt := range tests {
		it := checkCNIPlugins(tt.dirs)
		if it.OK != tt.wantOK || !strings.Contains(it.Detail, tt.wantDetail) {
			t.Errorf("%s: %+v, want ok %v detail ~%q", tt.name, it, tt.wantOK, tt.wantDetail)
		}
	}

	netDir := t.TempDir()
	if it := checkCNIConfig(netDir); it.OK {
		t.Errorf("empty network_dir: %+v", it)
	}
	if err := os.WriteFile(filepath.Join(netDir, "README"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if it := checkCNIConfig(netDir); it.OK {
		t.Errorf("network_dir with only a README: %+v", it)
	}
	if err := os.WriteFile(filepath.Join(netDir, "10-crivm.conflist"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if it := checkCNIConfig(netDir); !it.OK || !strings.Contains(it.Detail, "10-crivm.conflist") {
		t.Errorf("network_dir with a conflist: %+v", it)
	}
}

func TestSharedFSItem(t *testing.T) {
	daemon := filepath.Join(t.TempDir(), "virtiofsd")
	if err := os.WriteFile(daemon, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	saved := vmm.VirtiofsdCandidates
	t.Cleanup(func() { vmm.VirtiofsdCandidates = saved })
	tests := []struct {
		name, sharedFS, daemon string
		candidates             []string
		wantOK                 bool
		wantValue, wantDetail  string
		wantProblem            bool
	}{
		{"9p", "9p", "", nil, true, "9p", "over 9p", false},
		{"virtio-fs, configured daemon", "virtio-fs", daemon, nil, true, "virtio-fs", "virtiofsd " + daemon, false},
		{"virtio-fs, daemon found", "virtio-fs", "", []string{"/nonexistent/virtiofsd", daemon}, true, "virtio-fs", "virtiofsd " + daemon, false},
		{"virtio-fs, none installed: 9p", "virtio-fs", "", []string{"/nonexistent/virtiofsd"}, true, "9p", "9P FALLBACK", false},
		{"virtio-fs, configured daemon missing", "virtio-fs", "/nonexistent/virtiofsd", nil, false, "none", "virtio_fs_daemon", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vmm.VirtiofsdCandidates = tt.candidates
			var v vmItems
			got := sharedFSItem("vm", &configs.RuntimeHandler{SharedFS: tt.sharedFS, VirtioFSDaemon: tt.daemon, VirtioFSCache: "auto"}, &v)
			if got.OK != tt.wantOK || got.Value != tt.wantValue || !strings.Contains(got.Detail, tt.wantDetail) {
				t.Errorf("got %+v, want ok %v value %q detail containing %q", got, tt.wantOK, tt.wantValue, tt.wantDetail)
			}
			if (v.fsErr != "") != tt.wantProblem {
				t.Errorf("problem %q, want one: %v", v.fsErr, tt.wantProblem)
			}
		})
	}
}
