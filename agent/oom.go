package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy/api"
)

// maxOOMEvents bounds the OOM events queued for GetOOMEvent; beyond it the
// oldest are dropped.
const maxOOMEvents = 128

// oomEvent is one OOM kill in a container's cgroup.
type oomEvent struct {
	id    string
	kills uint64
}

// oomWatcher turns changes of the containers' memory.events into OOM
// events: the kernel signals a modification of the file when a counter
// changes, and an event is queued when oom_kill grew.
type oomWatcher struct {
	fd int // inotify

	// mu guards watches, queue and changed.
	mu      sync.Mutex
	watches map[int32]*oomWatch // by inotify watch descriptor
	queue   []oomEvent
	// changed is closed and replaced when queue grows.
	changed chan struct{}
}

type oomWatch struct {
	id, cgroup string
	last       uint64
}

// newOOMWatcher starts watching; its reader runs until the process ends.
func newOOMWatcher() (*oomWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating the OOM watch: %w", err)
	}
	w := &oomWatcher{fd: fd, watches: map[int32]*oomWatch{}, changed: make(chan struct{})}
	go w.read()
	return w, nil
}

// add watches the cgroup of container id from its current oom_kill count.
func (w *oomWatcher) add(id, cgroup string, base uint64) error {
	wd, err := unix.InotifyAddWatch(w.fd, filepath.Join(cgroup, "memory.events"), unix.IN_MODIFY)
	if err != nil {
		return fmt.Errorf("watching memory.events of %s: %w", id, err)
	}
	w.mu.Lock()
	w.watches[int32(wd)] = &oomWatch{id: id, cgroup: cgroup, last: base}
	w.mu.Unlock()
	return nil
}

// remove stops watching container id.
func (w *oomWatcher) remove(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for wd, ow := range w.watches {
		if ow.id == id {
			unix.InotifyRmWatch(w.fd, uint32(wd))
			delete(w.watches, wd)
		}
	}
}

func (w *oomWatcher) read() {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			w.check(ev.Wd)
		}
	}
}

// check queues an event when the oom_kill count of the watch grew.
func (w *oomWatcher) check(wd int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ow, ok := w.watches[wd]
	if !ok {
		return
	}
	n, err := oomKills(ow.cgroup)
	if err != nil || n <= ow.last {
		return
	}
	ow.last = n
	w.queue = append(w.queue, oomEvent{ow.id, n})
	if len(w.queue) > maxOOMEvents {
		w.queue = w.queue[len(w.queue)-maxOOMEvents:]
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// next returns the oldest queued event, waiting for one until ctx ends.
func (w *oomWatcher) next(ctx context.Context) (oomEvent, error) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			ev := w.queue[0]
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return ev, nil
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return oomEvent{}, ctx.Err()
		}
	}
}

// GetOOMEvent waits for the next OOM kill in a container.
func (s *Service) GetOOMEvent(ctx context.Context, _ *api.GetOOMEventRequest) (*api.GetOOMEventResponse, error) {
	if s.oom == nil {
		return nil, fmt.Errorf("OOM events are not watched in this guest")
	}
	ev, err := s.oom.next(ctx)
	if err != nil {
		return nil, err
	}
	return &api.GetOOMEventResponse{ContainerId: ev.id, OomKills: ev.kills}, nil
}
