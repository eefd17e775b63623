package server

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
)

// crash is what fakeHandler panics with to end an RPC the way a daemon
// crash would: no step after it runs and nothing is undone.
type crash struct{}

// crashed runs f, which must end in a crash.
func crashed(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != (crash{}) {
			t.Fatalf("recovered %v, want a crash", r)
		}
	}()
	f()
	t.Fatal("no crash")
}

// TestSweepSandboxIntents: after a crash, the start-up sweep releases a
// sandbox whose RunPodSandbox died midway through the handler (StopSandbox
// then RemoveSandbox, the CNI attachment from the pod's netns, the netns,
// the pause rootfs, the pod dir) and drops its intent; an intent whose
// sandbox made it into the store is dropped and the sandbox left alone.
func TestSweepSandboxIntents(t *testing.T) {
	tests := []struct {
		name    string
		handler string
		net     podNet
	}{
		{"vm pod on the host network", fakeVM, netHost},
		{"oci pod with its own network", fakeOCI, netPod},
	}
	for _, tt := range tests {
		t.Run("crash in StartSandbox: "+tt.name, func(t *testing.T) {
			e := newFakeEnv(t, fakeEnvOptions{busybox: true, cni: cniOK})
			var id string
			e.h.setOnCall(func(ctx context.Context, c fakeCall) {
				if req, ok := c.Req.(*handlers.SandboxRequest); ok {
					id = c.ID
					// As a handler would, join the network first, so that
					// the crash leaves it set up rather than racing it.
					if err := req.WaitNetwork(ctx); err != nil {
						t.Errorf("waiting for the network: %v", err)
					}
					panic(crash{})
				}
			})
			crashed(t, func() {
				e.s.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: podConfig("web", tt.net), RuntimeHandler: tt.handler})
			})
			want := world{Intent: true, PodDir: true, NetNS: tt.net == netPod, PauseRootfs: tt.handler == fakeOCI}
			if tt.net == netPod {
				want.CNIRuns = 1 // ADD
			}
			if got := e.look(id); got != want {
				t.Fatalf("after the crash: %+v, want %+v", got, want)
			}

			e.restart()
			e.s.Sweep(e.ctx())
			if got, want := e.h.journal(), []string{"StopSandbox " + id, "RemoveSandbox " + id}; !slices.Equal(got, want) {
				t.Errorf("handler calls %q, want %q", got, want)
			}
			if left := e.leftovers(); len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}
			if tt.net == netPod {
				wantRuns := []string{
					fmt.Sprintf("ADD netns=%s pod_dir=yes", netns.PathIn(e.netnsDir, "crivm-"+id[:32])),
					fmt.Sprintf("DEL netns=%s pod_dir=yes", netns.PathIn(e.netnsDir, "crivm-"+id[:32])),
				}
				if got := e.cniRuns(); !slices.Equal(got, wantRuns) {
					t.Errorf("CNI runs %q, want %q", got, wantRuns)
				}
			}
			// The name is free: a new daemon has none reserved.
			e.runPod("web", tt.handler)
		})
	}

	t.Run("crash after recording the sandbox", func(t *testing.T) {
		e := newFakeEnv(t, fakeEnvOptions{busybox: true})
		var intent *store.Sandbox
		e.h.setOnCall(func(ctx context.Context, c fakeCall) {
			if c.Method == "StartSandbox" {
				var err error
				if intent, err = e.st.PendingSandboxes.Get(c.ID); err != nil {
					t.Errorf("no intent during StartSandbox: %v", err)
				}
			}
		})
		sb := e.runPod("web", fakeOCI)
		if intent == nil {
			t.Fatal("no intent seen")
		}
		// What a crash between "recording sandbox" and "dropping the
		// intent" leaves: both.
		if err := e.st.PendingSandboxes.Add(intent); err != nil {
			t.Fatal(err)
		}
		e.restart()
		e.s.Sweep(e.ctx())
		if got := e.h.journal(); len(got) > 0 {
			t.Errorf("handler calls %q, want none", got)
		}
		if _, err := e.st.PendingSandboxes.Get(sb); err == nil {
			t.Error("the intent is still there")
		}
		if got, want := e.look(sb), (world{PodDir: true, PauseRootfs: true}); got != want {
			t.Errorf("the sandbox's resources: %+v, want %+v", got, want)
		}
		if rec, err := e.st.Sandboxes.Get(sb); err != nil || rec.State != store.SandboxReady {
			t.Errorf("the sandbox record: %v, %v; want it Ready", rec, err)
		}
	})
}

// TestSweepContainerIntents: the sweep releases a container whose
// CreateContainer died in the handler (StopContainer, RemoveContainer, its
// rootfs) and drops its intent, and drops the intent of one that made it
// into the store; the pod is left alone either way.
func TestSweepContainerIntents(t *testing.T) {
	e := newFakeEnv(t, fakeEnvOptions{busybox: true})
	sb := e.runPod("web", fakeVM)
	podOnly := func(left []string) []string {
		return slices.DeleteFunc(left, func(l string) bool { return strings.Contains(l, sb) })
	}

	// A crash in the handler's CreateContainer.
	var id, rootfs string
	e.h.setOnCall(func(ctx context.Context, c fakeCall) {
		if req, ok := c.Req.(*handlers.ContainerRequest); ok {
			id, rootfs = c.ID, req.Rootfs
			panic(crash{})
		}
	})
	crashed(t, func() {
		e.s.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: ctrConfig("app")})
	})
	if _, err := e.st.PendingContainers.Get(id); err != nil || !e.storageHas(id) || !pathExists(filepath.Join(rootfs, "bin", "busybox")) {
		t.Fatalf("after the crash: intent %v, rootfs in storage %v, mounted at %s %v; want all",
			err, e.storageHas(id), rootfs, pathExists(filepath.Join(rootfs, "bin", "busybox")))
	}
	e.restart()
	e.s.Sweep(e.ctx())
	if got, want := e.h.journal(), []string{"StopContainer " + id, "RemoveContainer " + id}; !slices.Equal(got, want) {
		t.Errorf("handler calls %q, want %q", got, want)
	}
	if left := podOnly(e.leftovers()); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
	if got := e.look(sb); !got.PodDir {
		t.Error("the sweep removed the pod's dir")
	}

	// A crash between "recording container" and "dropping the container
	// intent".
	var intent *store.Container
	e.h.setOnCall(func(ctx context.Context, c fakeCall) {
		if c.Method == "CreateContainer" {
			var err error
			if intent, err = e.st.PendingContainers.Get(c.ID); err != nil {
				t.Errorf("no intent during CreateContainer: %v", err)
			}
		}
	})
	ctr := e.createContainer(sb, "app", false)
	if intent == nil {
		t.Fatal("no intent seen")
	}
	if err := e.st.PendingContainers.Add(intent); err != nil {
		t.Fatal(err)
	}
	e.restart()
	e.s.Sweep(e.ctx())
	if got := e.h.journal(); len(got) > 0 {
		t.Errorf("handler calls %q, want none", got)
	}
	if _, err := e.st.PendingContainers.Get(ctr); err == nil {
		t.Error("the intent is still there")
	}
	if _, err := e.st.Containers.Get(ctr); err != nil || !e.storageHas(ctr) {
		t.Errorf("the container: record %v, rootfs in storage %v; want both", err, e.storageHas(ctr))
	}
}
