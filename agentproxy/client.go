package agentproxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
)

// Client is a connection to one VM's agent: a Session and a ttrpc client
// over one of its streams. The embedded AgentService is safe for
// concurrent use.
type Client struct {
	api.AgentService
	sess Session
	tc   *ttrpc.Client
}

// Connect dials the agent and sets up the ttrpc client. It does not call
// the agent; use WaitHealthy for that.
func Connect(ctx context.Context, d Dialer) (*Client, error) {
	sess, err := d.Dial(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := sess.Open(ctx)
	if err != nil {
		sess.Close()
		return nil, err
	}
	tc := ttrpc.NewClient(conn, ttrpc.WithUnaryClientInterceptor(classifyErrors))
	return &Client{AgentService: api.NewAgentClient(tc), sess: sess, tc: tc}, nil
}

// classifyErrors turns the agent's status errors back into errdefs classes
// (NotFound, InvalidArgument, ...), so the host tests them with
// errdefs.IsClass and server/ maps them to the same gRPC codes. The agent's
// message is kept as is.
func classifyErrors(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, info *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
	err := invoke(ctx, req, resp)
	var st *status.Status
	switch {
	case err != nil:
		var ok bool
		if st, ok = status.FromError(err); !ok {
			return err
		}
	case resp.Status != nil && resp.Status.Code != int32(codes.OK):
		st = status.FromProto(resp.Status)
		err = st.Err()
	default:
		return nil
	}
	class, ok := errdefs.ClassOf(st.Code())
	if !ok {
		return err
	}
	return errdefs.Newf(class, "agent: %s", st.Message())
}

// Done is closed when the session to the agent ends.
func (c *Client) Done() <-chan struct{} { return c.sess.Done() }

// Close disconnects from the agent. The agent keeps running and accepts
// the next Connect.
func (c *Client) Close() error {
	err := c.tc.Close()
	if errors.Is(err, ttrpc.ErrClosed) {
		err = nil
	}
	return errors.Join(err, c.sess.Close())
}

// WaitHealthy calls Health until it succeeds or ctx ends, at most
// perCall per attempt.
func (c *Client) WaitHealthy(ctx context.Context, perCall time.Duration) (*api.HealthResponse, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, perCall)
		r, err := c.Health(cctx, &api.HealthRequest{})
		cancel()
		if err == nil && r.Status == api.HealthResponse_SERVING {
			return r, nil
		}
		if err == nil {
			err = fmt.Errorf("agent reports %s", r.Status)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the agent to be healthy: %w (last error: %w)", ctx.Err(), err)
		case <-c.Done():
			return nil, fmt.Errorf("waiting for the agent to be healthy: session ended (last error: %w)", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
