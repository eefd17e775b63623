package image

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/test/fixtures"
	"github.com/crivm/crivm/test/registry"
	"github.com/crivm/crivm/test/testutil"
)

func TestPullCandidates(t *testing.T) {
	tests := []struct {
		name    string
		search  []string
		ref     string
		want    []string
		wantErr error
	}{
		{"short name", nil, "busybox", []string{"docker.io/library/busybox:latest"}, nil},
		{"library path", nil, "library/busybox:1.36", []string{"docker.io/library/busybox:1.36"}, nil},
		{"qualified", nil, "quay.io/x/y:1", []string{"quay.io/x/y:1"}, nil},
		{"localhost", nil, "localhost/x", []string{"localhost/x:latest"}, nil},
		{"port", nil, "127.0.0.1:5000/a", []string{"127.0.0.1:5000/a:latest"}, nil},
		{"search registries", []string{"quay.io", "docker.io"}, "busybox:1", []string{"quay.io/busybox:1", "docker.io/library/busybox:1"}, nil},
		{"search keeps path", []string{"quay.io"}, "org/app", []string{"quay.io/org/app:latest"}, nil},
		{"qualified ignores search", []string{"quay.io"}, "ghcr.io/a/b", []string{"ghcr.io/a/b:latest"}, nil},
		{"uppercase", nil, "Busybox", nil, errdefs.ErrInvalidArgument},
		{"image id", nil, strings.Repeat("a", 64), nil, errdefs.ErrInvalidArgument},
		{"empty", nil, "", nil, errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Service{opts: Options{SearchRegistries: tt.search}}
			got, err := s.pullCandidates(tt.ref)
			if tt.wantErr != nil {
				if !errdefs.IsClass(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, n := range got {
				names = append(names, n.String())
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", names, tt.want)
			}
		})
	}
}

// layeredService is a Service on private storage that trusts a real
// loopback registry holding the multi-layer fixture as ref. Root only.
func layeredService(t *testing.T) (s *Service, ref string) {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresBinary(t, registry.Binary)
	layered, err := fixtures.Layered(fixtures.DefaultCacheDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.Start(t, registry.Options{})
	if _, err := reg.Push(layered, "layered", "latest"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err = New(context.Background(), Options{Root: filepath.Join(dir, "root"), Runroot: filepath.Join(dir, "run"), InsecureRegistries: []string{reg.Host}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, reg.Ref("layered", "latest")
}

// TestLayeredRootfs pulls the multi-layer fixture from a real registry into
// real overlay storage and checks that whiteouts and opaque dirs produce the
// right tree in a container's rootfs.
func TestLayeredRootfs(t *testing.T) {
	ctx := context.Background()
	s, ref := layeredService(t)
	res, err := s.Pull(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	rootfs, imageID, err := s.CreateRootfs(ctx, "ctr1", "ctr1-name", res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if imageID != res.ID {
		t.Errorf("image id: got %s, want %s", imageID, res.ID)
	}
	for path, want := range fixtures.LayeredFiles {
		got, err := os.ReadFile(filepath.Join(rootfs, path))
		if err != nil || string(got) != want {
			t.Errorf("%s: got %q (%v), want %q", path, got, err, want)
		}
	}
	for _, path := range fixtures.LayeredAbsent {
		if _, err := os.Lstat(filepath.Join(rootfs, path)); !os.IsNotExist(err) {
			t.Errorf("%s: present in the rootfs (%v), want absent", path, err)
		}
	}
	if err := s.RemoveRootfs(ctx, "ctr1"); err != nil {
		t.Fatal(err)
	}
	if mounted(t, rootfs) {
		t.Errorf("rootfs %s still mounted after RemoveRootfs", rootfs)
	}
	if err := s.RemoveRootfs(ctx, "ctr1"); err != nil {
		t.Errorf("second RemoveRootfs: %v", err)
	}
}

func mounted(t *testing.T, path string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == path {
			return true
		}
	}
	return false
}
