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
	v, err := h.connection(ctx, &store.Sandbox{ID: c.SandboxID})
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

// extraStdinOnce marks a container whose stdin closes when the first
// attach session's stdin ends (CRI stdin_once); otherwise it stays open
// for the next session, as conmon's --leave-stdin-open does.
const extraStdinOnce = "stdin_once"

// Attach connects the caller's streams to the container's init process:
// output from the moment of attaching (the log pump fans it out; the agent
// buffer is not replayed), stdin and resizes into the guest. It returns
// when the output ends, the caller goes away, or the caller falls too far
// behind (then with an error).
func (h *Handler) Attach(ctx context.Context, c *store.Container, req handlers.StreamRequest) error {
	v, err := h.connection(ctx, &store.Sandbox{ID: c.SandboxID})
	if err != nil {
		return err
	}
	lwv, ok := h.logs.Load(c.ID)
	if !ok {
		return errdefs.FailedPrecondition("attaching to %s: its output is not being followed", c.ID)
	}
	a := lwv.(*logWriter).subscribe()
	if a == nil {
		return errdefs.FailedPrecondition("attaching to %s: its output has ended", c.ID)
	}
	defer lwv.(*logWriter).unsubscribe(a)
	h.feedInput(ctx, v.client, c.ID, "", req, c.Extra[extraStdinOnce] == "true")
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ch, ok := <-a.ch:
			if !ok {
				if a.lagged {
					return errdefs.Newf(errdefs.ErrResourceExhausted, "attach to %s fell behind the container's output", c.ID)
				}
				return nil
			}
			w := req.Stdout
			if ch.stream == "stderr" && !req.TTY {
				w = req.Stderr
			}
			if w == nil {
				continue
			}
			if _, err := w.Write(ch.data); err != nil {
				return err
			}
		}
	}
}

// feedInput copies the caller's stdin (closing the process's stdin at its
// end when closeStdin) and terminal resizes into the guest, in the
// background until ctx ends.
func (h *Handler) feedInput(ctx context.Context, c *agentproxy.Client, id, execID string, req handlers.StreamRequest, closeStdin bool) {
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
					if closeStdin {
						c.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: id, ExecId: execID})
					}
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
}

// pumpStdio wires one exec process to the caller's streams and returns
// when its output has ended (or ctx has). Exec processes have no log pump,
// so their output is read from the agent directly.
func (h *Handler) pumpStdio(ctx context.Context, c *agentproxy.Client, id, execID string, req handlers.StreamRequest) {
	h.feedInput(ctx, c, id, execID, req, true)
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
