package agent

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxUnclaimed bounds the exit statuses of unwatched processes the Reaper
// keeps for a later Watch.
const maxUnclaimed = 1024

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
	// unclaimed holds the statuses of reaped processes nobody watched
	// (orphans: container processes whose runc exited), oldest first in
	// unclaimedOrder, for a Watch that comes after the exit.
	unclaimed      map[int]unix.WaitStatus
	unclaimedOrder []int
}

// NewReaper returns a Reaper; Run must be running for waits to complete.
func NewReaper() *Reaper {
	return &Reaper{waits: map[int]chan unix.WaitStatus{}, unclaimed: map[int]unix.WaitStatus{}}
}

// Watch returns a channel that receives the wait status of pid once: a
// process the guest's PID 1 will reap that was not started through Start,
// such as a container process reparented to it when its runc exited. If
// pid was reaped before Watch, its kept status is delivered at once.
func (r *Reaper) Watch(pid int) <-chan unix.WaitStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan unix.WaitStatus, 1)
	if ws, ok := r.unclaimed[pid]; ok {
		delete(r.unclaimed, pid)
		ch <- ws
		return ch
	}
	r.waits[pid] = ch
	return ch
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
		if ch, ok := r.waits[pid]; ok {
			delete(r.waits, pid)
			ch <- ws
			continue
		}
		r.keepUnclaimed(pid, ws)
	}
}

func (r *Reaper) keepUnclaimed(pid int, ws unix.WaitStatus) {
	if _, ok := r.unclaimed[pid]; !ok {
		r.unclaimedOrder = append(r.unclaimedOrder, pid)
	}
	r.unclaimed[pid] = ws
	for len(r.unclaimedOrder) > maxUnclaimed {
		old := r.unclaimedOrder[0]
		r.unclaimedOrder = r.unclaimedOrder[1:]
		// A pid reused and reaped again since is still wanted.
		if !slices.Contains(r.unclaimedOrder, old) {
			delete(r.unclaimed, old)
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
