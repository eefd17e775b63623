// Command crivm-agent is the in-guest agent: PID 1 of the guest initrd of a
// vm-handler pod. It sets the guest up, serves the agent API (agentproxy/api)
// to crivm over virtio-serial or vsock, and powers the VM off when it stops
// serving, so QEMU exits instead of leaving a guest without an agent.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/crivm/crivm/agent"
	"github.com/crivm/crivm/agent/launch"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/version"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Printf("crivm-agent version %s\n", version.String())
		return
	}
	if len(os.Args) > 1 && os.Args[1] == launch.InitArg {
		// A container's init, spawned by the agent; never returns.
		launch.Init()
	}
	if len(os.Args) > 1 && os.Args[1] == agent.PauseArg {
		// The pod's PID namespace holder, started by the agent.
		agent.Pause()
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "crivm-agent: runs only as PID 1 of a crivm guest (try `crivm-agent version`)")
		os.Exit(2)
	}
	// stderr is /dev/console, which the host captures as console.log: the
	// place for what the host cannot learn otherwise. So the agent logs
	// at info only what tells why a VM never served (its start, warnings,
	// errors) and the power button; what it does for a pod is at debug
	// (crivm.debug on the kernel command line): the host, which asked for
	// it, logs it, with the guest's steps (CreateContainerResponse).
	lv := new(slog.LevelVar)
	l := log.New(os.Stderr, "text", lv).With("component", "crivm-agent")
	ctx := log.WithLogger(context.Background(), l)
	l.Info("starting", "version", version.Version, "commit", version.Commit, "guest_exec", guestExec)
	err := agent.Run(ctx, agent.Options{LogLevel: lv, GuestExec: guestExec})
	if err != nil {
		l.Error("agent stopped", "error", err)
	}
	// PID 1 must never exit: the kernel would panic. Power off instead.
	for {
		agent.PowerOff(ctx, "agent stopped")
		time.Sleep(time.Second)
	}
}
