package agent

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/internal/errdefs"
)

// TestResolveTargetPID: a PID namespace naming another container of the
// pod becomes its init's namespace; a missing, reserved or exited target
// and a malformed id are refused with their classes; other paths stay.
func TestResolveTargetPID(t *testing.T) {
	exited := make(chan struct{})
	close(exited)
	s := &Service{containers: map[string]*container{
		"app":      {id: "app", init: &process{pid: 42, exited: make(chan struct{})}},
		"gone":     {id: "gone", init: &process{pid: 43, exited: exited}},
		"creating": {id: "creating"},
	}}
	for _, tt := range []struct {
		name, path, want string
		wantErr          error
	}{
		{"running target", agentproxy.GuestContainerPIDNamespace("app"), "/proc/42/ns/pid", nil},
		{"exited target", agentproxy.GuestContainerPIDNamespace("gone"), "", errdefs.ErrFailedPrecondition},
		{"target being created", agentproxy.GuestContainerPIDNamespace("creating"), "", errdefs.ErrNotFound},
		{"unknown target", agentproxy.GuestContainerPIDNamespace("nope"), "", errdefs.ErrNotFound},
		{"malformed id", agentproxy.GuestContainerPIDNamespace("../x"), "", errdefs.ErrInvalidArgument},
		{"the pod's namespace", agentproxy.GuestPIDNamespace, agentproxy.GuestPIDNamespace, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace, Path: tt.path}, {Type: specs.MountNamespace}}}}
			err := s.resolveTargetPID(spec)
			if tt.wantErr != nil {
				if !errdefs.IsClass(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := spec.Linux.Namespaces[0].Path; got != tt.want {
				t.Errorf("PID namespace path %q, want %q", got, tt.want)
			}
			if spec.Linux.Namespaces[1].Path != "" {
				t.Errorf("the mount namespace got a path: %q", spec.Linux.Namespaces[1].Path)
			}
		})
	}
}
