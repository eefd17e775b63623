package hostprobe

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// versionTimeout bounds `qemu --version`, which never needs more than a
// fraction of a second.
const versionTimeout = 10 * time.Second

var qemuVersionRE = regexp.MustCompile(`QEMU emulator version (\d+\.\d+(?:\.\d+)?)`)

// QEMUVersion runs `path --version` and returns the version number, e.g.
// "7.2.22".
func QEMUVersion(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running %s --version: %w: %s", path, err, firstLine(out.String()))
	}
	v, err := parseQEMUVersion(out.String())
	if err != nil {
		return "", fmt.Errorf("parsing %s --version: %w", path, err)
	}
	return v, nil
}

func parseQEMUVersion(out string) (string, error) {
	m := qemuVersionRE.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no %q in %q", "QEMU emulator version", firstLine(out))
	}
	return m[1], nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
