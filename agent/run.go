package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	clog "github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/vishvananda/netlink"

	"github.com/crivm/crivm/agent/launch"
	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// portWait bounds the wait for the agent's virtio-serial port after
// virtio_console loaded; under TCG the probe takes well under a second.
const portWait = 20 * time.Second

// Options configures Run.
type Options struct {
	// LogLevel is raised to debug when the kernel command line has
	// crivm.debug. May be nil.
	LogLevel *slog.LevelVar
	// GuestExec lets ExecProcess run commands as guest root outside any
	// container. Test builds only (cmd/crivm-agent, tag crivm_guestroot).
	GuestExec bool
}

// Run is PID 1's life: set the guest up, serve the API, and return only
// when serving failed for good or the power button was pressed. The caller
// powers the VM off after it returns.
func Run(ctx context.Context, opts Options) error {
	start := time.Now()
	l := log.G(ctx)
	if err := LeaveInitramfs(); err != nil {
		// Containers then cannot pivot_root; CreateContainer says so.
		l.Warn("leaving the initramfs root", "error", err)
	}
	if err := MountBase(ctx); err != nil {
		l.Warn("mounting base filesystems", "error", err)
	}
	if err := SetNodeSysctls(); err != nil {
		l.Warn("setting the kubelet's node sysctls", "error", err)
	}
	// Needs /proc; done while the host connects and sets the sandbox up.
	go launch.PrepareSealed()
	if _, ok := KernelParam(agentproxy.KernelParamDebug); ok && opts.LogLevel != nil {
		opts.LogLevel.Set(slog.LevelDebug)
	}
	// ttrpc logs through logrus, for example on every host disconnect
	// mid-call; keep that out of the console unless debugging.
	clog.L.Logger.SetOutput(debugWriter{l})
	os.Setenv("PATH", GuestPath)
	n, err := LoadModules(ctx, agentproxy.GuestModulesOrder)
	if err != nil {
		l.Warn("some kernel modules failed to load", "error", err)
	}
	// Containers share the guest's network namespace; localhost must work
	// in it with or without a NIC.
	if lo, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(lo) != nil {
		l.Warn("setting lo up failed")
	}
	l.Info("guest set up", "modules", n, "elapsed", time.Since(start))

	reaper := NewReaper()
	stop := make(chan struct{})
	defer close(stop)
	go reaper.Run(stop)

	svc := NewService(reaper)
	svc.guestExec = opts.GuestExec
	powerPressed := make(chan struct{})
	go WatchPowerButton(ctx, 10*time.Second, func() { close(powerPressed) })

	raw, err := listen(ctx)
	if err != nil {
		return err
	}
	defer raw.Close()
	// Port-forward streams are relayed here; the rest are ttrpc's.
	lis := agentproxy.NewPortForwardListener(raw, l)
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(errorInterceptor))
	if err != nil {
		return fmt.Errorf("creating ttrpc server: %w", err)
	}
	api.RegisterAgentService(srv, svc)
	l.Info("agent serving", "transport", lis.Addr().Network(), "addr", lis.Addr().String(), "elapsed", time.Since(start))
	// Off the boot's critical path: ready before the first container.
	go func() {
		if err := launch.PrepareCgroupParent(agentproxy.GuestCgroupParent); err != nil {
			l.Warn("preparing the containers' cgroup parent", "error", err)
		}
	}()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	select {
	case err := <-served:
		svc.Shutdown(ctx)
		if errors.Is(err, ttrpc.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serving the agent API: %w", err)
	case <-powerPressed:
		l.Info("power button pressed")
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		srv.Shutdown(sctx)
		cancel()
		svc.Shutdown(ctx)
		return nil
	}
}

func listen(ctx context.Context) (net.Listener, error) {
	transport, _ := KernelParam(agentproxy.KernelParamTransport)
	switch transport {
	case agentproxy.TransportVsock:
		return agentproxy.ListenVsock(0)
	case agentproxy.TransportSerial, "":
		wctx, cancel := context.WithTimeout(ctx, portWait)
		defer cancel()
		port, err := agentproxy.WaitSerialPort(wctx, agentproxy.SerialPortName)
		if err != nil {
			return nil, err
		}
		return agentproxy.ListenSerial(ctx, port)
	}
	return nil, fmt.Errorf("unknown %s=%q (want serial or vsock)", agentproxy.KernelParamTransport, transport)
}

// errorInterceptor turns the service's domain errors into status errors,
// so the host sees Unimplemented, InvalidArgument and so on.
func errorInterceptor(ctx context.Context, um ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
	r, err := m(ctx, um)
	if err != nil {
		log.G(ctx).Debug("call failed", "method", info.FullMethod, "error", err)
		return r, errdefs.ToGRPC(err)
	}
	return r, nil
}

// debugWriter logs each write (one logrus line) at debug level.
type debugWriter struct{ l *slog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimSpace(string(p)), "source", "ttrpc")
	return len(p), nil
}
