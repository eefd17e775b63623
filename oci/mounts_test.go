package oci

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestCRIMounts(t *testing.T) {
	src := t.TempDir()
	tests := []struct {
		name        string
		m           *runtimeapi.Mount
		privileged  bool
		wantOpts    []string
		propagation string
		invalid     bool
	}{
		{name: "private rw", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: src},
			wantOpts: []string{"rbind", "rprivate", "rw"}},
		{name: "readonly", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: src, Readonly: true},
			wantOpts: []string{"rbind", "rprivate", "ro"}},
		{name: "host to container", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: src, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			wantOpts: []string{"rbind", "rslave", "rw"}, propagation: "rslave"},
		{name: "bidirectional", privileged: true, m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: src, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
			wantOpts: []string{"rbind", "rshared", "rw"}, propagation: "rshared"},
		{name: "bidirectional unprivileged", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: src, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}, invalid: true},
		{name: "recursive read-only", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: src, Readonly: true, RecursiveReadOnly: true},
			wantOpts: []string{"rbind", "rprivate", "rro"}},
		{name: "recursive read-only without readonly", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: src, RecursiveReadOnly: true}, invalid: true},
		{name: "mount options", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: src, MountOptions: []string{"noexec", "nosuid"}},
			wantOpts: []string{"rbind", "rprivate", "rw", "noexec", "nosuid"}},
		{name: "loosening mount option", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: src, MountOptions: []string{"suid"}}, invalid: true},
		{name: "relative destination", m: &runtimeapi.Mount{ContainerPath: "data", HostPath: src}, invalid: true},
		{name: "root destination", m: &runtimeapi.Mount{ContainerPath: "/", HostPath: src}, invalid: true},
		{name: "relative source", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "src"}, invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, prop, err := criMounts([]*runtimeapi.Mount{tt.m}, tt.privileged, nil, nil)
			if tt.invalid {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := specs.Mount{Destination: "/data", Type: "bind", Source: src, Options: tt.wantOpts}
			if len(got) != 1 || !reflect.DeepEqual(got[0], want) || prop != tt.propagation {
				t.Errorf("got %+v %q, want %+v %q", got, prop, want, tt.propagation)
			}
		})
	}
}

func TestCRIMountsPropagationAndSources(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "new", "dir")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	ms := []*runtimeapi.Mount{
		{ContainerPath: "/a", HostPath: missing, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
		{ContainerPath: "/b", HostPath: link, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
		{ContainerPath: "/c", HostPath: dir, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
	}
	got, prop, err := criMounts(ms, true, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if prop != "rshared" {
		t.Errorf("rootfs propagation = %q, want rshared (bidirectional wins)", prop)
	}
	if fi, err := os.Stat(missing); err != nil || !fi.IsDir() {
		t.Errorf("missing source not created as a directory: %v", err)
	}
	if got[1].Source != dir {
		t.Errorf("symlinked source = %q, want %q", got[1].Source, dir)
	}
}

func TestCRIMountsImageVolumes(t *testing.T) {
	img := &runtimeapi.ImageSpec{Image: "sha256:0123"}
	hostDir := t.TempDir()
	ms := []*runtimeapi.Mount{
		{ContainerPath: "/data", HostPath: hostDir},
		{ContainerPath: "/vol", Image: img, Readonly: true},
		{ContainerPath: "/slave", Image: img, Readonly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, MountOptions: []string{"noexec"}},
	}
	vols := map[int]string{1: "/storage/overlay/l1/merged", 2: "/storage/overlay/l2/merged/etc"}
	for _, resolved := range []map[string]string{nil, {hostDir: hostDir}} {
		got, prop, err := criMounts(ms, false, resolved, vols)
		if err != nil {
			t.Fatal(err)
		}
		want := []specs.Mount{
			{Destination: "/data", Type: "bind", Source: hostDir, Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/vol", Type: "bind", Source: vols[1], Options: []string{"rbind", "rprivate", "ro", "nosuid", "nodev"}},
			{Destination: "/slave", Type: "bind", Source: vols[2], Options: []string{"rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"}},
		}
		if !reflect.DeepEqual(got, want) || prop != "" {
			t.Errorf("resolved %v:\n got %+v %q\nwant %+v \"\"", resolved, got, prop, want)
		}
	}
	if _, _, err := criMounts(ms, false, nil, map[int]string{1: vols[1]}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("image volume not mounted: err = %v, want FailedPrecondition", err)
	}
}

func TestMergeMounts(t *testing.T) {
	defaults := append(defaultMounts("", false), etcMounts("/run/r", "/run/h", "", false)...)
	cri := []specs.Mount{
		{Destination: "/var/log/app/inner", Type: "bind", Source: "/x"},
		{Destination: "/etc/hosts", Type: "bind", Source: "/kubelet/hosts"},
		{Destination: "/var/log/app", Type: "bind", Source: "/y"},
		{Destination: "/dev/shm/", Type: "bind", Source: "/z"},
	}
	got := mergeMounts(defaults, cri)
	var dsts []string
	for _, m := range got {
		dsts = append(dsts, m.Destination)
	}
	want := []string{
		"/proc", "/dev", "/sys",
		"/dev/pts", "/dev/mqueue", "/etc/resolv.conf", "/etc/hosts", "/dev/shm/",
		"/sys/fs/cgroup", "/var/log/app",
		"/var/log/app/inner",
	}
	if !slices.Equal(dsts, want) {
		t.Errorf("destinations:\n got %q\nwant %q", dsts, want)
	}
	for _, m := range got {
		if m.Destination == "/etc/hosts" && m.Source != "/kubelet/hosts" {
			t.Errorf("CRI /etc/hosts did not replace the default: %+v", m)
		}
	}

	// A CRI /dev replaces everything under /dev.
	got = mergeMounts(defaultMounts("", false), []specs.Mount{{Destination: "/dev", Type: "bind", Source: "/dev"}})
	for _, m := range got {
		if m.Destination != "/dev" && filepath.Dir(m.Destination) == "/dev" {
			t.Errorf("default %s kept under a CRI /dev", m.Destination)
		}
	}
}

func TestDefaultMounts(t *testing.T) {
	byDst := func(ms []specs.Mount) map[string]specs.Mount {
		out := map[string]specs.Mount{}
		for _, m := range ms {
			out[m.Destination] = m
		}
		return out
	}
	plain := byDst(defaultMounts("", false))
	if m := plain["/dev/shm"]; m.Type != "tmpfs" || !slices.Contains(m.Options, "size=65536k") {
		t.Errorf("/dev/shm without a shm path: %+v", m)
	}
	if m := plain["/sys"]; !slices.Contains(m.Options, "ro") {
		t.Errorf("/sys not read-only: %+v", m)
	}
	if m := plain["/dev"]; !slices.Equal(m.Options, []string{"nosuid", "strictatime", "mode=755", "size=65536k"}) {
		t.Errorf("/dev: %+v", m)
	}
	priv := byDst(defaultMounts("/run/shm", true))
	if m := priv["/dev/shm"]; m.Type != "bind" || m.Source != "/run/shm" {
		t.Errorf("/dev/shm with a shm path: %+v", m)
	}
	for _, d := range []string{"/sys", "/sys/fs/cgroup"} {
		if m := priv[d]; !slices.Contains(m.Options, "rw") || slices.Contains(m.Options, "ro") {
			t.Errorf("privileged %s not read-write: %+v", d, m)
		}
	}
	ro := etcMounts("/r", "/h", "/n", true)
	if len(ro) != 3 || !slices.Contains(ro[2].Options, "ro") || ro[2].Destination != "/etc/hostname" {
		t.Errorf("etc mounts with a read-only rootfs: %+v", ro)
	}
}
