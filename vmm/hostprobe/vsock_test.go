package hostprobe

import (
	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/vmm"
	"strings"
	"testing"
)

func TestChooseTransport(t *testing.T) {
	tests := []struct {
		requested string
		vsockOK   bool
		want      string
		wantErr   string
	}{
		{requested: "auto", vsockOK: true, want: agentproxy.TransportVsock},
		{requested: "auto", vsockOK: false, want: agentproxy.TransportSerial},
		{requested: "", vsockOK: false, want: agentproxy.TransportSerial},
		{requested: "vsock", vsockOK: true, want: agentproxy.TransportVsock},
		{requested: "vsock", vsockOK: false, wantErr: "/dev/vhost-vsock"},
		{requested: "serial", vsockOK: true, want: agentproxy.TransportSerial},
		{requested: "serial", vsockOK: false, want: agentproxy.TransportSerial},
		{requested: "tcp", vsockOK: true, wantErr: `unknown agent_transport "tcp"`},
	}
	for _, tt := range tests {
		why := "/dev/vhost-vsock missing"
		if tt.vsockOK {
			why = "/dev/vhost-vsock present"
		}
		got, reason, err := chooseTransport(tt.requested, tt.vsockOK, why)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s/%v: err = %v, want %q", tt.requested, tt.vsockOK, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s/%v: %v", tt.requested, tt.vsockOK, err)
			continue
		}
		if got != tt.want || reason == "" {
			t.Errorf("%s/%v: got %q (%q), want %q with a reason", tt.requested, tt.vsockOK, got, reason, tt.want)
		}
	}
}

func TestVhostVsockAvailableAgrees(t *testing.T) {
	ok, why := VhostVsockAvailable()
	got, _, err := ChooseTransport("auto")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]string{true: agentproxy.TransportVsock, false: agentproxy.TransportSerial}[ok]; got != want {
		t.Errorf("vhost-vsock %v (%s) but auto chose %s", ok, why, got)
	}
	if !strings.Contains(why, vmm.VhostVsockDevice) {
		t.Errorf("reason %q does not name %s", why, vmm.VhostVsockDevice)
	}
}
