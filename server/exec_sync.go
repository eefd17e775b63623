package server

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
)

// ExecSync runs a command in a running container and returns its output and
// exit code; a timeout that passes kills it and returns DeadlineExceeded.
func (s *RuntimeService) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if err := checkExecCmd(req.GetCmd()); err != nil {
		return nil, err
	}
	c, h, err := s.liveContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	res, err := h.ExecSync(ctx, c, handlers.ExecRequest{Cmd: req.GetCmd(), Timeout: time.Duration(req.GetTimeout()) * time.Second})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: res.ExitCode}, nil
}
