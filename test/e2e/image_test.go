package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/test/fixtures"
	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
	"github.com/crivm/crivm/test/testutil"
)

func spec(ref string) *runtimeapi.ImageSpec { return &runtimeapi.ImageSpec{Image: ref} }

// layerCount counts the layers containers/storage records under root.
func layerCount(t *testing.T, root string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "storage", "overlay-layers", "layers.json"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var layers []json.RawMessage
	if err := json.Unmarshal(b, &layers); err != nil {
		t.Fatal(err)
	}
	return len(layers)
}

// TestImageLifecycle: pull, list, status, fs info, remove and restart, against
// a real registry.
func TestImageLifecycle(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresBinary(t, registry.Binary)
	ctx := context.Background()
	reg := framework.StartRegistry(t, registry.Options{})
	d := framework.NewDaemon(t, framework.DaemonOptions{})
	d.TrustRegistry(reg.Host)
	d.Start(ctx)
	is := d.ImageService(ctx)

	// 1. ImageFsInfo before anything is pulled.
	before, err := is.ImageFsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// 2. Pull by tag: the ref is the image ID, listed with tag and digest.
	busybox := reg.Ref("busybox", "latest")
	id, err := is.PullImage(ctx, spec(busybox), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	img, err := is.ImageStatus(ctx, spec(busybox), true)
	if err != nil || img.GetImage() == nil {
		t.Fatalf("ImageStatus(%s): %v, %v", busybox, img, err)
	}
	wantDigest := reg.Host + "/busybox@" + reg.Digests["busybox"]
	got := img.GetImage()
	if got.Id != id || !contains(got.RepoTags, busybox) || !contains(got.RepoDigests, wantDigest) ||
		got.Size == 0 || got.GetUid().GetValue() != 0 || got.Pinned {
		t.Errorf("busybox status: got id %s tags %v digests %v size %d uid %v pinned %v; want id %s, tag %s, digest %s, size > 0, uid 0",
			got.Id, got.RepoTags, got.RepoDigests, got.Size, got.Uid, got.Pinned, id, busybox, wantDigest)
	}
	var info struct {
		ImageSpec struct {
			Config struct{ Cmd []string } `json:"config"`
		} `json:"imageSpec"`
	}
	if err := json.Unmarshal([]byte(img.GetInfo()["info"]), &info); err != nil || strings.Join(info.ImageSpec.Config.Cmd, " ") != "sh" {
		t.Errorf("verbose info: cmd %v (%v), want [sh]", info.ImageSpec.Config.Cmd, err)
	}

	// 3. USER 1000 reaches Uid; a pull by digest works and is found by digest.
	if _, err := is.PullImage(ctx, spec(reg.Ref("user1000", "latest")), nil, nil); err != nil {
		t.Fatal(err)
	}
	u, err := is.ImageStatus(ctx, spec(reg.Ref("user1000", "latest")), false)
	if err != nil || u.GetImage().GetUid().GetValue() != 1000 {
		t.Errorf("user1000 uid: got %v (%v), want 1000", u.GetImage().GetUid(), err)
	}
	byDigest := reg.Host + "/entrypoint@" + reg.Digests["entrypoint"]
	eid, err := is.PullImage(ctx, spec(byDigest), nil, nil)
	if err != nil {
		t.Fatalf("pull by digest: %v", err)
	}
	e, err := is.ImageStatus(ctx, spec(byDigest), false)
	if err != nil || e.GetImage().GetId() != eid {
		t.Errorf("status by digest: got %v (%v), want id %s", e.GetImage(), err, eid)
	}

	// 4. ListImages, whole and filtered.
	all, err := is.ListImages(ctx, nil)
	if err != nil || len(all) != 3 {
		t.Errorf("ListImages: %d images (%v), want 3", len(all), err)
	}
	filtered, err := is.ListImages(ctx, &runtimeapi.ImageFilter{Image: spec(busybox)})
	if err != nil || len(filtered) != 1 || filtered[0].Id != id {
		t.Errorf("ListImages filtered by %s: %v (%v)", busybox, filtered, err)
	}

	// 5. ImageFsInfo counts the pulled bytes and inodes.
	after, err := is.ImageFsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b0, b1 := before.ImageFilesystems[0], after.ImageFilesystems[0]
	if b1.UsedBytes.Value <= b0.UsedBytes.Value || b1.InodesUsed.Value <= b0.InodesUsed.Value {
		t.Errorf("fs info did not grow: bytes %d -> %d, inodes %d -> %d", b0.UsedBytes.Value, b1.UsedBytes.Value, b0.InodesUsed.Value, b1.InodesUsed.Value)
	}
	if !strings.HasPrefix(b1.FsId.Mountpoint, d.Root) {
		t.Errorf("fs info mountpoint %q is not under root %q", b1.FsId.Mountpoint, d.Root)
	}

	// 6. Bad references and unknown images get precise codes and name the registry.
	for _, tt := range []struct {
		ref  string
		code codes.Code
		msg  []string
	}{
		{"UPPER/Case:tag", codes.InvalidArgument, []string{"UPPER/Case"}},
		{"busybox:bad tag", codes.InvalidArgument, nil},
		{reg.Ref("no-such-image", "v1"), codes.NotFound, []string{reg.Host, "no-such-image", "404"}},
	} {
		_, err := is.PullImage(ctx, spec(tt.ref), nil, nil)
		if status.Code(err) != tt.code {
			t.Errorf("pull %q: got %v, want %v", tt.ref, err, tt.code)
		}
		for _, m := range tt.msg {
			if !strings.Contains(status.Convert(err).Message(), m) {
				t.Errorf("pull %q: message %q lacks %q", tt.ref, status.Convert(err).Message(), m)
			}
		}
	}
	if st, err := is.ImageStatus(ctx, spec("docker.io/library/never-pulled:1"), false); err != nil || st.GetImage() != nil {
		t.Errorf("status of a missing image: %v, %v; want an empty response", st, err)
	}

	// 7. A daemon restart keeps the images.
	if err := d.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	d.Start(ctx)
	is = d.ImageService(ctx)
	all, err = is.ListImages(ctx, nil)
	if err != nil || len(all) != 3 {
		t.Errorf("after restart: %d images (%v), want 3", len(all), err)
	}

	// 8. RemoveImage by tag, by digest, by ID (already gone: idempotent).
	for _, ref := range []string{busybox, byDigest, eid} {
		if err := is.RemoveImage(ctx, spec(ref)); err != nil {
			t.Errorf("remove %s: %v", ref, err)
		}
	}
	for _, ref := range []string{busybox, byDigest} {
		if st, _ := is.ImageStatus(ctx, spec(ref), false); st.GetImage() != nil {
			t.Errorf("%s still present after removal", ref)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestPullsUnderStress: concurrent pulls share one download; a cancelled pull
// leaves nothing; auth works with each credential form.
func TestPullsUnderStress(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresBinary(t, registry.Binary)
	ctx := context.Background()
	reg := framework.StartRegistry(t, registry.Options{Htpasswd: map[string]string{"alice": "s3cret"}})
	big, err := fixtures.Big(fixtures.DefaultCacheDir(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Push(big, "big", "latest"); err != nil {
		t.Fatal(err)
	}
	d := framework.NewDaemon(t, framework.DaemonOptions{})
	d.TrustRegistry(reg.Host)
	d.Start(ctx)
	is := d.ImageService(ctx)
	alice := &runtimeapi.AuthConfig{Username: "alice", Password: "s3cret"}

	// 1. Without credentials the registry refuses, and the error says 401.
	_, err = is.PullImage(ctx, spec(reg.Ref("busybox", "latest")), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), reg.Host) {
		t.Errorf("pull without credentials: %v; want a 401 naming %s", err, reg.Host)
	}

	// 2. A pull cancelled midway leaves no image and no layer.
	layersBefore := layerCount(t, d.Root)
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = is.PullImage(cctx, spec(reg.Ref("big", "latest")), alice, nil)
	cancel()
	if err == nil {
		t.Fatal("a 100 MiB pull finished within 300ms; cannot test cancellation")
	}
	time.Sleep(time.Second) // the abandoned download stops asynchronously
	if st, _ := is.ImageStatus(ctx, spec(reg.Ref("big", "latest")), false); st.GetImage() != nil {
		t.Errorf("cancelled pull left an image: %v", st.GetImage())
	}
	if got := layerCount(t, d.Root); got != layersBefore {
		t.Errorf("cancelled pull left layers: %d before, %d after", layersBefore, got)
	}

	// 3. Five concurrent pulls of one image share one download.
	var wg sync.WaitGroup
	ids := make([]string, 5)
	errs := make([]error, 5)
	for i := range ids {
		wg.Go(func() { ids[i], errs[i] = is.PullImage(ctx, spec(reg.Ref("big", "latest")), alice, nil) })
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Errorf("concurrent pull %d: id %s err %v; want %s", i, ids[i], errs[i], ids[0])
		}
	}
	if err := d.WaitLog(5*time.Second, "joining a pull already in progress"); err != nil {
		t.Error(err)
	}
	if n := strings.Count(d.Log(), `msg="pulled image"`); n != 1 {
		t.Errorf("%d downloads completed for 5 concurrent pulls, want 1", n)
	}

	// 4. The other credential forms: base64 auth, and a wrong password.
	enc := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	if _, err := is.PullImage(ctx, spec(reg.Ref("busybox", "latest")), &runtimeapi.AuthConfig{Auth: enc}, nil); err != nil {
		t.Errorf("pull with base64 auth: %v", err)
	}
	_, err = is.PullImage(ctx, spec(reg.Ref("pause", "latest")), &runtimeapi.AuthConfig{Username: "alice", Password: "wrong"}, nil)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("pull with a wrong password: %v; want 401", err)
	}
}

// TestMirrorsAndSearch: a configured mirror serves a registry that does not
// exist, and a short name resolves through the unqualified-search registries.
func TestMirrorsAndSearch(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresBinary(t, registry.Binary)
	ctx := context.Background()
	reg := framework.StartRegistry(t, registry.Options{})
	d := framework.NewDaemon(t, framework.DaemonOptions{})
	conf := `[crivm.image]
insecure_registries = ["` + reg.Host + `"]
unqualified_search_registries = ["` + reg.Host + `"]
[crivm.image.registry_mirrors]
"registry.invalid" = ["` + reg.Host + `"]
`
	if err := os.WriteFile(filepath.Join(d.DropIn, "05-registry.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Start(ctx)
	is := d.ImageService(ctx)

	// 1. registry.invalid does not resolve; its mirror has the image.
	if _, err := is.PullImage(ctx, spec("registry.invalid/busybox:latest"), nil, nil); err != nil {
		t.Fatalf("pull through mirror: %v", err)
	}
	if st, err := is.ImageStatus(ctx, spec("registry.invalid/busybox:latest"), false); err != nil || st.GetImage() == nil {
		t.Errorf("mirrored image not stored under its own name: %v %v", st, err)
	}

	// 2. A short name resolves through the search registry.
	id, err := is.PullImage(ctx, spec("pause"), nil, nil)
	if err != nil {
		t.Fatalf("pull short name: %v", err)
	}
	st, err := is.ImageStatus(ctx, spec(reg.Ref("pause", "latest")), false)
	if err != nil || st.GetImage().GetId() != id {
		t.Errorf("short name pause: stored as %v (%v), want %s", st.GetImage(), err, reg.Ref("pause", "latest"))
	}
}
