package handlers

import (
	"testing"
	"time"

	"github.com/crivm/crivm/store"
)

func TestContainerStateApply(t *testing.T) {
	start := time.Unix(1000, 500)
	tests := []struct {
		name         string
		rec          store.Container
		st           ContainerState
		wantStarted  time.Time
		wantFinished time.Time
	}{
		{"exit after start", store.Container{}, ContainerState{State: store.ContainerExited, StartedAt: start, FinishedAt: start.Add(time.Second)}, start, start.Add(time.Second)},
		// conmon's exit file mtime is on the coarse clock: up to a tick
		// behind the start time taken before `runc start`.
		{"coarse exit time before the start", store.Container{}, ContainerState{State: store.ContainerExited, StartedAt: start, FinishedAt: start.Add(-3 * time.Millisecond)}, start, start},
		{"start kept from the record", store.Container{StartedAt: start}, ContainerState{State: store.ContainerExited, FinishedAt: start.Add(-time.Millisecond)}, start, start},
		{"running", store.Container{}, ContainerState{State: store.ContainerRunning, StartedAt: start}, start, time.Time{}},
	}
	for _, tt := range tests {
		c := tt.rec
		tt.st.Apply(&c)
		if !c.StartedAt.Equal(tt.wantStarted) || !c.FinishedAt.Equal(tt.wantFinished) {
			t.Errorf("%s: started %v finished %v, want %v and %v", tt.name, c.StartedAt, c.FinishedAt, tt.wantStarted, tt.wantFinished)
		}
	}
}
