// Package testutil gates tests on what the machine really has, in the style
// of firecracker-go-sdk's fctesting. A gate skips with the machine's reason,
// never to hide a broken path.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequiresRoot skips unless the test runs as root.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("requires root: running as uid %d", os.Geteuid())
	}
}

// RequiresBinary skips unless name is found in PATH or is an existing
// absolute path, and returns its path.
func RequiresBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("requires %s: not installed (%v); `make deps` installs it", name, err)
	}
	return p
}

// RequiresKVM skips unless /dev/kvm exists. Whether KVM can really boot a
// guest is the vmm probe's business; this gate only says KVM is absent.
func RequiresKVM(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skipf("KVM not available: /dev/kvm missing (%v)", err)
	}
}
