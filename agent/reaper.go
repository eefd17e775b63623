package agent

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Reaper reaps every child of PID 1, including orphans reparented to it,
// and hands the exit status of the processes started through it to their
// starters. It replaces exec.Cmd.Wait: a wait4(-1) loop and Cmd.Wait
// cannot share children.
type Reaper struct {
	// mu is held across fork-and-register in Start and across
	// wait4-and-dispatch in reap, so a child that exits at once is never
	// reaped before its waiter is registered.
	mu    sync.Mutex
	waits map[int]chan unix.WaitStatus
}

// NewReaper returns a Reaper; Run must be running for waits to complete.
func NewReaper() *Reaper {
	return &Reaper{waits: map[int]chan unix.WaitStatus{}}
}

// Run reaps on every SIGCHLD until stop is closed. A slow tick covers a
// SIGCHLD coalesced with one being handled.
func (r *Reaper) Run(stop <-chan struct{}) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		r.reap()
		select {
		case <-stop:
			return
		case <-sig:
		case <-tick.C:
		}
	}
}

func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		// An orphan reparented to PID 1 has no waiter: reaping it is all.
		if ch, ok := r.waits[pid]; ok {
			delete(r.waits, pid)
			ch <- ws
		}
	}
}

// Start starts cmd and returns a channel that receives its wait status
// once. Never call cmd.Wait on it; Release the process after the status
// arrives.
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	r.waits[cmd.Process.Pid] = ch
	return ch, nil
}

// exitCode is the status the way a shell reports it: 128+signal for a
// process a signal ended.
func exitCode(ws unix.WaitStatus) int32 {
	switch {
	case ws.Exited():
		return int32(ws.ExitStatus())
	case ws.Signaled():
		return 128 + int32(ws.Signal())
	}
	return -1
}
