package framework

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
)

// StreamOptions are the stdio of an exec or attach session.
type StreamOptions struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	TTY            bool
	// Size, when set with TTY, is sent as the terminal size.
	Size *remotecommand.TerminalSize
}

type fixedSize struct {
	size *remotecommand.TerminalSize
	sent bool
}

// Next returns the size once, then nil, which ends the resize stream.
func (f *fixedSize) Next() *remotecommand.TerminalSize {
	if f.sent {
		return nil
	}
	f.sent = true
	return f.size
}

// Stream runs an exec or attach session against a streaming URL the runtime
// returned, the way kubectl and the kubelet's proxy do (SPDY, remotecommand).
func Stream(ctx context.Context, rawURL string, o StreamOptions) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	exec, err := remotecommand.NewSPDYExecutor(&restclient.Config{}, http.MethodPost, u)
	if err != nil {
		return fmt.Errorf("creating executor: %w", err)
	}
	so := remotecommand.StreamOptions{Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, Tty: o.TTY}
	if o.TTY && o.Size != nil {
		so.TerminalSizeQueue = &fixedSize{size: o.Size}
	}
	return exec.StreamWithContext(ctx, so)
}

// PortForward forwards a local port to port in the pod through a
// port-forward URL and returns the local address. Stop it with stop.
func PortForward(rawURL string, port int) (local string, stop func(), err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", nil, err
	}
	tr, upgrader, err := spdy.RoundTripperFor(&restclient.Config{})
	if err != nil {
		return "", nil, err
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: tr}, http.MethodPost, u)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	localPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	stopCh, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("%d:%d", localPort, port)}, stopCh, ready, io.Discard, io.Discard)
	if err != nil {
		return "", nil, err
	}
	errCh := make(chan error, 1)
	go func() { errCh <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errCh:
		return "", nil, fmt.Errorf("port-forward: %w", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", localPort), func() { close(stopCh) }, nil
}
