package agent

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestExecProcessEnv: an exec runs with the container's environment plus
// the request's, and with a terminal TERM is xterm (replacing the
// container's TERM), as containerd sets it.
func TestExecProcessEnv(t *testing.T) {
	tests := []struct {
		name     string
		ctrEnv   []string
		reqEnv   []string
		tty      bool
		wantEnv  []string
		wantArgs []string
	}{
		{"tty adds TERM", []string{"PATH=/bin"}, nil, true, []string{"PATH=/bin", "TERM=xterm"}, []string{"sh"}},
		{"tty replaces TERM", []string{"TERM=dumb", "PATH=/bin"}, nil, true, []string{"PATH=/bin", "TERM=xterm"}, []string{"sh"}},
		{"request env after", []string{"PATH=/bin"}, []string{"A=1"}, true, []string{"PATH=/bin", "TERM=xterm", "A=1"}, []string{"sh"}},
		{"no tty keeps the env", []string{"PATH=/bin", "TERM=dumb"}, nil, false, []string{"PATH=/bin", "TERM=dumb"}, []string{"sh"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &container{id: "c", spec: &specs.Spec{Process: &specs.Process{Args: []string{"init"}, Env: tt.ctrEnv, Cwd: "/"}}}
			p, err := execProcess(c, nil, []string{"sh"}, tt.reqEnv, "", tt.tty)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.Env, tt.wantEnv) || !slices.Equal(p.Args, tt.wantArgs) || p.Terminal != tt.tty {
				t.Errorf("process: env %q args %q terminal %v, want env %q", p.Env, p.Args, p.Terminal, tt.wantEnv)
			}
			if !slices.Equal(c.spec.Process.Env, tt.ctrEnv) {
				t.Errorf("the container's env changed: %q", c.spec.Process.Env)
			}
		})
	}
}
