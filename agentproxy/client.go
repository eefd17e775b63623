package agentproxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/crivm/crivm/agentproxy/api"
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
	tc := ttrpc.NewClient(conn)
	return &Client{AgentService: api.NewAgentClient(tc), sess: sess, tc: tc}, nil
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
