package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestDefaults(t *testing.T) {
	c := Defaults()
	tests := []struct {
		name, got, want string
	}{
		{"root", c.Root, "/var/lib/crivm"},
		{"listen", c.SocketPath(), "/run/crivm/crivm.sock"},
		{"default_runtime", c.Runtime.DefaultRuntime, "runc"},
		{"untrusted", c.Runtime.RuntimeUntrustedWorkload, "vm"},
		{"trust", c.Runtime.DefaultWorkloadTrust, Trusted},
		{"runc type", c.Runtime.Runtimes["runc"].RuntimeType, RuntimeTypeOCI},
		{"vm accel", c.Runtime.Runtimes["vm"].Accel, "auto"},
		{"pause", c.Image.PauseImage, "registry.k8s.io/pause:3.10"},
		{"kubelet_root_dir", c.Runtime.KubeletRootDir, "/var/lib/kubelet"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	if c.Runtime.SeccompUseDefaultWhenEmpty {
		t.Error("seccomp_use_default_when_empty: got true, want false (an empty profile is unconfined, as the CRI says)")
	}
	if !c.Runtime.DropInfraCtr {
		t.Error("drop_infra_ctr: got false, want true (CRI-O's default)")
	}
	if len(c.Runtime.UntrustedAllowedHostPaths) != 0 || len(c.Runtime.UntrustedAllowedDevices) != 0 {
		t.Errorf("untrusted allowlists: got %q and %q, want both empty (deny by default)", c.Runtime.UntrustedAllowedHostPaths, c.Runtime.UntrustedAllowedDevices)
	}
	if name, _, ok := c.ResolveHandler("kata"); !ok || name != "vm" {
		t.Errorf("alias kata: got %q %v, want vm", name, ok)
	}
	if name, _, ok := c.ResolveHandler(""); !ok || name != "runc" {
		t.Errorf("empty handler: got %q %v, want runc", name, ok)
	}
	if _, _, ok := c.ResolveHandler("gvisor"); ok {
		t.Error("unknown handler resolved")
	}
}

func TestLoadMerging(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"crivm.conf": `[crivm]
log_level = "debug"
[crivm.runtime.runtimes.vm]
accel = "tcg"
`,
		"conf.d/20-later.conf": `[crivm]
log_level = "warn"
[crivm.runtime]
seccomp_use_default_when_empty = true
`,
		"conf.d/10-first.conf": `[crivm]
log_level = "error"
root = "/srv/crivm"
[crivm.runtime.runtimes.fastvm]
runtime_type = "vm"
default_memory_mib = 128
vm_factory = "template"
vm_pool_size = 4
[crivm.runtime.runtimes.crun]
runtime_type = "oci"
runtime_path = "/usr/bin/crun"
`,
		"conf.d/ignored.txt": `not = "toml at all`,
	})
	l, err := Load(LoadOptions{
		File: filepath.Join(dir, "crivm.conf"), FileExplicit: true,
		DropInDir: filepath.Join(dir, "conf.d"), DropInDirExplicit: true,
		Overrides: []Override{{Key: "crivm.runroot", Value: "/tmp/rr", Source: "flag --runroot"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"later drop-in wins", c.LogLevel, "warn"},
		{"earlier drop-in kept", c.Root, "/srv/crivm"},
		{"main file key", c.Runtime.Runtimes["vm"].Accel, "tcg"},
		{"merged table keeps defaults", c.Runtime.Runtimes["vm"].HypervisorPath, "/usr/bin/qemu-system-x86_64"},
		{"alias kept", strings.Join(c.Runtime.Runtimes["vm"].Aliases, ","), "kata"},
		{"new handler gets vm defaults", c.Runtime.Runtimes["fastvm"].Accel, "auto"},
		{"new handler own key", c.Runtime.Runtimes["fastvm"].DefaultMemoryMiB, 128},
		{"a pool of template clones", c.Runtime.Runtimes["fastvm"].VMPoolSize, 4},
		{"new vm handler gets the template's vcpus", c.Runtime.Runtimes["fastvm"].DefaultVCPUs, Defaults().Runtime.Runtimes["vm"].DefaultVCPUs},
		{"new vm handler gets the template's uid range", c.Runtime.Runtimes["fastvm"].VMMUIDCount, Defaults().Runtime.Runtimes["vm"].VMMUIDCount},
		{"new oci handler gets the template's monitor", c.Runtime.Runtimes["crun"].MonitorPath, "/usr/bin/conmon"},
		{"new oci handler own key", c.Runtime.Runtimes["crun"].RuntimePath, "/usr/bin/crun"},
		{"flag overrides", c.Runroot, "/tmp/rr"},
		{"seccomp_use_default_when_empty set", c.Runtime.SeccompUseDefaultWhenEmpty, true},
		{"source of log_level", l.Source["crivm.log_level"], filepath.Join(dir, "conf.d/20-later.conf")},
		{"source of runroot", l.Source["crivm.runroot"], "flag --runroot"},
		{"files merged", len(l.Files), 3},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name     string
		main     string
		dropIn   string
		override *Override
		want     []string // substrings of the error
	}{
		{
			name: "unknown key in drop-in",
			main: "", dropIn: "[crivm.runtime]\ndefault_runtme = \"runc\"\n",
			want: []string{"10-x.conf", "key crivm.runtime.default_runtme", "unknown key"},
		},
		{
			name: "unknown key in a handler",
			main: "[crivm.runtime.runtimes.vm]\nvcpus = 2\n",
			want: []string{"crivm.conf", "crivm.runtime.runtimes.vm.vcpus", "unknown key"},
		},
		{
			name: "pool without a size",
			main: "[crivm.runtime.runtimes.vm]\nvm_factory = \"pool\"\n",
			want: []string{"crivm.runtime.runtimes.vm.vm_pool_size", "at least 1"},
		},
		{
			name: "pool size without the pool",
			main: "[crivm.runtime.runtimes.vm]\nvm_pool_size = 2\n",
			want: []string{"crivm.runtime.runtimes.vm.vm_pool_size", "applies to vm_factory = \"pool\" or \"template\" only"},
		},
		{
			name: "pool size on runc",
			main: "[crivm.runtime.runtimes.runc]\nvm_pool_size = 2\n",
			want: []string{"crivm.runtime.runtimes.runc.vm_pool_size", "applies to runtime_type"},
		},
		{
			name: "wrong type",
			main: "[crivm]\nroot = \"/x\"\n[crivm.runtime.runtimes.vm]\ndefault_vcpus = \"two\"\n",
			want: []string{"crivm.conf:4: key crivm.runtime.runtimes.vm.default_vcpus: incompatible types"},
		},
		{
			name: "syntax error",
			main: "[crivm\nroot = 1\n",
			want: []string{"crivm.conf:2", "table name"},
		},
		{
			name: "unknown handler as default",
			main: "[crivm.runtime]\ndefault_runtime = \"runcc\"\n",
			want: []string{"crivm.conf", "key crivm.runtime.default_runtime", `handler "runcc" is not configured`, "configured: runc, vm"},
		},
		{
			name:   "untrusted workload on oci handler",
			dropIn: "[crivm.runtime]\nruntime_untrusted_workload = \"runc\"\n",
			want:   []string{"10-x.conf", "runtime_untrusted_workload", `runtime_type "oci"`},
		},
		{
			name: "bad trust value",
			main: "[crivm.runtime]\ndefault_workload_trust = \"maybe\"\n",
			want: []string{"default_workload_trust", `"maybe" is not one of trusted, untrusted`},
		},
		{
			name: "bad accel",
			main: "[crivm.runtime.runtimes.vm]\naccel = \"hvf\"\n",
			want: []string{"crivm.conf", "crivm.runtime.runtimes.vm.accel", `"hvf"`},
		},
		{
			name: "vm key on oci handler",
			main: "[crivm.runtime.runtimes.runc]\nkernel = \"/boot/vmlinuz\"\n",
			want: []string{"crivm.runtime.runtimes.runc.kernel", `applies to runtime_type "vm" only`},
		},
		{
			name: "relative root",
			main: "[crivm]\nroot = \"var/lib\"\n",
			want: []string{"crivm.conf", "key crivm.root", "not an absolute path"},
		},
		{
			name: "bad log level",
			main: "[crivm]\nlog_level = \"loud\"\n",
			want: []string{"crivm.log_level", "unknown log level"},
		},
		{
			name:     "bad flag",
			override: &Override{Key: "crivm.log_level", Value: "chatty", Source: "flag --log-level"},
			want:     []string{"config flag --log-level", "crivm.log_level"},
		},
		{
			name:   "relative allowed host path",
			dropIn: "[crivm.runtime]\nuntrusted_allowed_host_paths = [\"/srv/shared\", \"srv/other\"]\n",
			want:   []string{"10-x.conf", "key crivm.runtime.untrusted_allowed_host_paths[1]", `"srv/other" is not an absolute path`},
		},
		{
			name: "unclean allowed host path",
			main: "[crivm.runtime]\nuntrusted_allowed_host_paths = [\"/srv/../etc\"]\n",
			want: []string{"crivm.conf", "key crivm.runtime.untrusted_allowed_host_paths[0]", `"/srv/../etc" is not a clean path (write "/etc")`},
		},
		{
			name: "trailing slash in allowed host path",
			main: "[crivm.runtime]\nuntrusted_allowed_host_paths = [\"/srv/shared/\"]\n",
			want: []string{"key crivm.runtime.untrusted_allowed_host_paths[0]", `write "/srv/shared"`},
		},
		{
			name: "root as allowed host path",
			main: "[crivm.runtime]\nuntrusted_allowed_host_paths = [\"/\"]\n",
			want: []string{"key crivm.runtime.untrusted_allowed_host_paths[0]", "would allow every host path"},
		},
		{
			name: "empty allowed host path",
			main: "[crivm.runtime]\nuntrusted_allowed_host_paths = [\"\"]\n",
			want: []string{"key crivm.runtime.untrusted_allowed_host_paths[0]", "must be set"},
		},
		{
			name: "allowed host paths not a list",
			main: "[crivm.runtime]\nuntrusted_allowed_host_paths = \"/srv\"\n",
			want: []string{"crivm.conf:2", "untrusted_allowed_host_paths", "incompatible types"},
		},
		{
			name:   "relative allowed device",
			dropIn: "[crivm.runtime]\nuntrusted_allowed_devices = [\"dev/fuse\"]\n",
			want:   []string{"10-x.conf", "key crivm.runtime.untrusted_allowed_devices[0]", "not an absolute path"},
		},
		{
			name: "unclean allowed device",
			main: "[crivm.runtime]\nuntrusted_allowed_devices = [\"/dev//fuse\"]\n",
			want: []string{"key crivm.runtime.untrusted_allowed_devices[0]", `write "/dev/fuse"`},
		},
		{
			name: "relative kubelet root",
			main: "[crivm.runtime]\nkubelet_root_dir = \"var/lib/kubelet\"\n",
			want: []string{"crivm.conf", "key crivm.runtime.kubelet_root_dir", "not an absolute path"},
		},
		{
			name: "empty kubelet root",
			main: "[crivm.runtime]\nkubelet_root_dir = \"\"\n",
			want: []string{"key crivm.runtime.kubelet_root_dir", "must be set"},
		},
		{
			name: "kubelet root /",
			main: "[crivm.runtime]\nkubelet_root_dir = \"/\"\n",
			want: []string{"key crivm.runtime.kubelet_root_dir", "must not be /"},
		},
		{
			name:   "seccomp_use_default_when_empty not a bool",
			dropIn: "[crivm.runtime]\nseccomp_use_default_when_empty = \"yes\"\n",
			want:   []string{"10-x.conf:2", "key crivm.runtime.seccomp_use_default_when_empty", "incompatible types"},
		},
		{
			name: "handler without type",
			main: "[crivm.runtime.runtimes.gvisor]\nruntime_path = \"/usr/bin/runsc\"\n",
			want: []string{"crivm.runtime.runtimes.gvisor.runtime_type", "must be set"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"crivm.conf": tt.main, "conf.d/10-x.conf": tt.dropIn})
			opts := LoadOptions{
				File: filepath.Join(dir, "crivm.conf"), FileExplicit: true,
				DropInDir: filepath.Join(dir, "conf.d"), DropInDirExplicit: true,
			}
			if tt.override != nil {
				opts.Overrides = []Override{*tt.override}
			}
			_, err := Load(opts)
			if err == nil {
				t.Fatal("got nil error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestMissingExplicitFile(t *testing.T) {
	_, err := Load(LoadOptions{File: "/nonexistent/crivm.conf", FileExplicit: true, DropInDir: os.DevNull})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/crivm.conf") {
		t.Fatalf("got %v", err)
	}
}

func TestUntrustedHostPathKeys(t *testing.T) {
	dir := writeFiles(t, map[string]string{"conf.d/10-paths.conf": `[crivm.runtime]
kubelet_root_dir = "/data/kubelet"
untrusted_allowed_host_paths = ["/srv/shared", "/data/models"]
untrusted_allowed_devices = ["/dev/fuse"]
`})
	l, err := Load(LoadOptions{File: os.DevNull, FileExplicit: true, DropInDir: filepath.Join(dir, "conf.d"), DropInDirExplicit: true})
	if err != nil {
		t.Fatal(err)
	}
	r := l.Config.Runtime
	if r.KubeletRootDir != "/data/kubelet" || strings.Join(r.UntrustedAllowedHostPaths, ",") != "/srv/shared,/data/models" ||
		strings.Join(r.UntrustedAllowedDevices, ",") != "/dev/fuse" {
		t.Errorf("got kubelet_root_dir %q, untrusted_allowed_host_paths %q, untrusted_allowed_devices %q", r.KubeletRootDir, r.UntrustedAllowedHostPaths, r.UntrustedAllowedDevices)
	}
	if src := l.Source["crivm.runtime.untrusted_allowed_host_paths"]; src != filepath.Join(dir, "conf.d/10-paths.conf") {
		t.Errorf("source of untrusted_allowed_host_paths: %q", src)
	}
	// The template documents every new key.
	for _, k := range []string{"kubelet_root_dir = ", "untrusted_allowed_host_paths = ", "untrusted_allowed_devices = "} {
		if !strings.Contains(DefaultTemplate, "\n"+k) {
			t.Errorf("the default template lacks %q", k)
		}
	}
}

func TestHostPathPrefix(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want string // substring of the error; "" for none
	}{
		{"/srv/shared", ""},
		{"/a", ""},
		{"", "must be set"},
		{"srv", "not an absolute path"},
		{"/srv/", "not a clean path"},
		{"/srv/./x", "not a clean path"},
		{"/", "would allow every host path"},
	} {
		err := HostPathPrefix("k", tt.v)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.v, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "key k: ")):
			t.Errorf("%q: got %v, want an error for key k with %q", tt.v, err, tt.want)
		}
	}
}
