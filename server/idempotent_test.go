package server

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestTeardownIdempotent: the CRI's stop and remove calls are idempotent.
// Repeating them, or naming an ID that does not exist, answers OK, and the
// handler is asked to stop and release each container and the sandbox
// once. StopSandbox is the exception by design: every StopPodSandbox and
// RemovePodSandbox releases the boundary again (each piece is idempotent,
// so a stop retried after a crash finishes what the crash interrupted).
func TestTeardownIdempotent(t *testing.T) {
	unknown := strings.Repeat("ef", 32)
	type ids struct{ sb, c string }
	type op struct {
		name string
		do   func(ctx context.Context, cl runtimeapi.RuntimeServiceClient, id ids) error
	}
	stopCtr := func(id func(ids) string) op {
		return op{"StopContainer", func(ctx context.Context, cl runtimeapi.RuntimeServiceClient, x ids) error {
			_, err := cl.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id(x), Timeout: 1})
			return err
		}}
	}
	removeCtr := func(id func(ids) string) op {
		return op{"RemoveContainer", func(ctx context.Context, cl runtimeapi.RuntimeServiceClient, x ids) error {
			_, err := cl.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id(x)})
			return err
		}}
	}
	stopPod := func(id func(ids) string) op {
		return op{"StopPodSandbox", func(ctx context.Context, cl runtimeapi.RuntimeServiceClient, x ids) error {
			_, err := cl.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id(x)})
			return err
		}}
	}
	removePod := func(id func(ids) string) op {
		return op{"RemovePodSandbox", func(ctx context.Context, cl runtimeapi.RuntimeServiceClient, x ids) error {
			_, err := cl.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id(x)})
			return err
		}}
	}
	sb := func(x ids) string { return x.sb }
	ctr := func(x ids) string { return x.c }
	none := func(ids) string { return unknown }

	tests := []struct {
		name string
		ops  []op
		// want are the handler's calls, "Method sb" or "Method c".
		want []string
		// podGone: nothing of the pod is left; else only the container
		// is gone.
		podGone bool
	}{
		{
			name: "container stopped and removed twice",
			ops:  []op{stopCtr(ctr), stopCtr(ctr), removeCtr(ctr), removeCtr(ctr), stopCtr(ctr), removeCtr(none), stopCtr(none)},
			// The first stop reads the state, then stops; a stopped
			// container is not stopped again.
			want: []string{"ContainerState c", "StopContainer c", "RemoveContainer c"},
		},
		{
			name: "running container removed twice",
			ops:  []op{removeCtr(ctr), removeCtr(ctr)},
			want: []string{"ContainerState c", "StopContainer c", "RemoveContainer c"},
		},
		{
			name:    "pod stopped and removed twice",
			ops:     []op{stopPod(sb), stopPod(sb), removePod(sb), removePod(sb), stopPod(sb), removePod(none), stopPod(none)},
			want:    []string{"StopContainer c", "StopSandbox sb", "StopSandbox sb", "StopSandbox sb", "RemoveContainer c", "RemoveSandbox sb"},
			podGone: true,
		},
		{
			name:    "pod removed twice without a stop",
			ops:     []op{removePod(sb), removePod(sb)},
			want:    []string{"StopContainer c", "StopSandbox sb", "RemoveContainer c", "RemoveSandbox sb"},
			podGone: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEnv(t, fakeEnvOptions{busybox: true})
			ctx := context.Background()
			x := ids{sb: e.runPod("web", fakeVM)}
			x.c = e.createContainer(x.sb, "app", true)
			e.h.reset()
			for i, o := range tt.ops {
				if err := o.do(ctx, e.client, x); err != nil {
					t.Errorf("op %d %s: %v, want OK", i+1, o.name, err)
				}
			}
			got := e.h.journal()
			for i, c := range got {
				got[i] = strings.NewReplacer(x.sb, "sb", x.c, "c").Replace(c)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("handler calls\n%q\nwant\n%q", got, tt.want)
			}
			if _, err := e.client.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: x.c}); status.Code(err) != codes.NotFound {
				t.Errorf("ContainerStatus of the removed container: %v, want NotFound", err)
			}
			if e.storageHas(x.c) {
				t.Error("the removed container's rootfs is still in storage")
			}
			left := e.leftovers()
			if !tt.podGone {
				// The pod itself stays: its record, pod dir and shm.
				left = slices.DeleteFunc(left, func(l string) bool { return strings.Contains(l, x.sb) })
			}
			if len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}
		})
	}
}

// TestRaceWithRemovePodSandbox: an RPC on a sandbox that waited for the
// sandbox's lock while RemovePodSandbox held it finds the sandbox gone: a
// second RemovePodSandbox answers OK without releasing anything again,
// and a CreateContainer fails NotFound and creates nothing.
func TestRaceWithRemovePodSandbox(t *testing.T) {
	tests := []struct {
		name string
		// second is the RPC that waits for the lock.
		second   func(ctx context.Context, cl runtimeapi.RuntimeServiceClient, sb string) error
		wantCode codes.Code
	}{
		{
			name: "RemovePodSandbox",
			second: func(ctx context.Context, cl runtimeapi.RuntimeServiceClient, sb string) error {
				_, err := cl.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb})
				return err
			},
			wantCode: codes.OK,
		},
		{
			name: "CreateContainer",
			second: func(ctx context.Context, cl runtimeapi.RuntimeServiceClient, sb string) error {
				_, err := cl.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: ctrConfig("late")})
				return err
			},
			wantCode: codes.NotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEnv(t, fakeEnvOptions{busybox: true})
			ctx := context.Background()
			sb := e.runPod("web", fakeVM)
			e.h.reset()
			entered, release := make(chan struct{}), make(chan struct{})
			e.h.setOnCall(func(ctx context.Context, c fakeCall) {
				if c.Method == "StopSandbox" {
					select {
					case <-entered: // not the first
					default:
						close(entered)
						<-release
					}
				}
			})
			first := make(chan error, 1)
			go func() {
				_, err := e.client.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb})
				first <- err
			}()
			<-entered
			second := make(chan error, 1)
			go func() { second <- tt.second(ctx, e.client, sb) }()
			// The second RPC is waiting for the sandbox's lock.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				e.s.locks.mu.Lock()
				waiting := e.s.locks.locks[sb] != nil && e.s.locks.locks[sb].refs == 2
				e.s.locks.mu.Unlock()
				if waiting {
					break
				}
				if time.Now().After(deadline) {
					close(release)
					t.Fatal("the second RPC never waited for the sandbox's lock")
				}
			}
			close(release)
			if err := <-first; err != nil {
				t.Errorf("RemovePodSandbox: %v", err)
			}
			if err := <-second; status.Code(err) != tt.wantCode {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.wantCode)
			}
			var removes []string
			for _, c := range e.h.journal() {
				if !strings.HasPrefix(c, "StopSandbox ") {
					removes = append(removes, c)
				}
			}
			if want := []string{"RemoveSandbox " + sb}; !slices.Equal(removes, want) {
				t.Errorf("handler calls besides StopSandbox: %q, want %q", removes, want)
			}
			if left := e.leftovers(); len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}
		})
	}
}
