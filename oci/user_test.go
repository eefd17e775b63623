package oci

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1::/:/bin/false
app:x:1000:1000:App:/home/app:/bin/sh
web:x:1001:1001::/srv:/bin/sh
broken:x:notanumber:1::/:/bin/sh
`

const testGroup = `root:x:0:
daemon:x:1:app
app:x:1000:
web:x:1001:
audio:x:29:app,web
video:x:44:web
dev:x:2000:app
`

// fakeRootfs makes a rootfs with /etc/passwd and /etc/group.
func fakeRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestResolveUser(t *testing.T) {
	root := fakeRootfs(t)
	tests := []struct {
		user     string
		uid, gid uint32
		groups   []uint32
		invalid  bool
	}{
		{user: "", uid: 0, gid: 0},
		{user: "0", uid: 0, gid: 0},
		{user: "1000", uid: 1000, gid: 1000, groups: []uint32{1, 29, 2000}},
		{user: "1000:44", uid: 1000, gid: 44, groups: []uint32{1, 29, 2000}},
		{user: "app", uid: 1000, gid: 1000, groups: []uint32{1, 29, 2000}},
		{user: "app:video", uid: 1000, gid: 44, groups: []uint32{1, 29, 2000}},
		{user: "app:dev", uid: 1000, gid: 2000, groups: []uint32{1, 29}},
		{user: "web", uid: 1001, gid: 1001, groups: []uint32{29, 44}},
		{user: "4242", uid: 4242, gid: 0},
		{user: "4242:4343", uid: 4242, gid: 4343},
		{user: "4242:audio", uid: 4242, gid: 29},
		{user: "nobody", invalid: true},
		{user: "app:nogroup", invalid: true},
		{user: "app:", invalid: true},
		{user: ":1000", invalid: true},
		{user: "99999999999", invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			uid, gid, groups, err := ResolveUser(root, tt.user)
			if tt.invalid {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if uid != tt.uid || gid != tt.gid || !reflect.DeepEqual(groups, tt.groups) {
				t.Errorf("got %d:%d %v, want %d:%d %v", uid, gid, groups, tt.uid, tt.gid, tt.groups)
			}
		})
	}
}

func TestResolveUserWithoutFiles(t *testing.T) {
	root := t.TempDir()
	if uid, gid, _, err := ResolveUser(root, "65535:65535"); err != nil || uid != 65535 || gid != 65535 {
		t.Errorf("numeric user on an empty rootfs: %d:%d %v", uid, gid, err)
	}
	if _, _, _, err := ResolveUser(root, "app"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("named user on an empty rootfs: err = %v, want InvalidArgument", err)
	}
}

// Symlinks in the image resolve inside the rootfs, never to the host.
func TestResolveUserSymlinks(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/lib/passwd"), []byte("img:x:77:88::/:/bin/sh\n"), 0o644)
	// Absolute link: inside the container it means <rootfs>/usr/lib/passwd.
	if err := os.Symlink("/usr/lib/passwd", filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	// A link climbing above / stays at the rootfs's /: this is <rootfs>/group,
	// which does not exist, and so reads as empty.
	if err := os.Symlink("../../../../../../group", filepath.Join(root, "etc/group")); err != nil {
		t.Fatal(err)
	}
	uid, gid, groups, err := ResolveUser(root, "img")
	if err != nil || uid != 77 || gid != 88 || groups != nil {
		t.Errorf("got %d:%d %v %v, want 77:88", uid, gid, groups, err)
	}
	// A link to itself is a loop, not a hang.
	os.Remove(filepath.Join(root, "etc/group"))
	os.Symlink("/etc/group", filepath.Join(root, "etc/group"))
	if _, _, _, err := ResolveUser(root, "img"); err == nil {
		t.Error("a symlink loop was accepted")
	}
}

func TestResolveProcessUser(t *testing.T) {
	root := fakeRootfs(t)
	i64 := func(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }
	tests := []struct {
		name    string
		req     userRequest
		want    specs.User
		invalid bool
	}{
		{name: "image user", req: userRequest{imageUser: "app"}, want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1, 29, 2000}}},
		{name: "run_as_user beats image user and its group", req: userRequest{runAsUser: i64(1001), imageUser: "app:dev"}, want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{1001, 29, 44}}},
		{name: "run_as_group", req: userRequest{runAsUser: i64(1000), runAsGroup: i64(5)}, want: specs.User{UID: 1000, GID: 5, AdditionalGids: []uint32{5, 1, 29, 2000}}},
		{name: "run_as_username", req: userRequest{runAsUsername: "web", imageUser: "1000"}, want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{1001, 29, 44}}},
		{name: "supplemental groups appended, deduplicated", req: userRequest{imageUser: "web", supplemental: []int64{44, 3000}}, want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{1001, 29, 44, 3000}}},
		{name: "strict policy drops /etc/group", req: userRequest{imageUser: "web", supplemental: []int64{3000}, strict: true}, want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{1001, 3000}}},
		{name: "merge policy keeps /etc/group", req: userRequest{imageUser: "web", supplemental: []int64{3000}}, want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{1001, 29, 44, 3000}}},
		{name: "strict with no supplemental groups", req: userRequest{imageUser: "app", strict: true}, want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000}}},
		{name: "primary group listed once", req: userRequest{runAsUser: i64(1001), runAsGroup: i64(29), supplemental: []int64{29}}, want: specs.User{UID: 1001, GID: 29, AdditionalGids: []uint32{29, 44}}},
		{name: "numeric user not in passwd", req: userRequest{imageUser: "4242", supplemental: []int64{7}}, want: specs.User{UID: 4242, GID: 0, AdditionalGids: []uint32{0, 7}}},
		{name: "root default", req: userRequest{}, want: specs.User{AdditionalGids: []uint32{0}}},
		{name: "username and uid agree", req: userRequest{runAsUsername: "app", runAsUser: i64(1000)}, want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1, 29, 2000}}},
		{name: "username and uid conflict", req: userRequest{runAsUsername: "app", runAsUser: i64(1001)}, invalid: true},
		{name: "group without user", req: userRequest{runAsGroup: i64(5), imageUser: "app"}, invalid: true},
		{name: "negative uid", req: userRequest{runAsUser: i64(-1)}, invalid: true},
		{name: "negative supplemental group", req: userRequest{supplemental: []int64{-3}}, invalid: true},
		{name: "unknown username", req: userRequest{runAsUsername: "ghost"}, invalid: true},
		{name: "username with colon", req: userRequest{runAsUsername: "app:video"}, invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveProcessUser(root, tt.req)
			if tt.invalid {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
