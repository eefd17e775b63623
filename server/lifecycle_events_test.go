package server

import (
	"context"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestLifecycleEvents: a GetContainerEvents subscriber gets, in order, the
// events of a pod's lifecycle, whether its container is stopped and
// removed on its own or by the pod's stop and removal: the sandbox's
// CREATED and STARTED when it runs, STOPPED when it stops, DELETED when
// it is removed (the sandbox ID in container_id, as CRI-O sends them),
// and the container's CREATED, STARTED, STOPPED and DELETED. Each event
// carries its subject's status in the state the event announces, and
// nothing else is sent: the next event is a later pod's.
func TestLifecycleEvents(t *testing.T) {
	const (
		created = runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT
		started = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
		stopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
		deleted = runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT
	)
	const (
		ready    = runtimeapi.PodSandboxState_SANDBOX_READY
		notReady = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		cCreated = runtimeapi.ContainerState_CONTAINER_CREATED
		cRunning = runtimeapi.ContainerState_CONTAINER_RUNNING
		cExited  = runtimeapi.ContainerState_CONTAINER_EXITED
	)
	// event is one expected event: about the sandbox (sbState) or the
	// container (cState).
	type event struct {
		ctr     bool
		typ     runtimeapi.ContainerEventType
		sbState runtimeapi.PodSandboxState
		cState  runtimeapi.ContainerState
	}
	sbEv := func(typ runtimeapi.ContainerEventType, st runtimeapi.PodSandboxState) event {
		return event{typ: typ, sbState: st}
	}
	cEv := func(typ runtimeapi.ContainerEventType, st runtimeapi.ContainerState) event {
		return event{ctr: true, typ: typ, cState: st}
	}
	start := []event{sbEv(created, ready), sbEv(started, ready), cEv(created, cCreated), cEv(started, cRunning)}
	tests := []struct {
		name string
		// teardown are the RPCs after the container started.
		teardown []string
		want     []event
	}{
		{
			name:     "container stopped and removed, then the pod",
			teardown: []string{"StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"},
			want: append(start[:len(start):len(start)],
				cEv(stopped, cExited), cEv(deleted, cExited), sbEv(stopped, notReady), sbEv(deleted, notReady)),
		},
		{
			name:     "pod stopped and removed with its container running",
			teardown: []string{"StopPodSandbox", "RemovePodSandbox"},
			want: append(start[:len(start):len(start)],
				cEv(stopped, cExited), sbEv(stopped, notReady), cEv(deleted, cExited), sbEv(deleted, notReady)),
		},
		{
			name:     "pod removed with its container running",
			teardown: []string{"RemovePodSandbox"},
			want: append(start[:len(start):len(start)],
				cEv(stopped, cExited), sbEv(stopped, notReady), cEv(deleted, cExited), sbEv(deleted, notReady)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEnv(t, fakeEnvOptions{busybox: true})
			ctx := context.Background()
			next := e.subscribe()
			sb := e.runPod("web", fakeVM)
			c := e.createContainer(sb, "app", true)
			for _, rpc := range tt.teardown {
				var err error
				switch rpc {
				case "StopContainer":
					_, err = e.client.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c, Timeout: 1})
				case "RemoveContainer":
					_, err = e.client.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c})
				case "StopPodSandbox":
					_, err = e.client.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb})
				case "RemovePodSandbox":
					_, err = e.client.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb})
				default:
					t.Fatalf("unknown RPC %s", rpc)
				}
				if err != nil {
					t.Fatalf("%s: %v", rpc, err)
				}
			}
			marker := e.runPod("marker", fakeVM)

			for i, w := range tt.want {
				ev := next()
				wantID := sb
				if w.ctr {
					wantID = c
				}
				if ev.GetContainerId() != wantID || ev.GetContainerEventType() != w.typ {
					t.Fatalf("event %d: %v about %s, want %v about %s (sandbox %s, container %s)",
						i+1, ev.GetContainerEventType(), ev.GetContainerId(), w.typ, wantID, sb, c)
				}
				if ev.GetCreatedAt() == 0 {
					t.Errorf("event %d (%v): no created_at", i+1, w.typ)
				}
				if got := ev.GetPodSandboxStatus(); got.GetId() != sb {
					t.Errorf("event %d (%v): pod status of %q, want %s", i+1, w.typ, got.GetId(), sb)
				} else if !w.ctr && got.GetState() != w.sbState {
					t.Errorf("event %d (%v): sandbox %v, want %v", i+1, w.typ, got.GetState(), w.sbState)
				}
				if w.ctr {
					var sts []*runtimeapi.ContainerStatus
					for _, st := range ev.GetContainersStatuses() {
						if st.GetId() == c {
							sts = append(sts, st)
						}
					}
					if len(sts) != 1 {
						t.Errorf("event %d (%v): %d statuses of the container, want 1", i+1, w.typ, len(sts))
					} else if sts[0].GetState() != w.cState {
						t.Errorf("event %d (%v): container %v, want %v", i+1, w.typ, sts[0].GetState(), w.cState)
					}
				}
			}
			if ev := next(); ev.GetContainerId() != marker || ev.GetContainerEventType() != created {
				t.Errorf("after the pod's events: %v about %s, want the next pod's %v about %s", ev.GetContainerEventType(), ev.GetContainerId(), created, marker)
			}
		})
	}
}
