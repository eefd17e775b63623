package server

import (
	"context"
	"log/slog"
	"path"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/metrics"
)

// instrument is the one wrapper around every RPC: it attaches a logger naming
// the RPC and its ids to the context, logs the outcome with its duration, and
// converts domain errors to gRPC statuses.
type instrument struct {
	base    *slog.Logger
	metrics *metrics.Metrics
}

type (
	sandboxIDer   interface{ GetPodSandboxId() string }
	containerIDer interface{ GetContainerId() string }
)

// rpcContext attaches a logger naming the RPC and the ids in req.
func (in instrument) rpcContext(ctx context.Context, method string, req any) (context.Context, *slog.Logger) {
	l := in.base.With("rpc", path.Base(method))
	if r, ok := req.(sandboxIDer); ok && r.GetPodSandboxId() != "" {
		l = l.With("sandbox", r.GetPodSandboxId())
	}
	if r, ok := req.(containerIDer); ok && r.GetContainerId() != "" {
		l = l.With("container", r.GetContainerId())
	}
	return log.WithLogger(ctx, l), l
}

// finish logs and counts the outcome (at debug, failures louder) and
// converts err.
func (in instrument) finish(ctx context.Context, l *slog.Logger, method string, start time.Time, err error) error {
	d := time.Since(start)
	in.metrics.RPC(path.Base(method), errdefs.Code(errdefs.ToGRPC(err)).String(), d)
	if err == nil {
		l.DebugContext(ctx, "rpc done", "duration", d)
		return nil
	}
	gerr := errdefs.ToGRPC(err)
	lvl := slog.LevelWarn
	switch errdefs.Code(gerr) {
	case codes.NotFound, codes.Unimplemented, codes.Canceled:
		lvl = slog.LevelDebug
	case codes.Unknown, codes.Internal:
		lvl = slog.LevelError
	}
	l.Log(ctx, lvl, "rpc failed", "duration", d, "code", errdefs.Code(gerr).String(), "err", err)
	return gerr
}

func (in instrument) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	ctx, l := in.rpcContext(ctx, info.FullMethod, req)
	resp, err := handler(ctx, req)
	return resp, in.finish(ctx, l, info.FullMethod, start, err)
}

type loggedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *loggedStream) Context() context.Context { return s.ctx }

func (in instrument) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	ctx, l := in.rpcContext(ss.Context(), info.FullMethod, nil)
	err := handler(srv, &loggedStream{ServerStream: ss, ctx: ctx})
	return in.finish(ctx, l, info.FullMethod, start, err)
}
