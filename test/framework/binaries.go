// Package framework runs the real crivm daemon for e2e tests: it builds the
// binaries once, starts the daemon on a private socket and root, and hands
// out k8s.io/cri-client clients.
package framework

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// CrashpointBinary is crivm built with the crivm_crashpoints tag (make
// test-bins): set Daemon.Binary to it and crashpoint.EnvVar in
// Daemon.Env to have the daemon kill itself after a step.
const CrashpointBinary = "crivm-crashpoints"

// BuildTags are the tags crivm is built with (containers/image and storage).
const BuildTags = "containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_zfs grpcnotrace"

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// BinDir returns a directory holding crivm, crivmctl and crivm-agent. It is
// $CRIVM_BIN_DIR when set (make test sets it to bin/ after building),
// otherwise the binaries are built once per test process into a temp dir.
func BinDir() (string, error) {
	binOnce.Do(func() {
		if d := os.Getenv("CRIVM_BIN_DIR"); d != "" {
			binDir, binErr = filepath.Abs(d)
			return
		}
		binDir, binErr = os.MkdirTemp("", "crivm-e2e-bin-")
		if binErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		repo := filepath.Join(filepath.Dir(file), "..", "..")
		for _, cmd := range []string{"crivm", "crivmctl", "crivm-agent"} {
			b := exec.Command("go", "build", "-tags", BuildTags, "-o", filepath.Join(binDir, cmd), "./cmd/"+cmd)
			b.Dir = repo
			if cmd == "crivm-agent" { // PID 1 of the guest: static
				b.Env = append(os.Environ(), "CGO_ENABLED=0")
			}
			if out, err := b.CombinedOutput(); err != nil {
				binErr = fmt.Errorf("building %s: %v\n%s", cmd, err, out)
				return
			}
		}
		b := exec.Command("go", "build", "-tags", BuildTags+" crivm_crashpoints", "-o", filepath.Join(binDir, CrashpointBinary), "./cmd/crivm")
		b.Dir = repo
		if out, err := b.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("building %s: %v\n%s", CrashpointBinary, err, out)
		}
	})
	return binDir, binErr
}

// Bin returns the path of one built binary.
func Bin(name string) (string, error) {
	d, err := BinDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, name), nil
}
