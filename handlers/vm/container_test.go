package vm

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/store"
)

func TestGuestPhases(t *testing.T) {
	many := make([]*api.Phase, 40)
	for i := range many {
		many[i] = &api.Phase{Name: "p", Ms: 1}
	}
	tests := []struct {
		name   string
		phases []*api.Phase
		want   string
	}{
		{"none", nil, ""},
		{"rounded", []*api.Phase{{Name: "cgroup", Ms: 6.657}, {Name: "fork", Ms: 9.386}}, "cgroup=6.7ms fork=9.4ms"},
		{"sub-millisecond", []*api.Phase{{Name: "lookup", Ms: 0.42}}, "lookup=400µs"},
		{"a hostile name cannot forge fields", []*api.Phase{{Name: "x\nlevel=ERROR msg=\"forged\"", Ms: 1}}, "xlevelERRORmsgforged=1ms"},
		{"a long name is cut", []*api.Phase{{Name: strings.Repeat("a", 100), Ms: 2}}, strings.Repeat("a", maxGuestPhaseName) + "=2ms"},
		{"at most maxGuestPhases", many, strings.TrimSpace(strings.Repeat("p=1ms ", maxGuestPhases))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := guestPhases(tt.phases); got != tt.want {
				t.Errorf("guestPhases = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestExitState: the agent's exit report becomes the container's state;
// an exec that failed after StartContainer returned is a StartError with
// the guest's reason, cut to maxExitMessage bytes of valid UTF-8.
func TestExitState(t *testing.T) {
	long := strings.Repeat("é", maxExitMessage)
	tests := []struct {
		name        string
		code        int32
		startError  string
		wantReason  string
		wantMessage string
	}{
		{"completed", 0, "", "Completed", ""},
		{"failed", 3, "", "Error", ""},
		{"exec failed", 128, "exec /bin/notelf: exec format error", startErrorReason, "exec /bin/notelf: exec format error"},
		{"a long reason is cut", 128, long, startErrorReason, long[:maxExitMessage]},
		{"a cut never splits a character", 128, "a" + long, startErrorReason, "a" + long[:maxExitMessage-2]},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakePods(t, 5*time.Second)
			exits := make(chan string, 1)
			if err := p.h.WatchExits(t.Context(), func(id string) { exits <- id }); err != nil {
				t.Fatal(err)
			}
			sb := sandboxID(fmt.Sprint("exit", i))
			f := p.startSandbox(sb)
			c := p.createContainer(f, sb, "ctr")
			f.endOutput(c.ID)
			f.exitStart(c.ID, tt.code, tt.startError)
			select {
			case <-exits:
			case <-time.After(10 * time.Second):
				t.Fatal("no exit reported")
			}
			st, err := p.h.ContainerState(t.Context(), c)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != store.ContainerExited || st.ExitCode != tt.code || st.Reason != tt.wantReason || st.Message != tt.wantMessage {
				t.Errorf("state %s, exit %d, reason %q, message %q; want exited, %d, %q, %q", st.State, st.ExitCode, st.Reason, st.Message, tt.code, tt.wantReason, tt.wantMessage)
			}
		})
	}
}
