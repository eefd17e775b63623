package server

import (
	"io"
	"log/slog"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A subscriber that stops reading is dropped once its queue is full; the
// publisher never blocks and the other subscribers keep every event.
func TestEventBusDropsSlowSubscriber(t *testing.T) {
	var bus eventBus
	l := slog.New(slog.NewTextHandler(io.Discard, nil))
	slow, cancelSlow := bus.subscribe()
	defer cancelSlow()
	fast, cancelFast := bus.subscribe()
	defer cancelFast()

	received := 0
	for i := 0; i < eventBufferSize+10; i++ {
		bus.publish(l, &runtimeapi.ContainerEventResponse{ContainerId: "c"})
		select {
		case <-fast.ch:
			received++
		default:
			t.Fatalf("event %d did not reach the reading subscriber", i)
		}
	}
	select {
	case <-slow.dropped:
	default:
		t.Fatal("the subscriber that never reads was not dropped")
	}
	if got, want := len(slow.ch), eventBufferSize; got != want {
		t.Errorf("slow subscriber queue: got %d, want %d", got, want)
	}
	if received != eventBufferSize+10 {
		t.Errorf("reading subscriber got %d events, want %d", received, eventBufferSize+10)
	}
	bus.mu.Lock()
	_, stillSubscribed := bus.subs[slow]
	bus.mu.Unlock()
	if stillSubscribed {
		t.Error("dropped subscriber is still subscribed")
	}
}
