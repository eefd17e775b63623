package vm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/vmm"
)

func TestVsockCID(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	seen := map[uint32]bool{}
	for attempt := range 3 {
		cid := vsockCID(id, attempt)
		if cid < 3 {
			t.Errorf("attempt %d: CID %d is reserved", attempt, cid)
		}
		if cid != vsockCID(id, attempt) {
			t.Errorf("attempt %d: CID not stable", attempt)
		}
		if seen[cid] {
			t.Errorf("attempt %d: CID %d repeats an earlier attempt's", attempt, cid)
		}
		seen[cid] = true
	}
	if vsockCID(id, 0) == vsockCID(id[:63]+"0", 0) {
		t.Error("two sandboxes got the same first CID")
	}
}

// TestAgentDialer: a VM dir with a recorded CID is reached over vsock,
// any other over its virtio-serial socket.
func TestAgentDialer(t *testing.T) {
	dir := t.TempDir()
	if d, ok := agentDialer(dir).(*agentproxy.SerialDialer); !ok || d.Path != filepath.Join(dir, vmm.AgentSocketName) {
		t.Errorf("no CID recorded: %#v, want the serial socket", agentDialer(dir))
	}
	os.WriteFile(filepath.Join(dir, vsockCIDFile), []byte("4242"), 0o600)
	if d, ok := agentDialer(dir).(*agentproxy.VsockDialer); !ok || d.CID != 4242 {
		t.Errorf("CID 4242 recorded: %#v, want vsock to 4242", agentDialer(dir))
	}
}
