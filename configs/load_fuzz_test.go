package configs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzLoad feeds Load a main file and one drop-in. Whatever the bytes:
//   - Load does not panic;
//   - it returns a config or a *FileError that blames the main file, the
//     drop-in or the defaults, never both a config and an error;
//   - a config it returns passes its own Validate;
//   - loading the same files again gives a deep-equal result (config,
//     files, sources) or the same error;
//   - the config, written back out with the TOML encoder Load itself merges
//     with (the struct's toml tags) and loaded again as the only file, is
//     deep-equal to the first.
func FuzzLoad(f *testing.F) {
	// The default configuration without its comments: a smaller seed is
	// cheaper to mutate and to minimize.
	var tb strings.Builder
	for _, line := range strings.Split(DefaultTemplate, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			tb.WriteString(line + "\n")
		}
	}
	template := tb.String()
	for _, s := range []struct{ main, dropIn string }{
		{"", ""},
		{template, ""},
		{"", template},
		{"[crivm]\nlog_level = \"debug\"\n[crivm.runtime.runtimes.vm]\naccel = \"tcg\"\n",
			"[crivm]\nlog_level = \"warn\"\n[crivm.runtime]\nseccomp_use_default_when_empty = true\n"},
		{"[crivm]\nroot = \"/srv/crivm\"\n[crivm.runtime.runtimes.fastvm]\nruntime_type = \"vm\"\ndefault_memory_mib = 128\n",
			"[crivm.runtime]\ndefault_runtime = \"fastvm\"\nruntime_untrusted_workload = \"fastvm\"\ndefault_workload_trust = \"untrusted\"\n"},
		{"[crivm.runtime]\nkubelet_root_dir = \"/data/kubelet\"\nuntrusted_allowed_host_paths = [\"/srv/shared\", \"/data/models\"]\nuntrusted_allowed_devices = [\"/dev/fuse\"]\n", ""},
		{"[crivm.image]\nunqualified_search_registries = [\"docker.io\", \"quay.io\"]\ninsecure_registries = [\"127.0.0.1:5000\"]\n[crivm.image.registry_mirrors]\n\"docker.io\" = [\"mirror.example.com:5000\"]\n", ""},
		{"[crivm.image.registry_mirrors]\n\"docker.io\" = []\n", ""},
		{"[crivm.metrics]\nenable_metrics = true\nmetrics_address = \"::1\"\nmetrics_port = 65535\n[crivm.stream]\naddress = \"0.0.0.0\"\nport = 10010\n", ""},
		{"[crivm.runtime.runtimes.vm]\nmax_vcpus = 4\nmax_memory_mib = 4096\nvmm_uid_base = 4294901758\nvmm_uid_count = 65536\nshared_fs = \"virtio-fs\"\nvirtio_fs_cache = \"never\"\n", ""},
		{"[crivm.runtime.runtimes.crun]\nruntime_type = \"oci\"\naliases = [\"kata\"]\n", ""},
		{"[crivm.runtime]\nruntime_untrusted_workload = \"runc\"\n", ""},
		{"[crivm.runtime.runtimes.vm]\nruntime_type = \"oci\"\n", ""},
		{"[crivm.runtime.runtimes.vm]\ndefault_vcpus = \"two\"\n", ""},
		{"[crivm\nroot = 1\n", ""},
		{"[crivm.runtime]\ndefault_runtme = \"runc\"\nfoo = 1\n", "[crivm]\nroot = \"var/lib\"\n"},
		{"crivm.runtime.runtimes.\"Bad Name\".runtime_type = \"vm\"\n", ""},
		{"[crivm]\nlisten = \"unix:///run/crivm/crivm.sock\"\nlog_format = \"json\"\n", "crivm.runtime = { default_runtime = \"vm\" }\n"},
	} {
		f.Add([]byte(s.main), []byte(s.dropIn))
	}
	// One directory for every input: the fuzz function runs one input at a
	// time in each process, and a directory per input costs more than Load.
	dir := f.TempDir()
	mainPath := filepath.Join(dir, "crivm.conf")
	dropInDir := filepath.Join(dir, "crivm.conf.d")
	dropInPath := filepath.Join(dropInDir, "10-fuzz.conf")
	outPath := filepath.Join(dir, "written.conf")
	if err := os.Mkdir(dropInDir, 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, main, dropIn []byte) {
		if err := os.WriteFile(mainPath, main, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dropInPath, dropIn, 0o644); err != nil {
			t.Fatal(err)
		}
		opts := LoadOptions{File: mainPath, FileExplicit: true, DropInDir: dropInDir, DropInDirExplicit: true}

		l, err := Load(opts)
		l2, err2 := Load(opts)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("Load is not deterministic: %v, then %v", err, err2)
		}
		if err != nil {
			if l != nil {
				t.Fatalf("Load returned a config and the error %v", err)
			}
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FileError", err, err)
			}
			if fe.File != mainPath && fe.File != dropInPath && fe.File != "defaults" {
				t.Fatalf("error %v blames %q, not one of the files", err, fe.File)
			}
			return
		}
		if !reflect.DeepEqual(l, l2) {
			t.Fatalf("Load is not deterministic:\n%+v\n%+v", l, l2)
		}
		if err := l.Config.Validate(); err != nil {
			t.Fatalf("Load accepted a config its Validate refuses: %v", err)
		}

		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(fileConfig{Crivm: *l.Config}); err != nil {
			t.Fatalf("encoding an accepted config: %v", err)
		}
		if err := os.WriteFile(outPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		l3, err := Load(LoadOptions{File: outPath, FileExplicit: true, DropInDir: os.DevNull})
		if err != nil {
			t.Fatalf("reloading an accepted config written out: %v\n%s", err, buf.Bytes())
		}
		if !reflect.DeepEqual(l.Config, l3.Config) {
			t.Fatalf("an accepted config written out and reloaded differs:\nfirst:    %+v\nreloaded: %+v\nwritten:\n%s", l.Config, l3.Config, buf.Bytes())
		}
	})
}

// TestLoadRefusesMiscasedKeys: what FuzzLoad found. The TOML decoder
// matches struct fields case-insensitively, so "Crivm" or "Root" decoded
// into the config while merge kept them apart from "crivm" and "root", and
// which one won was random; and the error for two registries without
// mirrors named either one. Keys are case-sensitive; names below a map
// are not keys.
func TestLoadRefusesMiscasedKeys(t *testing.T) {
	for _, tt := range []struct {
		main string
		want string // the error's key and message; "" for accepted
	}{
		{"[Crivm]\nlisten = \"00000000\"\n", `key Crivm: unknown key (keys are case-sensitive: write crivm)`},
		{"[crivm]\nRoot = \"/srv\"\n", `key crivm.Root: unknown key (keys are case-sensitive: write crivm.root)`},
		{"Crivm.runtime = { default_runtime = \"\" }\n", `key Crivm: unknown key`},
		{"[crivm.runtime.runtimes.vm]\nAccel = \"tcg\"\n", `key crivm.runtime.runtimes.vm.Accel: unknown key (keys are case-sensitive: write crivm.runtime.runtimes.vm.accel)`},
		{"[crivm.image.registry_mirrors]\n\"Docker.io\" = [\"m\"]\n", ""},
		{"[crivm.image.registry_mirrors]\n\"quay.io\" = []\n\"docker.io\" = []\n", `key crivm.image.registry_mirrors.docker.io: lists no mirror`},
	} {
		dir := writeFiles(t, map[string]string{"crivm.conf": tt.main})
		for range 10 {
			_, err := Load(LoadOptions{File: filepath.Join(dir, "crivm.conf"), FileExplicit: true, DropInDir: os.DevNull})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("%q: %v", tt.main, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("%q: got %v, want an error with %q", tt.main, err, tt.want)
			}
		}
	}
}
