package oci

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

const (
	pod  = runtimeapi.NamespaceMode_POD
	ctr  = runtimeapi.NamespaceMode_CONTAINER
	node = runtimeapi.NamespaceMode_NODE
	tgt  = runtimeapi.NamespaceMode_TARGET
)

// errAny matches any error.
var errAny = errors.New("any error")

func ns(t specs.LinuxNamespaceType, p string) specs.LinuxNamespace {
	return specs.LinuxNamespace{Type: t, Path: p}
}

func TestSandboxNamespaces(t *testing.T) {
	tests := []struct {
		name  string
		opts  *runtimeapi.NamespaceOption
		netns string
		cg    CgroupFeatures
		want  []specs.LinuxNamespace
	}{
		{name: "pod", opts: &runtimeapi.NamespaceOption{}, netns: "/run/netns/p1", want: []specs.LinuxNamespace{
			ns("pid", ""), ns("network", "/run/netns/p1"), ns("ipc", ""), ns("uts", ""), ns("mount", "")}},
		{name: "nil options, no netns path", want: []specs.LinuxNamespace{
			ns("pid", ""), ns("network", ""), ns("ipc", ""), ns("uts", ""), ns("mount", "")}},
		{name: "host network drops net and uts", opts: &runtimeapi.NamespaceOption{Network: node}, netns: "/ignored", want: []specs.LinuxNamespace{
			ns("pid", ""), ns("ipc", ""), ns("mount", "")}},
		{name: "host pid and ipc", opts: &runtimeapi.NamespaceOption{Pid: node, Ipc: node}, netns: "/run/netns/p1", want: []specs.LinuxNamespace{
			ns("network", "/run/netns/p1"), ns("uts", ""), ns("mount", "")}},
		{name: "cgroup v2", opts: &runtimeapi.NamespaceOption{}, netns: "/n", cg: CgroupFeatures{V2: true}, want: []specs.LinuxNamespace{
			ns("pid", ""), ns("network", "/n"), ns("ipc", ""), ns("uts", ""), ns("mount", ""), ns("cgroup", "")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sandboxNamespaces(tt.opts, tt.netns, tt.cg, nil)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, %v\nwant %v", got, err, tt.want)
			}
		})
	}
	// With a user namespace the sandbox creates the network namespace the
	// user namespace owns.
	u := &UserNamespace{UIDs: []specs.LinuxIDMapping{{HostID: 65536, Size: 65536}}, GIDs: []specs.LinuxIDMapping{{HostID: 65536, Size: 65536}}}
	got, err := sandboxNamespaces(&runtimeapi.NamespaceOption{}, "", CgroupFeatures{}, u)
	if want := []specs.LinuxNamespace{ns("pid", ""), ns("network", ""), ns("ipc", ""), ns("uts", ""), ns("mount", ""), ns("user", "")}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("user namespace: got %v, %v\nwant %v", got, err, want)
	}
	if _, err := sandboxNamespaces(&runtimeapi.NamespaceOption{}, "/run/netns/p1", CgroupFeatures{}, u); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("user namespace and a netns path: err = %v, want InvalidArgument", err)
	}
}

// mapping is one CRI id mapping.
func mapping(ctrID, hostID, length uint32) []*runtimeapi.IDMapping {
	return []*runtimeapi.IDMapping{{ContainerId: ctrID, HostId: hostID, Length: length}}
}

func TestPodUserNamespace(t *testing.T) {
	kubelet := mapping(0, 65536, 65536)
	two := append(mapping(0, 1000, 100000), mapping(0, 2000, 100000)...)
	tests := []struct {
		name    string
		opts    *runtimeapi.NamespaceOption
		want    *UserNamespace
		wantErr error
	}{
		{name: "no options: the host's", opts: nil},
		{name: "NODE", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: node}}},
		{name: "POD, as the kubelet asks", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: kubelet, Gids: mapping(0, 131072, 65536)}},
			want: &UserNamespace{UIDs: []specs.LinuxIDMapping{{HostID: 65536, Size: 65536}}, GIDs: []specs.LinuxIDMapping{{HostID: 131072, Size: 65536}}}},
		{name: "CONTAINER", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: ctr}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "TARGET", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: tgt}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "two mappings", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: two, Gids: two}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "no gid mapping", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: kubelet}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "container id 0 not mapped", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: mapping(1, 1000, 100000), Gids: mapping(1, 1000, 100000)}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "empty mapping", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: mapping(0, 1000, 0), Gids: kubelet}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "root to root", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: mapping(0, 0, 65536), Gids: kubelet}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "past the last id", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: kubelet, Gids: mapping(0, 4294901760, 65536)}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "with host network", opts: &runtimeapi.NamespaceOption{Network: node, UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: kubelet, Gids: kubelet}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "with host PID", opts: &runtimeapi.NamespaceOption{Pid: node, UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: kubelet, Gids: kubelet}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "with host IPC", opts: &runtimeapi.NamespaceOption{Ipc: node, UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: kubelet, Gids: kubelet}}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PodUserNamespace(tt.opts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	// A runtime without user namespaces refuses POD, not NODE.
	if _, err := podUserns(&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: kubelet, Gids: kubelet}}, false); !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Errorf("POD without support: err = %v, want Unimplemented", err)
	}
	if u, err := podUserns(&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: node}}, false); u != nil || err != nil {
		t.Errorf("NODE without support: %v, %v", u, err)
	}
}

func TestContainerNamespaces(t *testing.T) {
	const pid = 4242
	podUserns := &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: mapping(0, 65536, 65536), Gids: mapping(0, 65536, 65536)}}
	userns := &UserNamespace{UIDs: []specs.LinuxIDMapping{{HostID: 65536, Size: 65536}}, GIDs: []specs.LinuxIDMapping{{HostID: 65536, Size: 65536}}}
	tests := []struct {
		name      string
		pod, ctr  *runtimeapi.NamespaceOption
		sbPid     int
		overrides map[specs.LinuxNamespaceType]string
		cg        CgroupFeatures
		userns    *UserNamespace
		want      []specs.LinuxNamespace
		wantErr   error
	}{
		{name: "pid POD (shared process namespace)", pod: &runtimeapi.NamespaceOption{}, ctr: &runtimeapi.NamespaceOption{Pid: pod}, sbPid: pid,
			want: []specs.LinuxNamespace{ns("pid", "/proc/4242/ns/pid"), ns("network", "/proc/4242/ns/net"), ns("ipc", "/proc/4242/ns/ipc"), ns("uts", "/proc/4242/ns/uts"), ns("mount", "")}},
		{name: "pid CONTAINER (kubelet default)", pod: &runtimeapi.NamespaceOption{}, ctr: &runtimeapi.NamespaceOption{Pid: ctr}, sbPid: pid,
			want: []specs.LinuxNamespace{ns("pid", ""), ns("network", "/proc/4242/ns/net"), ns("ipc", "/proc/4242/ns/ipc"), ns("uts", "/proc/4242/ns/uts"), ns("mount", "")}},
		{name: "pid NODE", pod: &runtimeapi.NamespaceOption{}, ctr: &runtimeapi.NamespaceOption{Pid: node}, sbPid: pid,
			want: []specs.LinuxNamespace{ns("network", "/proc/4242/ns/net"), ns("ipc", "/proc/4242/ns/ipc"), ns("uts", "/proc/4242/ns/uts"), ns("mount", "")}},
		{name: "pid TARGET", pod: &runtimeapi.NamespaceOption{}, ctr: &runtimeapi.NamespaceOption{Pid: tgt, TargetId: "c1"}, sbPid: pid,
			overrides: map[specs.LinuxNamespaceType]string{"pid": "/proc/777/ns/pid"},
			want:      []specs.LinuxNamespace{ns("pid", "/proc/777/ns/pid"), ns("network", "/proc/4242/ns/net"), ns("ipc", "/proc/4242/ns/ipc"), ns("uts", "/proc/4242/ns/uts"), ns("mount", "")}},
		{name: "pid TARGET without a path", pod: &runtimeapi.NamespaceOption{}, ctr: &runtimeapi.NamespaceOption{Pid: tgt, TargetId: "c1"}, sbPid: pid, wantErr: errdefs.ErrInvalidArgument},
		{name: "host network and ipc", pod: &runtimeapi.NamespaceOption{Network: node, Ipc: node}, ctr: &runtimeapi.NamespaceOption{Network: node, Ipc: node, Pid: ctr}, sbPid: pid,
			want: []specs.LinuxNamespace{ns("pid", ""), ns("mount", "")}},
		{name: "IPC CONTAINER", pod: &runtimeapi.NamespaceOption{Ipc: ctr}, ctr: &runtimeapi.NamespaceOption{Pid: ctr}, sbPid: pid,
			want: []specs.LinuxNamespace{ns("pid", ""), ns("network", "/proc/4242/ns/net"), ns("ipc", ""), ns("uts", "/proc/4242/ns/uts"), ns("mount", "")}},
		{name: "nil container options follow the pod", pod: &runtimeapi.NamespaceOption{Pid: ctr}, sbPid: pid,
			want: []specs.LinuxNamespace{ns("pid", ""), ns("network", "/proc/4242/ns/net"), ns("ipc", "/proc/4242/ns/ipc"), ns("uts", "/proc/4242/ns/uts"), ns("mount", "")}},
		{name: "vm: paths from overrides, cgroup v2", pod: &runtimeapi.NamespaceOption{}, ctr: &runtimeapi.NamespaceOption{Pid: pod}, cg: CgroupFeatures{V2: true},
			overrides: map[specs.LinuxNamespaceType]string{"pid": "/g/pid", "network": "/g/net", "ipc": "/g/ipc", "uts": "/g/uts"},
			want:      []specs.LinuxNamespace{ns("pid", "/g/pid"), ns("network", "/g/net"), ns("ipc", "/g/ipc"), ns("uts", "/g/uts"), ns("mount", ""), ns("cgroup", "")}},
		{name: "no sandbox pid and no paths", pod: &runtimeapi.NamespaceOption{}, ctr: &runtimeapi.NamespaceOption{Pid: ctr}, wantErr: errAny},
		// A runc pod without an infra container: no sandbox pid, its
		// network, IPC and UTS namespaces joined by their pins.
		{name: "no infra: pinned paths", pod: &runtimeapi.NamespaceOption{Pid: ctr}, ctr: &runtimeapi.NamespaceOption{Pid: ctr},
			overrides: map[specs.LinuxNamespaceType]string{"network": "/run/netns/p1", "ipc": "/pods/p1/ipc.ns", "uts": "/pods/p1/uts.ns"},
			want:      []specs.LinuxNamespace{ns("pid", ""), ns("network", "/run/netns/p1"), ns("ipc", "/pods/p1/ipc.ns"), ns("uts", "/pods/p1/uts.ns"), ns("mount", "")}},
		{name: "no infra: host IPC has no pin", pod: &runtimeapi.NamespaceOption{Pid: ctr, Ipc: node}, ctr: &runtimeapi.NamespaceOption{Pid: ctr, Ipc: node},
			overrides: map[specs.LinuxNamespaceType]string{"network": "/run/netns/p1", "uts": "/pods/p1/uts.ns"},
			want:      []specs.LinuxNamespace{ns("pid", ""), ns("network", "/run/netns/p1"), ns("uts", "/pods/p1/uts.ns"), ns("mount", "")}},
		{name: "no infra: host network has no UTS pin", pod: &runtimeapi.NamespaceOption{Pid: node, Network: node}, ctr: &runtimeapi.NamespaceOption{Pid: node, Network: node},
			overrides: map[specs.LinuxNamespaceType]string{"ipc": "/pods/p1/ipc.ns"},
			want:      []specs.LinuxNamespace{ns("ipc", "/pods/p1/ipc.ns"), ns("mount", "")}},
		{name: "no infra: an IPC namespace without its pin", pod: &runtimeapi.NamespaceOption{Pid: ctr}, ctr: &runtimeapi.NamespaceOption{Pid: ctr},
			overrides: map[specs.LinuxNamespaceType]string{"network": "/run/netns/p1", "uts": "/pods/p1/uts.ns"}, wantErr: errAny},
		{name: "no infra: the pod's PID namespace", pod: &runtimeapi.NamespaceOption{Pid: ctr}, ctr: &runtimeapi.NamespaceOption{Pid: pod},
			overrides: map[specs.LinuxNamespaceType]string{"network": "/run/netns/p1", "ipc": "/pods/p1/ipc.ns", "uts": "/pods/p1/uts.ns"}, wantErr: errAny},
		{name: "user namespace: joined", pod: podUserns, ctr: &runtimeapi.NamespaceOption{Pid: ctr, UsernsOptions: podUserns.UsernsOptions}, sbPid: pid, userns: userns,
			want: []specs.LinuxNamespace{ns("pid", ""), ns("network", "/proc/4242/ns/net"), ns("ipc", "/proc/4242/ns/ipc"), ns("uts", "/proc/4242/ns/uts"), ns("mount", ""), ns("user", "/proc/4242/ns/user")}},
		{name: "user namespace: container options unset", pod: podUserns, sbPid: pid, userns: userns,
			want: []specs.LinuxNamespace{ns("pid", "/proc/4242/ns/pid"), ns("network", "/proc/4242/ns/net"), ns("ipc", "/proc/4242/ns/ipc"), ns("uts", "/proc/4242/ns/uts"), ns("mount", ""), ns("user", "/proc/4242/ns/user")}},
		{name: "user namespace: the container asks for another", pod: podUserns, sbPid: pid, userns: userns,
			ctr: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: mapping(0, 1000, 10), Gids: mapping(0, 1000, 10)}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "user namespace: the container asks for the host's", pod: podUserns, sbPid: pid, userns: userns,
			ctr: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: node}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "user namespace: the container alone asks for one", pod: &runtimeapi.NamespaceOption{}, sbPid: pid,
			ctr: podUserns, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := containerNamespaces(tt.pod, tt.ctr, tt.sbPid, tt.overrides, tt.cg, tt.userns)
			if tt.wantErr != nil {
				if err == nil || (tt.wantErr != errAny && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, %v\nwant %v", got, err, tt.want)
			}
		})
	}
}

// TestSpecUserNamespace: a pod with its own user namespace gets it in the
// sandbox's spec (created, with the mappings and a new network namespace)
// and in its containers' (joined, with the same mappings), where the
// runtime supports it; elsewhere the pod is refused.
func TestSpecUserNamespace(t *testing.T) {
	m := mapping(0, 65536, 65536)
	want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}
	withUserns := func(cfg *runtimeapi.PodSandboxConfig) *runtimeapi.PodSandboxConfig {
		cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: pod, Uids: m, Gids: m}
		return cfg
	}
	tests := []struct {
		name      string
		supported bool
		netns     string
		wantErr   error
	}{
		{name: "supported", supported: true},
		{name: "not supported (vm handler)", wantErr: errdefs.ErrUnimplemented},
		{name: "a network namespace path given", supported: true, netns: "/run/netns/x", wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, err := SandboxSpec(SandboxSpecInput{Host: Host{UserNamespaces: tt.supported}, ID: "sb1", Config: withUserns(testSandboxConfig()), NetNSPath: tt.netns})
			in := testContainerInput(t)
			in.Host.UserNamespaces = tt.supported
			in.Sandbox = withUserns(in.Sandbox)
			c, cerr := ContainerSpec(in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("sandbox: err = %v, want %v", err, tt.wantErr)
				}
				if tt.netns == "" && !errors.Is(cerr, tt.wantErr) {
					t.Errorf("container: err = %v, want %v", cerr, tt.wantErr)
				}
				return
			}
			if err != nil || cerr != nil {
				t.Fatal(err, cerr)
			}
			if !slices.Contains(sb.Linux.Namespaces, ns("user", "")) || !slices.Contains(sb.Linux.Namespaces, ns("network", "")) {
				t.Errorf("sandbox namespaces %v: want new user and network ones", sb.Linux.Namespaces)
			}
			if !slices.Contains(c.Linux.Namespaces, ns("user", "/proc/100/ns/user")) {
				t.Errorf("container namespaces %v: want the sandbox's user namespace", c.Linux.Namespaces)
			}
			for _, s := range []*specs.Spec{sb, c} {
				if !reflect.DeepEqual(s.Linux.UIDMappings, want) || !reflect.DeepEqual(s.Linux.GIDMappings, want) {
					t.Errorf("mappings %v %v, want %v", s.Linux.UIDMappings, s.Linux.GIDMappings, want)
				}
			}
		})
	}
}
