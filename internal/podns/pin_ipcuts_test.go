package podns

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/mountfs"
	"github.com/crivm/crivm/internal/mountfs/mountfstest"
	"github.com/crivm/crivm/test/testutil"
)

// nsIno is the inode of the namespace at path (a pin or /proc/PID/ns/X).
func nsIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestPinIPCUTS: the pins hold new IPC and UTS namespaces (not the
// host's), the UTS one with the pod's hostname, and a process entering
// them by path sees both; Unpin removes them and may be called again; an
// empty path pins nothing of that kind.
func TestPinIPCUTS(t *testing.T) {
	testutil.RequiresBinary(t, "nsenter")
	dir := mountfstest.PrivateDir(t)
	p := IPCUTS{IPC: filepath.Join(dir, "ipc.ns"), UTS: filepath.Join(dir, "uts.ns"), Hostname: "pinned-pod"}
	if err := PinIPCUTS(p); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ pin, host string }{{p.IPC, "/proc/self/ns/ipc"}, {p.UTS, "/proc/self/ns/uts"}} {
		if !Exists(c.pin) {
			t.Fatalf("%s holds no namespace", c.pin)
		}
		if nsIno(t, c.pin) == nsIno(t, c.host) {
			t.Errorf("%s is the host's namespace", c.pin)
		}
	}
	out, err := exec.Command("nsenter", "--ipc="+p.IPC, "--uts="+p.UTS, "sh", "-c",
		"hostname; stat -L -c %i /proc/self/ns/ipc /proc/self/ns/uts").CombinedOutput()
	if err != nil {
		t.Fatalf("entering the pins: %v: %s", err, out)
	}
	want := strings.Join([]string{"pinned-pod", strconv.FormatUint(nsIno(t, p.IPC), 10), strconv.FormatUint(nsIno(t, p.UTS), 10)}, "\n")
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("inside the pins: got %q, want %q", got, want)
	}
	if h, _ := os.Hostname(); h == "pinned-pod" {
		t.Error("the host's hostname changed")
	}
	for range 2 {
		for _, pin := range []string{p.IPC, p.UTS} {
			if err := Unpin(pin); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(pin); !os.IsNotExist(err) {
				t.Errorf("%s after Unpin: %v, want it gone", pin, err)
			}
		}
	}

	only := IPCUTS{UTS: filepath.Join(dir, "uts-only.ns"), Hostname: "h"}
	if err := PinIPCUTS(only); err != nil {
		t.Fatal(err)
	}
	defer Unpin(only.UTS)
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("pinning UTS alone made %d files, want 1", len(ents))
	}
}

// TestPinIPCUTSFailure: when a pin cannot be made nothing is left: the
// IPC pin made before a UTS pin file that already exists is removed.
func TestPinIPCUTSFailure(t *testing.T) {
	dir := mountfstest.PrivateDir(t)
	taken := filepath.Join(dir, "uts.ns")
	if err := os.WriteFile(taken, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	p := IPCUTS{IPC: filepath.Join(dir, "ipc.ns"), UTS: taken, Hostname: "x"}
	if err := PinIPCUTS(p); err == nil {
		t.Fatal("PinIPCUTS over an existing file succeeded")
	}
	if _, err := os.Lstat(p.IPC); !os.IsNotExist(err) {
		t.Errorf("the IPC pin is left: %v", err)
	}
	// dir itself is its private self-bind.
	if m, err := mountfs.MountsBelow(dir); err != nil || len(m) != 1 {
		t.Errorf("mounts at or below %s: %v %v, want only its own", dir, m, err)
	}
}

func TestRecordedPins(t *testing.T) {
	tests := []struct {
		extra map[string]string
		want  []string
	}{
		{nil, nil},
		{map[string]string{"pod_dir": "/p"}, nil},
		{map[string]string{ExtraUTSPin: "/p/uts.ns", ExtraIPCPin: "/p/ipc.ns", "pod_dir": "/p"}, []string{"/p/ipc.ns", "/p/uts.ns"}},
		{map[string]string{ExtraUTSPin: "/p/uts.ns", ExtraIPCPin: ""}, []string{"/p/uts.ns"}},
	}
	for _, tt := range tests {
		if got := RecordedPins(tt.extra); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("RecordedPins(%v) = %q, want %q", tt.extra, got, tt.want)
		}
	}
}
