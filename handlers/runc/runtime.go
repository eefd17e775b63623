package runc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// errNotExist is how runc says it has no such container.
var errNotExist = errors.New("container does not exist")

// runtime runs the OCI runtime binary (runc or a compatible one) with its
// state under root.
type runtime struct {
	path string
	root string
	// systemd selects runc's systemd cgroup driver.
	systemd bool
}

func (r *runtime) globalArgs() []string {
	args := []string{"--root", r.root}
	if r.systemd {
		args = append(args, "--systemd-cgroup")
	}
	return args
}

// run runs the runtime with args and returns stdout. A failure's error
// carries the runtime's stderr, and its class when the request caused it
// (runtimeErrorClass).
func (r *runtime) run(ctx context.Context, args ...string) ([]byte, error) {
	full := append(r.globalArgs(), args...)
	cmd := exec.CommandContext(ctx, r.path, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	log.G(ctx).Debug("running runtime", "path", r.path, "args", full)
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "does not exist") || strings.Contains(msg, "not found") {
			return nil, fmt.Errorf("%s %s: %s: %w", r.path, args[0], msg, errNotExist)
		}
		if errors.Is(err, exec.ErrNotFound) {
			return nil, errdefs.FailedPrecondition("runtime %s: %w", r.path, err)
		}
		return nil, classify(fmt.Errorf("%s %s: %w: %s", r.path, args[0], err, msg), msg)
	}
	return stdout.Bytes(), nil
}

func (r *runtime) start(ctx context.Context, id string) error {
	_, err := r.run(ctx, "start", id)
	return err
}

// kill signals the container's init process (all processes with all).
func (r *runtime) kill(ctx context.Context, id string, sig int, all bool) error {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	_, err := r.run(ctx, append(args, id, fmt.Sprint(sig))...)
	return err
}

// delete removes the runtime's state for id; a missing container is fine.
func (r *runtime) delete(ctx context.Context, id string) error {
	_, err := r.run(ctx, "delete", "--force", id)
	if errors.Is(err, errNotExist) {
		return nil
	}
	return err
}
