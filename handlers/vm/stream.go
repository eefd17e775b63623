package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	utilexec "k8s.io/utils/exec"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/store"
)

// Exec runs cmd in the container through the agent with the caller's
// streams: stdin is written in chunks, output copied as it comes, and the
// terminal resized on request.
func (h *Handler) Exec(ctx context.Context, c *store.Container, req handlers.StreamRequest) error {
	if len(req.Cmd) == 0 {
		return errdefs.InvalidArgument("exec command is empty")
	}
	v, err := h.connection(ctx, &store.Sandbox{ID: c.Extra["sandbox_vm"]})
	if err != nil {
		return err
	}
	var b [8]byte
	rand.Read(b[:])
	execID := "exec-" + hex.EncodeToString(b[:])
	if _, err := v.client.StartProcess(ctx, &api.StartProcessRequest{ContainerId: c.ID, ExecId: execID, Args: req.Cmd, Tty: req.TTY, Stdin: req.Stdin != nil}); err != nil {
		return fmt.Errorf("starting exec in the guest: %w", err)
	}
	defer v.client.DeleteProcess(context.WithoutCancel(ctx), &api.DeleteProcessRequest{ContainerId: c.ID, ExecId: execID})
	h.pumpStdio(ctx, v.client, c.ID, execID, req)
	r, err := v.client.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: c.ID, ExecId: execID})
	if err != nil {
		return fmt.Errorf("waiting for exec in the guest: %w", err)
	}
	if r.ExitCode != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command exited with %d", r.ExitCode), Code: int(r.ExitCode)}
	}
	return nil
}

// Attach connects the caller's streams to the container's init process.
// Output starts from what the agent still buffers (a bounded window), not
// only from the moment of attaching.
func (h *Handler) Attach(ctx context.Context, c *store.Container, req handlers.StreamRequest) error {
	v, err := h.connection(ctx, &store.Sandbox{ID: c.Extra["sandbox_vm"]})
	if err != nil {
		return err
	}
	h.pumpStdio(ctx, v.client, c.ID, "", req)
	return ctx.Err()
}

// pumpStdio wires one guest process to the caller's streams and returns
// when its output has ended (or ctx has).
func (h *Handler) pumpStdio(ctx context.Context, c *agentproxy.Client, id, execID string, req handlers.StreamRequest) {
	if req.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := req.Stdin.Read(buf)
				if n > 0 {
					if _, werr := c.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: id, ExecId: execID, Data: buf[:n]}); werr != nil {
						return
					}
				}
				if err != nil {
					c.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: id, ExecId: execID})
					return
				}
			}
		}()
	}
	if req.TTY && req.Resize != nil {
		go func() {
			for size := range req.Resize {
				c.ResizeTerminal(ctx, &api.ResizeTerminalRequest{ContainerId: id, ExecId: execID, Width: uint32(size.Width), Height: uint32(size.Height)})
			}
		}()
	}
	var wg sync.WaitGroup
	copyTo := func(st api.Stream, w io.Writer) {
		if w == nil {
			return
		}
		wg.Go(func() {
			agentproxy.CopyOutput(ctx, c, agentproxy.OutputStream{ContainerID: id, ExecID: execID, Stream: st}, w)
		})
	}
	copyTo(api.Stream_STDOUT, req.Stdout)
	if !req.TTY {
		copyTo(api.Stream_STDERR, req.Stderr)
	}
	wg.Wait()
}
