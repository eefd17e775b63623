package runc

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/mountfs/mountfstest"
	"github.com/crivm/crivm/internal/podns"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/store"
)

func podWith(opts *runtimeapi.NamespaceOption) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p1", Namespace: "ns", Uid: "u1"},
		Hostname: "p1-host",
		Linux:    &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: opts}},
	}
}

// TestNeedsInfra: with drop_infra_ctr a pod keeps its infra container only
// when its containers share a PID namespace or it has its own user
// namespace; without it, always.
func TestNeedsInfra(t *testing.T) {
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 65536, Length: 65536}}
	userns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}
	tests := []struct {
		name string
		opts *runtimeapi.NamespaceOption
		drop bool
		want bool
	}{
		{"pid CONTAINER (kubelet default)", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}, true, false},
		{"host pid", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE}, true, false},
		{"host network, ipc and pid", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE, Network: runtimeapi.NamespaceMode_NODE}, true, false},
		{"pid POD (shareProcessNamespace)", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}, true, true},
		{"no options: pid POD", nil, true, true},
		{"pid TARGET", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET}, true, true},
		{"own user namespace", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER, UsernsOptions: userns}, true, true},
		{"drop_infra_ctr off", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{dropInfra: tt.drop}
			if got := h.needsInfra(podWith(tt.opts)); got != tt.want {
				t.Errorf("needsInfra = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestPodPins: the IPC namespace is pinned unless the pod uses the host's
// or one per container, the UTS namespace (with the pod's hostname) unless
// it uses the host's network.
func TestPodPins(t *testing.T) {
	const dir = "/run/crivm/pods/p1"
	tests := []struct {
		name string
		opts *runtimeapi.NamespaceOption
		want podns.IPCUTS
	}{
		{"own network and ipc", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			podns.IPCUTS{IPC: dir + "/ipc.ns", UTS: dir + "/uts.ns", Hostname: "p1-host"}},
		{"host ipc", &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE},
			podns.IPCUTS{UTS: dir + "/uts.ns", Hostname: "p1-host"}},
		{"ipc per container", &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_CONTAINER},
			podns.IPCUTS{UTS: dir + "/uts.ns", Hostname: "p1-host"}},
		{"host network", &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			podns.IPCUTS{IPC: dir + "/ipc.ns"}},
		{"host network and ipc", &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE},
			podns.IPCUTS{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := podPins(dir, podWith(tt.opts)); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// testHandler is a Handler that generates specs without a runtime: user
// namespaces are off.
func testHandler(drop bool) *Handler {
	h := &Handler{dropInfra: drop}
	h.userns.once.Do(func() { h.userns.reason = "not probed in tests" })
	return h
}

func containerRequest(t *testing.T, pod *runtimeapi.PodSandboxConfig, ctrOpts *runtimeapi.NamespaceOption) *handlers.ContainerRequest {
	return &handlers.ContainerRequest{
		Container:     &store.Container{ID: "c1"},
		SandboxConfig: pod,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Command:  []string{"/bin/true"},
			Linux:    &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ctrOpts}},
		},
		Rootfs: t.TempDir(),
	}
}

// joined are the namespaces of s with a path, by type.
func joined(s *specs.Spec) map[specs.LinuxNamespaceType]string {
	out := map[specs.LinuxNamespaceType]string{}
	for _, n := range s.Linux.Namespaces {
		if n.Path != "" {
			out[n.Type] = n.Path
		}
	}
	return out
}

// TestContainerSpecPinned: a container of a pod without an infra container
// joins the pod's netns and its IPC and UTS pins by path, and creates its
// own PID namespace; a container of a pod with one joins the infra
// process's namespaces. A pod whose pins are gone, or that should have an
// infra process and has none, is not running; a container that asks for
// the pod's PID namespace in a pod that has none is refused.
func TestContainerSpecPinned(t *testing.T) {
	ctx := context.Background()
	dir := mountfstest.PrivateDir(t)
	ctrPid := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
	pod := podWith(ctrPid)
	pins := podPins(dir, pod)
	if err := podns.PinIPCUTS(pins); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sb := &store.Sandbox{Extra: map[string]string{podns.ExtraIPCPin: pins.IPC, podns.ExtraUTSPin: pins.UTS}}
		if err := releasePins(sb); err != nil {
			t.Error(err)
		}
	}()
	// A netns stand-in: any namespace pin passes the check.
	netnsPin := filepath.Join(dir, "net.ns")
	if err := podns.PinIPCUTS(podns.IPCUTS{IPC: netnsPin}); err != nil {
		t.Fatal(err)
	}
	defer podns.Unpin(netnsPin)
	pinned := &store.Sandbox{ID: "sb1", NetNSPath: netnsPin, Extra: map[string]string{
		extraInfra: infraNone, podns.ExtraIPCPin: pins.IPC, podns.ExtraUTSPin: pins.UTS}}

	self := &store.Process{Pid: os.Getpid(), BootID: proc.BootID()}
	self.StartTime, _ = proc.StartTime(os.Getpid())
	infra := &store.Sandbox{ID: "sb2", NetNSPath: "/run/netns/x", Process: self, Extra: map[string]string{extraInfra: infraPause}}
	self0 := "/proc/" + strconv.Itoa(os.Getpid()) + "/ns/"

	h := testHandler(true)
	tests := []struct {
		name    string
		sb      *store.Sandbox
		ctrOpts *runtimeapi.NamespaceOption
		want    map[specs.LinuxNamespaceType]string
		wantErr error
	}{
		{name: "no infra: pins joined", sb: pinned, ctrOpts: ctrPid, want: map[specs.LinuxNamespaceType]string{
			specs.NetworkNamespace: netnsPin, specs.IPCNamespace: pins.IPC, specs.UTSNamespace: pins.UTS}},
		{name: "no infra: container options unset follow the pod", sb: pinned, want: map[specs.LinuxNamespaceType]string{
			specs.NetworkNamespace: netnsPin, specs.IPCNamespace: pins.IPC, specs.UTSNamespace: pins.UTS}},
		{name: "no infra: the pod's PID namespace", sb: pinned, ctrOpts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
			wantErr: errdefs.ErrInvalidArgument},
		{name: "no infra: a pin is gone", sb: &store.Sandbox{ID: "sb3", NetNSPath: netnsPin, Extra: map[string]string{
			extraInfra: infraNone, podns.ExtraIPCPin: filepath.Join(dir, "gone.ns"), podns.ExtraUTSPin: pins.UTS}},
			ctrOpts: ctrPid, wantErr: errdefs.ErrFailedPrecondition},
		{name: "infra: its process's namespaces", sb: infra, ctrOpts: ctrPid, want: map[specs.LinuxNamespaceType]string{
			specs.NetworkNamespace: self0 + "net", specs.IPCNamespace: self0 + "ipc", specs.UTSNamespace: self0 + "uts"}},
		{name: "infra recorded without a process", sb: &store.Sandbox{ID: "sb4", Extra: map[string]string{}},
			ctrOpts: ctrPid, wantErr: errdefs.ErrFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := h.containerSpec(ctx, tt.sb, containerRequest(t, pod, tt.ctrOpts))
			if tt.wantErr != nil {
				if !errdefs.IsClass(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := joined(s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("joined namespaces: got %v, want %v", got, tt.want)
			}
			if s.Hostname != "" {
				t.Errorf("hostname %q: a container joins its pod's UTS namespace and sets none", s.Hostname)
			}
			var newPid bool
			for _, n := range s.Linux.Namespaces {
				newPid = newPid || n.Type == specs.PIDNamespace && n.Path == ""
			}
			if !newPid {
				t.Errorf("namespaces %v: want a new PID namespace", s.Linux.Namespaces)
			}
		})
	}
}

// TestSandboxPinnedLifecycle: StartSandbox of a pod that needs no infra
// container pins its IPC and UTS namespaces in the pod's dir, records them
// and says so, and runs nothing (the handler has no runtime binary);
// StopSandbox unpins them and RemoveSandbox finds nothing more to do, both
// idempotent.
func TestSandboxPinnedLifecycle(t *testing.T) {
	ctx := context.Background()
	dir := mountfstest.PrivateDir(t)
	h := testHandler(true)
	sb := &store.Sandbox{ID: "sb1", Extra: map[string]string{}}
	started, err := h.StartSandbox(ctx, &handlers.SandboxRequest{
		Sandbox: sb, Config: podWith(&runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}),
		Dir: dir, NetNSPath: "/run/netns/unused", PauseRootfs: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{extraInfra: infraNone,
		podns.ExtraIPCPin: filepath.Join(dir, ipcPinName), podns.ExtraUTSPin: filepath.Join(dir, utsPinName)}
	if started.Process != nil || !reflect.DeepEqual(started.Extra, want) {
		t.Fatalf("started: process %v extra %v, want no process and %v", started.Process, started.Extra, want)
	}
	for _, p := range podns.RecordedPins(started.Extra) {
		if !podns.Exists(p) {
			t.Errorf("%s holds no namespace", p)
		}
	}
	sb.Extra = started.Extra
	for i := range 2 {
		if err := h.StopSandbox(ctx, sb); err != nil {
			t.Fatalf("stop %d: %v", i, err)
		}
		if err := h.RemoveSandbox(ctx, sb); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("pod dir after stop and remove: %v %v, want empty", ents, err)
	}
}
