package server

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/store"
)

func TestRepoDigest(t *testing.T) {
	const (
		a = "registry.k8s.io/e2e/busybox@sha256:aaaa"
		b = "docker.io/library/busybox@sha256:bbbb"
	)
	tests := []struct {
		name    string
		digests []string
		names   []string
		want    string
	}{
		{"none", nil, []string{"busybox"}, ""},
		{"the user's repository", []string{a, b}, []string{"busybox:1.36", "0123abcd"}, b},
		{"the image field when the user's reference is empty", []string{a, b}, []string{"", "registry.k8s.io/e2e/busybox:1"}, a},
		{"an image ID names no repository: the first", []string{a, b}, []string{"", "sha256:" + id64}, a},
		{"an unknown repository: the first", []string{b, a}, []string{"quay.io/x/y:z"}, b},
		{"a digested reference names its repository", []string{a, b}, []string{"busybox@sha256:" + id64}, b},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := repoDigest(tt.digests, tt.names...); got != tt.want {
				t.Errorf("repoDigest(%q, %q) = %q, want %q", tt.digests, tt.names, got, tt.want)
			}
		})
	}
}

const id64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestContainerImageIdentifiers: image_id is the image ID in ListContainers
// and ContainerStatus alike (the value PullImage and ImageStatus report);
// image_ref is the digested reference when there is one. The user is the
// one the spec starts the process with.
func TestContainerImageIdentifiers(t *testing.T) {
	cfg, err := proto.Marshal(&runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		rec        store.Container
		wantRef    string
		wantUser   *runtimeapi.LinuxContainerUser
		wantGroups []int64
	}{
		{name: "digested", rec: store.Container{ImageRef: id64, RepoDigest: "docker.io/library/busybox@sha256:bbbb",
			User: &store.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1234, 50000}}},
			wantRef: "docker.io/library/busybox@sha256:bbbb", wantUser: &runtimeapi.LinuxContainerUser{Uid: 1000, Gid: 1000, SupplementalGroups: []int64{1000, 1234, 50000}}},
		{name: "no digest, record from before the user field", rec: store.Container{ImageRef: id64}, wantRef: id64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := store.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			c := tt.rec
			c.ID, c.Name, c.SandboxID, c.Image, c.State, c.Config = store.NewID(), "c", "sb", id64, store.ContainerExited, cfg
			if err := st.Containers.Add(&c); err != nil {
				t.Fatal(err)
			}
			s := NewRuntimeService(Deps{Store: st, Config: func() *configs.Config { return configs.Defaults() }})
			ctx := context.Background()
			status, err := s.containerStatus(ctx, &c)
			if err != nil {
				t.Fatal(err)
			}
			list, err := s.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Containers) != 1 {
				t.Fatalf("listed %d containers", len(list.Containers))
			}
			l := list.Containers[0]
			if status.ImageId != id64 || l.ImageId != id64 {
				t.Errorf("image_id: status %q list %q, want the image ID %q", status.ImageId, l.ImageId, id64)
			}
			if status.ImageRef != tt.wantRef || l.ImageRef != tt.wantRef {
				t.Errorf("image_ref: status %q list %q, want %q", status.ImageRef, l.ImageRef, tt.wantRef)
			}
			if got := status.GetUser().GetLinux(); !proto.Equal(got, tt.wantUser) {
				t.Errorf("user %v, want %v", got, tt.wantUser)
			}
		})
	}
}

// TestStatusRuntimeFeatures: SupplementalGroupsPolicy is advertised.
func TestStatusRuntimeFeatures(t *testing.T) {
	cfg := configs.Defaults()
	s := NewRuntimeService(Deps{Config: func() *configs.Config { return cfg }})
	resp, err := s.Status(context.Background(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetFeatures().GetSupplementalGroupsPolicy() {
		t.Errorf("features %v: supplemental_groups_policy not advertised", resp.GetFeatures())
	}
}

// TestStatusMounts: an image volume's mount reports the mounted image's ID as
// image_ref; other mounts are reported as given.
func TestStatusMounts(t *testing.T) {
	hostPath := &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/srv/data"}
	volume := &runtimeapi.Mount{ContainerPath: "/vol", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "registry.example/data:1"}}
	got := statusMounts([]*runtimeapi.Mount{hostPath, volume}, []store.ImageVolume{{Mount: 1, ImageID: id64, StorageID: "s1"}})
	want := []*runtimeapi.Mount{hostPath, {ContainerPath: "/vol", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "registry.example/data:1", ImageRef: id64}}}
	if len(got) != len(want) || !proto.Equal(got[0], want[0]) || !proto.Equal(got[1], want[1]) {
		t.Errorf("got %v, want %v", got, want)
	}
	if volume.Image.ImageRef != "" {
		t.Errorf("the config's mount was changed: %v", volume)
	}
}
