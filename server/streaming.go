package server

import (
	"context"
	"io"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/crivm/crivm/handlers"
)

// Exec, Attach and PortForward hand out URLs on the streaming server; the
// streams themselves come back through StreamRuntime.
func (s *RuntimeService) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if err := checkExecCmd(req.GetCmd()); err != nil {
		return nil, err
	}
	if _, _, err := s.liveContainer(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.streamingServer().GetExec(req)
}

func (s *RuntimeService) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if _, _, err := s.liveContainer(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.streamingServer().GetAttach(req)
}

func (s *RuntimeService) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if _, err := s.deps.Store.Sandboxes.Get(req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return s.streamingServer().GetPortForward(req)
}

func (s *RuntimeService) streamingServer() streaming.Server {
	return s.streaming
}

// StreamRuntime adapts the handlers to the streaming server.
type StreamRuntime struct{ S *RuntimeService }

var _ streaming.Runtime = StreamRuntime{}

func (r StreamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, h, err := r.S.liveContainer(ctx, id)
	if err != nil {
		return err
	}
	return h.Exec(ctx, c, handlers.StreamRequest{Cmd: cmd, Stdin: in, Stdout: out, Stderr: errw, TTY: tty, Resize: resize})
}

func (r StreamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, h, err := r.S.liveContainer(ctx, id)
	if err != nil {
		return err
	}
	return h.Attach(ctx, c, handlers.StreamRequest{Stdin: in, Stdout: out, Stderr: errw, TTY: tty, Resize: resize})
}

func (r StreamRuntime) PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error {
	sb, err := r.S.deps.Store.Sandboxes.Get(sandboxID)
	if err != nil {
		return err
	}
	h, err := r.S.sandboxHandler(sb)
	if err != nil {
		return err
	}
	return h.PortForward(ctx, sb, port, stream)
}
