package oci

import (
	"errors"
	"reflect"
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
			got, err := sandboxNamespaces(tt.opts, tt.netns, tt.cg)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, %v\nwant %v", got, err, tt.want)
			}
		})
	}
	_, err := sandboxNamespaces(&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod}}, "", CgroupFeatures{})
	if !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Errorf("user namespace: err = %v, want Unimplemented", err)
	}
	if _, err := sandboxNamespaces(&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: node}}, "", CgroupFeatures{}); err != nil {
		t.Errorf("host user namespace: %v", err)
	}
}

func TestContainerNamespaces(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name      string
		pod, ctr  *runtimeapi.NamespaceOption
		sbPid     int
		overrides map[specs.LinuxNamespaceType]string
		cg        CgroupFeatures
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
		{name: "user namespace", pod: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod}}, sbPid: pid, wantErr: errdefs.ErrUnimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := containerNamespaces(tt.pod, tt.ctr, tt.sbPid, tt.overrides, tt.cg)
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
