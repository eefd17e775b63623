package oci

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain gives the package's tests a host whose root mount is shared, as
// on a systemd host, so mount tests do not depend on this machine's
// propagation; TestCheckPropagation replaces it with its own table.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "oci-test-")
	if err != nil {
		panic(err)
	}
	p := filepath.Join(dir, "mountinfo")
	if err := os.WriteFile(p, []byte("21 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"), 0o644); err != nil {
		panic(err)
	}
	mountinfoPath = p
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
