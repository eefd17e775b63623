package agentproxy

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/crivm/crivm/agentproxy/api"
)

// OutputStream names one stream of a guest process for CopyOutput.
type OutputStream struct {
	ContainerID string
	// ExecID is empty for the container's init.
	ExecID string
	Stream api.Stream
	// Offset is where to resume (what the host already has); zero from the
	// start of what the agent still buffers.
	Offset uint64
	// Dropped, when not nil, is told how many bytes the agent dropped
	// (its buffer overflowed before the host read them).
	Dropped func(n uint64)
	// Poll bounds each call's wait in the agent; zero: 30 s. Each call
	// returns at least that often, so ctx is checked between calls.
	Poll time.Duration
	// Progress, when not nil, is told the offset reached after each chunk
	// was written to w.
	Progress func(off uint64)
}

// CopyOutput copies a guest process's stream to w until the stream ends
// (nil error) or ctx ends or a call fails. It returns the offset reached,
// from which a later CopyOutput resumes without loss or duplication. Each
// chunk is written whole before the next is asked for, so w sees the
// stream's bytes in order.
func CopyOutput(ctx context.Context, agent api.AgentService, s OutputStream, w io.Writer) (uint64, error) {
	off := s.Offset
	poll := s.Poll
	if poll <= 0 {
		poll = 30 * time.Second
	}
	for {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		cctx, cancel := context.WithTimeout(ctx, poll+10*time.Second)
		r, err := agent.ReadOutput(cctx, &api.ReadOutputRequest{
			ContainerId: s.ContainerID, ExecId: s.ExecID, Stream: s.Stream,
			Offset: off, WaitMs: uint32(poll / time.Millisecond),
		})
		cancel()
		if err != nil {
			return off, fmt.Errorf("reading %s of %s/%s at %d: %w", s.Stream, s.ContainerID, s.ExecID, off, err)
		}
		if r.Dropped > 0 && s.Dropped != nil {
			s.Dropped(r.Dropped)
		}
		off = r.Offset
		if len(r.Data) > 0 {
			if _, err := w.Write(r.Data); err != nil {
				return off, fmt.Errorf("writing %s of %s: %w", s.Stream, s.ContainerID, err)
			}
			off += uint64(len(r.Data))
			if s.Progress != nil {
				s.Progress(off)
			}
		}
		if r.Eof {
			return off, nil
		}
	}
}
