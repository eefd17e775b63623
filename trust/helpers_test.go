package trust

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/crivm/crivm/configs"
)

// testConfig has oci handlers runc and crun, vm handlers vm (alias kata)
// and vm-big.
func testConfig(defaultTrust, untrustedHandler string) *configs.Config {
	return &configs.Config{Runtime: configs.RuntimeConfig{
		DefaultRuntime:           "runc",
		RuntimeUntrustedWorkload: untrustedHandler,
		DefaultWorkloadTrust:     defaultTrust,
		Runtimes: map[string]*configs.RuntimeHandler{
			"runc":   {RuntimeType: configs.RuntimeTypeOCI},
			"crun":   {RuntimeType: configs.RuntimeTypeOCI},
			"vm":     {RuntimeType: configs.RuntimeTypeVM, Aliases: []string{"kata"}},
			"vm-big": {RuntimeType: configs.RuntimeTypeVM},
		},
	}}
}

// writeFiles writes name → content into a new temp dir and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustPolicy(t *testing.T, cfg *configs.Config, content string) *Policy {
	t.Helper()
	dir := writeFiles(t, map[string]string{"p.toml": content})
	p, err := LoadPolicy(filepath.Join(dir, "p.toml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
