package agentproxy

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestGuestSpec(t *testing.T) {
	s := &specs.Spec{
		Process: &specs.Process{ApparmorProfile: "crivm-default", SelinuxLabel: "x"},
		Root:    &specs.Root{Path: "/var/lib/crivm/overlay/abc/merged"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: "/run/crivm/pods/p/resolv.conf", Options: []string{"rbind", "ro"}},
			{Destination: "/data", Source: "/srv/data", Options: []string{"rbind", "rprivate"}},
			{Destination: "/cfg", Type: "bind", Source: "/etc/cfg", Options: []string{"bind"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/crivm/pods/p/shm", Options: []string{"rbind"}},
		},
		Linux: &specs.Linux{CgroupsPath: "kubepods.slice:crivm:c1", MountLabel: "y"},
	}
	binds, err := GuestSpec(s, "c1", GuestSpecOptions{Keep: map[string]string{
		"/run/crivm/pods/p/resolv.conf": GuestResolvConf,
		"/run/crivm/pods/p/shm":         GuestShm,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Root.Path != "/run/crivm/shared/c1/rootfs" {
		t.Errorf("root %s", s.Root.Path)
	}
	want := []HostBind{
		{HostPath: "/srv/data", N: 0, GuestPath: "/run/crivm/shared/c1/mounts/0"},
		{HostPath: "/etc/cfg", N: 1, GuestPath: "/run/crivm/shared/c1/mounts/1"},
	}
	if len(binds) != len(want) {
		t.Fatalf("binds %+v, want %+v", binds, want)
	}
	for i := range want {
		if binds[i] != want[i] {
			t.Errorf("bind %d = %+v, want %+v", i, binds[i], want[i])
		}
	}
	for i, src := range []string{"proc", GuestResolvConf, want[0].GuestPath, want[1].GuestPath, GuestShm} {
		if s.Mounts[i].Source != src {
			t.Errorf("mount %s source %s, want %s", s.Mounts[i].Destination, s.Mounts[i].Source, src)
		}
	}
	if s.Linux.CgroupsPath != "/crivm/c1" || s.Linux.MountLabel != "" || s.Process.ApparmorProfile != "" || s.Process.SelinuxLabel != "" {
		t.Errorf("cgroups path %q, labels %q %q %q", s.Linux.CgroupsPath, s.Linux.MountLabel, s.Process.ApparmorProfile, s.Process.SelinuxLabel)
	}
	if HostMountSource("/h", "c1", 1) != "/h/c1/mounts/1" || HostRootfs("/h", "c1") != "/h/c1/rootfs" {
		t.Error("host paths do not mirror the guest's")
	}
	if _, err := GuestSpec(&specs.Spec{}, "c1", GuestSpecOptions{}); !errdefs.IsClass(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty spec: %v", err)
	}
}

func TestGuestNamespacePaths(t *testing.T) {
	if p := GuestNamespacePaths(false); p[specs.PIDNamespace] != "" || p[specs.NetworkNamespace] != "/proc/1/ns/net" {
		t.Errorf("without a shared pid namespace: %v", p)
	}
	if p := GuestNamespacePaths(true); p[specs.PIDNamespace] != GuestPIDNamespace {
		t.Errorf("with a shared pid namespace: %v", p)
	}
}
