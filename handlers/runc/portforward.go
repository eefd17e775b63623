package runc

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
)

// PortForward dials localhost:port inside the pod's network namespace and
// copies bytes both ways until either side closes.
func (h *Handler) PortForward(ctx context.Context, sb *store.Sandbox, port int32, stream io.ReadWriteCloser) error {
	return ForwardInNetNS(ctx, sb, port, stream)
}

// ForwardInNetNS is PortForward for any pod whose ports listen in its netns
// on the host (runc pods; VM pods whose netns holds the guest's address).
func ForwardInNetNS(ctx context.Context, sb *store.Sandbox, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	if port <= 0 || port > 65535 {
		return errdefs.InvalidArgument("port %d is out of range", port)
	}
	var conn net.Conn
	dial := func() error {
		var err error
		conn, err = net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		return err
	}
	var err error
	if sb.NetNSPath == "" {
		err = dial() // host network
	} else {
		err = netns.Do(sb.NetNSPath, dial)
	}
	if err != nil {
		return fmt.Errorf("dialing port %d in sandbox %s: %w", port, sb.ID, err)
	}
	defer conn.Close()
	handlers.Splice(stream, conn)
	return nil
}
