package e2e

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// usernsBase is the host uid and gid the test pods' root maps to (the
// kubelet hands out multiples of 65536 from 65536 up).
const usernsBase = 7 * 65536

func usernsOptions(hostID, length uint32) *runtimeapi.UserNamespace {
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: hostID, Length: length}}
	return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}
}

// TestRuncUserNamespace: a pod with its own user namespace (hostUsers:
// false) runs under runc with the kubelet's mapping. Inside, root owns the
// rootfs and its mounts and can write them; on the host, what it wrote in
// the rootfs belongs to the mapped root, and what it wrote in a volume to
// the host's root (the volume is idmapped). The pod's network namespace
// belongs to its user namespace: CNI gave it an address, sysfs is mounted
// and a network sysctl applies. Staged mounts do not outlive the create.
func TestRuncUserNamespace(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()

	st, err := e.rs.Status(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range st.GetRuntimeHandlers() {
		if (h.GetName() == "" || h.GetName() == "runc") && !h.GetFeatures().GetUserNamespaces() {
			t.Fatalf("handler %q does not offer user namespaces: %v", h.GetName(), h.GetFeatures())
		}
		if h.GetName() == "vm" && h.GetFeatures().GetUserNamespaces() {
			t.Errorf("the vm handler offers user namespaces")
		}
	}

	vol := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "from-host"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := e.podConfig("userns")
	pod.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "80"}
	pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = usernsOptions(usernsBase, 65536)
	ctr := e.containerConfig("app", "sleep", "3600")
	ctr.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol}}
	ctr.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER, UsernsOptions: pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions}
	sbID, ctrID := e.runPod(t, pod, ctr)

	tests := []struct {
		name string
		cmd  []string
		want string
	}{
		{"uid map", []string{"sh", "-c", "cat /proc/self/uid_map | tr -s ' '"}, " 0 458752 65536\n"},
		{"root inside", []string{"id", "-u"}, "0\n"},
		{"rootfs owned by root", []string{"stat", "-c", "%u:%g", "/", "/bin/busybox"}, "0:0\n0:0\n"},
		{"rootfs writable", []string{"sh", "-c", "echo x > /newfile && stat -c %u /newfile"}, "0\n"},
		{"volume owned by root", []string{"stat", "-c", "%u:%g", "/vol/from-host"}, "0:0\n"},
		{"volume writable", []string{"sh", "-c", "echo y > /vol/from-ctr && cat /vol/from-host"}, "hi\n"},
		{"/etc/hosts owned by root", []string{"stat", "-c", "%u", "/etc/hosts"}, "0\n"},
		{"sysfs", []string{"sh", "-c", "grep -c ' /sys sysfs ' /proc/mounts"}, "1\n"},
		{"sysctl", []string{"cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"}, "80\n"},
		{"pod address", []string{"sh", "-c", "ip -o -4 addr show eth0 | grep -c inet"}, "1\n"},
	}
	for _, tt := range tests {
		if got := e.exec(t, ctrID, tt.cmd...); got != tt.want {
			t.Errorf("%s: %v printed %q, want %q", tt.name, tt.cmd, got, tt.want)
		}
	}
	// On the host: the volume file belongs to root, the container's
	// process to the mapped root.
	var fi syscall.Stat_t
	if err := syscall.Stat(filepath.Join(vol, "from-ctr"), &fi); err != nil || fi.Uid != 0 || fi.Gid != 0 {
		t.Errorf("volume file on the host: %v, owner %d:%d, want 0:0", err, fi.Uid, fi.Gid)
	}
	cs, err := e.rs.ContainerStatus(ctx, ctrID, true)
	if err != nil {
		t.Fatal(err)
	}
	if u := cs.GetStatus().GetUser().GetLinux(); u.GetUid() != 0 {
		t.Errorf("status user %v, want uid 0 (inside the user namespace)", u)
	}
	// Of what was staged, only the rootfs outlives the create (runc starts
	// execs in it).
	staged := filepath.Join(e.d.Runroot, "handlers", "runc", "userns")
	for _, m := range mountsUnder(t, staged) {
		if filepath.Base(m) != "rootfs" {
			t.Errorf("staged mount outlives the create: %s", m)
		}
	}

	// The sandbox's network namespace is pinned and is its user
	// namespace's.
	ps, err := e.rs.PodSandboxStatus(ctx, sbID, false)
	if err != nil || ps.GetStatus().GetNetwork().GetIp() == "" {
		t.Fatalf("pod status: %v %v", ps, err)
	}

	// A second container joins the same user namespace.
	c2 := e.startContainer(t, sbID, e.containerConfig("second", "sleep", "3600"), pod)
	if got := e.exec(t, c2, "sh", "-c", "cat /proc/self/uid_map | tr -s ' '"); got != " 0 458752 65536\n" {
		t.Errorf("second container's uid map %q", got)
	}
	if a, b := e.exec(t, ctrID, "readlink", "/proc/self/ns/user"), e.exec(t, c2, "readlink", "/proc/self/ns/user"); a != b {
		t.Errorf("containers in different user namespaces: %q and %q", a, b)
	}

	// A restarted daemon execs in the pod and removes it, staging and all.
	if err := e.d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	e.d.Start(ctx)
	e.rs = e.d.RuntimeService(ctx)
	if got := e.exec(t, ctrID, "cat", "/vol/from-host"); got != "hi\n" {
		t.Errorf("exec after a restart: %q", got)
	}
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(staged); len(left) > 0 {
		t.Errorf("staging entries left: %v", left)
	}
	if m := mountsUnder(t, staged); len(m) > 0 {
		t.Errorf("staged mounts left: %v", m)
	}
}

// TestRuncUserNamespaceRefused: user namespace options that cannot be
// honoured are refused before anything is created.
func TestRuncUserNamespaceRefused(t *testing.T) {
	e := newRuncEnv(t)
	ctx := context.Background()
	before := e.hostState(t)
	two := usernsOptions(65536, 65536)
	two.Uids = append(two.Uids, &runtimeapi.IDMapping{ContainerId: 0, HostId: 200000, Length: 65536})
	tests := []struct {
		name    string
		opts    *runtimeapi.NamespaceOption
		handler string
		want    codes.Code
	}{
		{"two mappings", &runtimeapi.NamespaceOption{UsernsOptions: two}, "", codes.InvalidArgument},
		{"container id 0 not mapped", &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{{ContainerId: 1, HostId: 65536, Length: 65536}}, Gids: []*runtimeapi.IDMapping{{ContainerId: 1, HostId: 65536, Length: 65536}}}}, "", codes.InvalidArgument},
		{"mode CONTAINER", &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}}, "", codes.InvalidArgument},
		{"mode TARGET", &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}}, "", codes.InvalidArgument},
		{"with host network", &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, UsernsOptions: usernsOptions(65536, 65536)}, "", codes.InvalidArgument},
		{"on the vm handler", &runtimeapi.NamespaceOption{UsernsOptions: usernsOptions(65536, 65536)}, "vm", codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := e.podConfig("refused")
			pod.Linux.SecurityContext.NamespaceOptions = tt.opts
			id, err := e.rs.RunPodSandbox(ctx, pod, tt.handler)
			if err == nil {
				e.rs.RemovePodSandbox(ctx, id)
				t.Fatalf("pod %v accepted", tt.opts)
			}
			if got := status.Code(err); got != tt.want {
				t.Errorf("code %v (%v), want %v", got, err, tt.want)
			}
		})
	}
	e.checkNothingCreated(t, before)
}
