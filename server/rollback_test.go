package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
)

// TestRunPodSandboxRollback: a RunPodSandbox that fails at the handler's
// StartSandbox, or at a step after it, undoes every step before, newest
// first: at each of the handler's undo calls what the earlier steps made
// (intent, pod dir, netns, pause rootfs, CNI attachment) is still there,
// and afterwards nothing is (no record, no intent, no rootfs, no pod dir,
// no netns, no mount), the pod's name is free again and no event was
// emitted. The gRPC code, through the instrumenting interceptor, is the
// failure's class.
func TestRunPodSandboxRollback(t *testing.T) {
	tests := []struct {
		name     string
		handler  string
		net      podNet
		cni      cniMode
		features handlers.Features
		// startErr is StartSandbox's answer; gonePID makes StartSandbox
		// report a process that does not exist.
		startErr error
		gonePID  bool
		wantCode codes.Code
		// wantCalls are the handler's calls, all on the sandbox.
		wantCalls []string
		// wantCNI are the fake plugin's commands; a last DEL is the
		// rollback's.
		wantCNI []string
	}{
		{
			name: "StartSandbox fails: FailedPrecondition", handler: fakeVM,
			startErr: errdefs.FailedPrecondition("no room for the pod"), wantCode: codes.FailedPrecondition,
			wantCalls: []string{"StartSandbox"},
		},
		{
			name: "StartSandbox fails: ResourceExhausted", handler: fakeVM,
			startErr: errdefs.Newf(errdefs.ErrResourceExhausted, "out of guest memory"), wantCode: codes.ResourceExhausted,
			wantCalls: []string{"StartSandbox"},
		},
		{
			name: "StartSandbox fails: unclassified", handler: fakeVM,
			startErr: errors.New("qemu crashed"), wantCode: codes.Unknown,
			wantCalls: []string{"StartSandbox"},
		},
		{
			name: "StartSandbox fails after the pause rootfs", handler: fakeOCI,
			startErr: errdefs.Newf(errdefs.ErrUnavailable, "conmon is gone"), wantCode: codes.Unavailable,
			wantCalls: []string{"StartSandbox"},
		},
		{
			name: "StartSandbox fails while CNI runs", handler: fakeVM, net: netPod, cni: cniOK,
			startErr: errdefs.FailedPrecondition("no room for the pod"), wantCode: codes.FailedPrecondition,
			wantCalls: []string{"StartSandbox"},
			wantCNI:   []string{"ADD", "DEL"},
		},
		{
			name: "no CNI network: fails before the handler", handler: fakeVM, net: netPod, cni: cniNone,
			wantCode: codes.FailedPrecondition,
		},
		{
			name: "CNI ADD fails after StartSandbox", handler: fakeVM, net: netPod, cni: cniAddFails,
			wantCode:  codes.Unknown,
			wantCalls: []string{"StartSandbox", "StopSandbox", "RemoveSandbox"},
			wantCNI:   []string{"ADD", "DEL", "DEL"}, // ADD, its own DEL, the rollback's
		},
		{
			name: "pinning the netns fails after StartSandbox", handler: fakeVM, net: netUserns,
			features: handlers.Features{UserNamespaces: true}, gonePID: true,
			wantCode:  codes.Unknown,
			wantCalls: []string{"StartSandbox", "StopSandbox", "RemoveSandbox"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEnv(t, fakeEnvOptions{busybox: tt.handler == fakeOCI, cni: tt.cni})
			e.h.features = tt.features
			if tt.gonePID {
				e.h.process = &store.Process{Pid: 1 << 30, BootID: proc.BootID()}
			}
			e.h.failWith("StartSandbox", tt.startErr)
			want := world{Intent: true, PodDir: true, NetNS: tt.net == netPod, PauseRootfs: tt.handler == fakeOCI}
			if n := len(tt.wantCNI); n > 0 && tt.wantCNI[n-1] == "DEL" && len(tt.wantCalls) > 1 {
				want.CNIRuns = n - 1 // the rollback's DEL comes after the handler's undo
			}
			var mu sync.Mutex
			var seen []string
			e.h.setOnCall(func(ctx context.Context, c fakeCall) {
				got := e.look(c.ID)
				if c.Method == "StartSandbox" {
					got.CNIRuns = want.CNIRuns // CNI runs beside StartSandbox
				}
				if got != want {
					mu.Lock()
					seen = append(seen, fmt.Sprintf("at %s: %+v, want %+v", c.Method, got, want))
					mu.Unlock()
				}
			})
			next := e.subscribe()

			_, err := e.client.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{
				Config: podConfig("web", tt.net), RuntimeHandler: tt.handler,
			})
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("code %v (%v), want %v", got, err, tt.wantCode)
			}
			var id string
			var methods []string
			for _, c := range e.h.journal() {
				method, cid, _ := strings.Cut(c, " ")
				methods = append(methods, method)
				if id != "" && cid != id {
					t.Errorf("call %q is not on sandbox %s", c, id)
				}
				id = cid
			}
			if !slices.Equal(methods, tt.wantCalls) {
				t.Errorf("handler calls %q, want %q", methods, tt.wantCalls)
			}
			mu.Lock()
			for _, s := range seen {
				t.Errorf("undone out of order: %s", s)
			}
			mu.Unlock()
			if left := e.leftovers(); len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}
			var cmds []string
			for _, l := range e.cniRuns() {
				cmds = append(cmds, strings.Fields(l)[0])
			}
			if !slices.Equal(cmds, tt.wantCNI) {
				t.Errorf("CNI runs %q, want %q", cmds, tt.wantCNI)
			}
			if tt.net == netPod && len(tt.wantCalls) > 0 {
				// The rollback's DEL ran in the pod's netns, in its pod
				// dir: before those were removed.
				runs := e.cniRuns()
				wantLast := fmt.Sprintf("DEL netns=%s pod_dir=yes", netns.PathIn(e.netnsDir, "crivm-"+id[:32]))
				if last := runs[len(runs)-1]; last != wantLast {
					t.Errorf("rollback's CNI run %q, want %q", last, wantLast)
				}
			}

			// The name is free again, and the failed run emitted nothing:
			// the next event is the retry's.
			e.h.failWith("StartSandbox", nil)
			e.h.process = newFakeHandler(t).process
			retry := e.runPod("web", tt.handler)
			if ev := next(); ev.GetContainerId() != retry || ev.GetContainerEventType() != runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT {
				t.Errorf("first event %v %s, want the retry's CONTAINER_CREATED_EVENT %s", ev.GetContainerEventType(), ev.GetContainerId(), retry)
			}
		})
	}
}

// TestCreateContainerRollback: a CreateContainer that fails, in the
// handler or before it, leaves no container record, no intent and no
// rootfs, and the container's name is free again.
func TestCreateContainerRollback(t *testing.T) {
	e := newFakeEnv(t, fakeEnvOptions{busybox: true})
	sb := e.runPod("web", fakeVM)
	tests := []struct {
		name      string
		image     string // "" testImage
		createErr error
		wantCode  codes.Code
		wantCalls []string
	}{
		{"handler fails: FailedPrecondition", "", errdefs.FailedPrecondition("the agent refused"), codes.FailedPrecondition, []string{"CreateContainer"}},
		{"handler fails: InvalidArgument", "", errdefs.InvalidArgument("bad spec"), codes.InvalidArgument, []string{"CreateContainer"}},
		{"handler fails: unclassified", "", errors.New("runc create: exit status 1"), codes.Unknown, []string{"CreateContainer"}},
		{"no such image: fails before the handler", "localhost/crivm-test/missing:latest", nil, codes.NotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.h.reset()
			e.h.failWith("CreateContainer", tt.createErr)
			var rootfsDuring bool
			e.h.setOnCall(func(ctx context.Context, c fakeCall) {
				if req, ok := c.Req.(*handlers.ContainerRequest); ok {
					_, err := e.images.Store().Container(c.ID)
					rootfsDuring = err == nil && pathExists(filepath.Join(req.Rootfs, "bin", "busybox"))
				}
			})
			cfg := ctrConfig("app")
			if tt.image != "" {
				cfg.Image = &runtimeapi.ImageSpec{Image: tt.image, UserSpecifiedImage: tt.image}
			}
			_, err := e.client.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: cfg})
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("code %v (%v), want %v", got, err, tt.wantCode)
			}
			var methods []string
			for _, c := range e.h.journal() {
				method, _, _ := strings.Cut(c, " ")
				methods = append(methods, method)
			}
			if !slices.Equal(methods, tt.wantCalls) {
				t.Errorf("handler calls %q, want %q", methods, tt.wantCalls)
			}
			if req, ok := e.h.lastReq("CreateContainer").(*handlers.ContainerRequest); ok {
				if !rootfsDuring {
					t.Error("the handler was called without the container's rootfs")
				}
				if e.storageHas(req.Container.ID) || pathExists(filepath.Join(req.Rootfs, "bin")) {
					t.Errorf("rootfs of %s (%s) left behind", req.Container.ID, req.Rootfs)
				}
			}
			var left []string
			for _, l := range e.leftovers() {
				if !strings.Contains(l, sb) { // the pod's own
					left = append(left, l)
				}
			}
			if len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}

			e.h.failWith("CreateContainer", nil)
			e.h.setOnCall(nil)
			id := e.createContainer(sb, "app", false)
			if _, err := e.client.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
