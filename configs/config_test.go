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
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
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
`,
		"conf.d/10-first.conf": `[crivm]
log_level = "error"
root = "/srv/crivm"
[crivm.runtime.runtimes.fastvm]
runtime_type = "vm"
default_memory_mib = 128
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
		{"flag overrides", c.Runroot, "/tmp/rr"},
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
