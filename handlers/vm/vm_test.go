package vm

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/oci"
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
	writeVMRecord(dir, vmRecord{MemoryMiB: 256, VCPUs: 1})
	if _, ok := agentDialer(dir).(*agentproxy.SerialDialer); !ok {
		t.Errorf("no CID recorded: %#v, want the serial socket", agentDialer(dir))
	}
	writeVMRecord(dir, vmRecord{MemoryMiB: 256, VCPUs: 1, VsockCID: 4242})
	if d, ok := agentDialer(dir).(*agentproxy.VsockDialer); !ok || d.CID != 4242 {
		t.Errorf("CID 4242 recorded: %#v, want vsock to 4242", agentDialer(dir))
	}
}

func TestVMRecordAdmits(t *testing.T) {
	size := vmRecord{MemoryMiB: 256, VCPUs: 2}
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	tests := []struct {
		name    string
		res     *specs.LinuxResources
		wantErr string
	}{
		{"nothing", nil, ""},
		{"memory within", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(200 << 20)}}, ""},
		{"memory equal", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(256 << 20)}}, ""},
		{"memory beyond", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(512 << 20)}}, "exceeds the VM's 256 MiB"},
		{"quota within", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(200000), Period: u64(100000)}}, ""},
		{"quota beyond", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(300000), Period: u64(100000)}}, "exceeds the VM's 2 vCPUs"},
		{"cpuset within", &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0-1"}}, ""},
		{"cpuset beyond", &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "1,3"}}, "do not have"},
		{"cpuset bad", &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "x"}}, "cpuset"},
	}
	for _, tt := range tests {
		err := size.admits(tt.res)
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.wantErr)
		}
	}
	dir := t.TempDir()
	if err := writeVMRecord(dir, size); err != nil {
		t.Fatal(err)
	}
	if got, err := readVMRecord(dir); err != nil || got != size {
		t.Errorf("read back %+v, %v; want %+v", got, err, size)
	}
}

func TestBootMAC(t *testing.T) {
	a := bootMACFor("sandbox-a")
	if a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Errorf("boot MAC %s: want a locally administered unicast address", a)
	}
	if a.String() != bootMACFor("sandbox-a").String() {
		t.Error("boot MAC not stable")
	}
	if a.String() == bootMACFor("sandbox-b").String() {
		t.Error("two sandboxes got the same boot MAC")
	}
}

func TestCheckHostNamespaces(t *testing.T) {
	node := runtimeapi.NamespaceMode_NODE
	tests := []struct {
		name string
		ns   *runtimeapi.NamespaceOption
		want string // "" for allowed, else a word of the error
	}{
		{"pod namespaces", &runtimeapi.NamespaceOption{}, ""},
		{"host network", &runtimeapi.NamespaceOption{Network: node}, "network"},
		{"host PID", &runtimeapi.NamespaceOption{Pid: node}, "PID"},
		{"host IPC", &runtimeapi.NamespaceOption{Ipc: node}, "IPC"},
	}
	for _, tt := range tests {
		cfg := &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: tt.ns}}}
		err := checkHostNamespaces("vm", cfg)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v, want allowed", tt.name, err)
		case tt.want != "" && (!errdefs.IsClass(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want FailedPrecondition naming %s", tt.name, err, tt.want)
		}
	}
}

// TestSpecHost: specs for the guest grant privileged containers every
// capability (the agent holds them all, whatever the host daemon lacks),
// and an empty seccomp request follows seccomp_use_default_when_empty.
func TestSpecHost(t *testing.T) {
	sandbox := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "n", Uid: "u"},
		Linux:    &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}},
	}
	ctr := func(privileged bool) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "c"},
			Command:  []string{"/bin/true"},
			Linux:    &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{Privileged: privileged}},
		}
	}
	tests := []struct {
		name           string
		seccompDefault bool
		privileged     bool
		wantCaps       int
		wantSeccomp    bool
	}{
		{"privileged: every capability", false, true, len(oci.AllCapabilities()), false},
		{"empty seccomp: unconfined", false, false, len(oci.DefaultCapabilities()), false},
		{"empty seccomp with the default asked", true, false, len(oci.DefaultCapabilities()), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{seccompDefault: tt.seccompDefault}
			s, err := oci.ContainerSpec(oci.ContainerSpecInput{
				Host: h.specHost(context.Background()), ID: "c1", SandboxID: "sb", Sandbox: sandbox, Config: ctr(tt.privileged),
				NamespacePaths: agentproxy.GuestNamespacePaths(true),
			})
			if err != nil {
				t.Fatal(err)
			}
			if n := len(s.Process.Capabilities.Bounding); n != tt.wantCaps {
				t.Errorf("bounding set: %d capabilities, want %d", n, tt.wantCaps)
			}
			if got := s.Linux.Seccomp != nil; got != tt.wantSeccomp {
				t.Errorf("seccomp profile set: %v, want %v", got, tt.wantSeccomp)
			}
		})
	}
}

// TestPodShare: the guest mounts the pod's share, which holds the
// containers' rootfs, without nosuid, so setuid programs of images work in
// the guest; over 9p or virtio-fs.
func TestPodShare(t *testing.T) {
	for _, fs := range []struct{ shared, guest string }{{sharedFS9p, "9p"}, {sharedFSVirtio, "virtiofs"}} {
		m := podShare(fs.shared)
		if !m.AllowSuid || m.ReadOnly || m.FsType != fs.guest || m.Tag != agentproxy.SharedTag || m.MountPoint != agentproxy.GuestSharedDir {
			t.Errorf("share over %s: %+v, want suid allowed, writable, fs %s", fs.shared, m, fs.guest)
		}
	}
}

// Each stream's offset is its own record: a container that wrote to one
// stream only resumes that stream where it was, not from 0.
func TestReadOffsets(t *testing.T) {
	h := &Handler{dir: t.TempDir()}
	os.MkdirAll(filepath.Dir(h.exitPath("c")), 0o700)
	le := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	tests := []struct {
		name           string
		stdout, stderr []byte // nil: no record
		want           [2]uint64
	}{
		{"none", nil, nil, [2]uint64{}},
		{"stdout only", le(4096), nil, [2]uint64{4096, 0}},
		{"stderr only", nil, le(17), [2]uint64{0, 17}},
		{"both", le(1), le(2), [2]uint64{1, 2}},
		{"torn record", le(5)[:7], le(9), [2]uint64{0, 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, st := range outputStreams {
				os.Remove(h.offsetPath("c", st.name))
			}
			for i, b := range [][]byte{tt.stdout, tt.stderr} {
				if b != nil {
					if err := os.WriteFile(h.offsetPath("c", outputStreams[i].name), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			if got := h.readOffsets("c"); got != tt.want {
				t.Errorf("readOffsets = %v, want %v", got, tt.want)
			}
		})
	}
}
