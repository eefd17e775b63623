package bench

import (
	"testing"
	"time"
)

func TestStepBreakdown(t *testing.T) {
	log := `time=x level=DEBUG msg=step rpc=RunPodSandbox sandbox=ab pod=e2e/p handler=vm step="booting VM" took=80.5ms ok=true
time=x level=DEBUG msg=step rpc=RunPodSandbox sandbox=ab step="creating the tap" took=471.727µs ok=true
time=x level=DEBUG msg=step rpc=RunPodSandbox sandbox=ab step="broken" took=1ms ok=false
time=x level=DEBUG msg="guest created the container" rpc=CreateContainer sandbox=ab container=cd spec_bytes=100 rpc=172.5ms guest_phases="cgroup=6.7ms fork=400µs"
time=x level=DEBUG msg="rpc done" rpc=StartContainer container=cd duration=27.8ms
time=x level=DEBUG msg="rpc done" rpc=RunPodSandbox sandbox=ab duration=2.9s
`
	b := StepBreakdown(log)
	tests := []struct {
		rpc, step string
		want      time.Duration
	}{
		{"RunPodSandbox", "booting VM", 80500 * time.Microsecond},
		{"RunPodSandbox", "creating the tap", 471727 * time.Nanosecond},
		{"CreateContainer", "(guest CreateContainer round trip)", 172500 * time.Microsecond},
		{"StartContainer", "(rpc)", 27800 * time.Microsecond},
		{"CreateContainer", "(guest) cgroup", 6700 * time.Microsecond},
		{"CreateContainer", "(guest) fork", 400 * time.Microsecond},
		{"RunPodSandbox", "(rpc)", 2900 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := b[[2]string{tt.rpc, tt.step}]; len(got) != 1 || got[0] != tt.want {
			t.Errorf("%s %s = %v, want [%v]", tt.rpc, tt.step, got, tt.want)
		}
	}
	if got := b[[2]string{"RunPodSandbox", "broken"}]; got != nil {
		t.Errorf("a failed step counted: %v", got)
	}
}

func TestLogField(t *testing.T) {
	line := `time=2026-12-07T10:00:00Z level=INFO msg="pulled blob" digest=sha256:a duration=290ms`
	for _, tt := range []struct{ key, want string }{
		{"time", "2026-12-07T10:00:00Z"}, {"msg", "pulled blob"}, {"duration", "290ms"}, {"digest", "sha256:a"}, {"size", ""},
	} {
		if got := LogField(line, tt.key); got != tt.want {
			t.Errorf("LogField(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}
