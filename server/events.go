package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/store"
)

// eventBufferSize bounds each subscriber's queue. A subscriber that falls
// this far behind is dropped rather than allowed to slow the runtime.
const eventBufferSize = 1024

// eventBus fans container and sandbox events out to GetContainerEvents
// subscribers. Publish never blocks.
type eventBus struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{} // guarded by mu
}

type subscriber struct {
	ch chan *runtimeapi.ContainerEventResponse
	// dropped is closed when the bus gives up on a slow subscriber.
	dropped chan struct{}
}

func (b *eventBus) subscribe() (*subscriber, func()) {
	s := &subscriber{ch: make(chan *runtimeapi.ContainerEventResponse, eventBufferSize), dropped: make(chan struct{})}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*subscriber]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s, func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}
}

// publish queues ev for every subscriber; one whose queue is full is dropped
// and told so through its dropped channel.
func (b *eventBus) publish(l *slog.Logger, ev *runtimeapi.ContainerEventResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- ev:
		default:
			delete(b.subs, s)
			close(s.dropped)
			l.Warn("dropped a container event subscriber that fell behind", "buffer", eventBufferSize)
		}
	}
}

// emitContainer publishes an event about c with its pod's status attached.
func (s *RuntimeService) emitContainer(ctx context.Context, c *store.Container, typ runtimeapi.ContainerEventType) {
	ev := &runtimeapi.ContainerEventResponse{ContainerId: c.ID, ContainerEventType: typ, CreatedAt: time.Now().UnixNano()}
	if sb, err := s.deps.Store.Sandboxes.Get(c.SandboxID); err == nil {
		s.attachStatuses(ctx, ev, sb)
	}
	if typ == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
		if st, err := s.containerStatus(ctx, c); err == nil {
			ev.ContainersStatuses = append(ev.ContainersStatuses, st)
		}
	}
	s.events.publish(log.G(ctx), ev)
}

// emitSandbox publishes an event about sb itself, as CRI-O does: the
// sandbox ID in container_id.
func (s *RuntimeService) emitSandbox(ctx context.Context, sb *store.Sandbox, typ runtimeapi.ContainerEventType) {
	ev := &runtimeapi.ContainerEventResponse{ContainerId: sb.ID, ContainerEventType: typ, CreatedAt: time.Now().UnixNano()}
	s.attachStatuses(ctx, ev, sb)
	s.events.publish(log.G(ctx), ev)
}

func (s *RuntimeService) attachStatuses(ctx context.Context, ev *runtimeapi.ContainerEventResponse, sb *store.Sandbox) {
	if st, err := s.sandboxStatus(sb); err == nil {
		ev.PodSandboxStatus = st
	}
	for _, c := range s.deps.Store.Containers.List(func(c *store.Container) bool { return c.SandboxID == sb.ID }) {
		if st, err := s.containerStatus(ctx, c); err == nil {
			ev.ContainersStatuses = append(ev.ContainersStatuses, st)
		}
	}
}
