package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/test/fixtures"
)

// TestOpenVolumePath: a sub path resolves inside the volume whatever its
// symlinks say; a missing one is NotFound.
func TestOpenVolumePath(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "etc", "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "passwd"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"abs": "/etc", "up": "../../../..", "dangling": "/nonexistent"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		sub string
		// want is the path below dir it resolves to; notFound: none.
		want     string
		notFound bool
	}{
		{sub: "", want: ""},
		{sub: "etc", want: "etc"},
		{sub: "etc/passwd", want: "etc/passwd"},
		{sub: "abs", want: "etc"},
		{sub: "abs/app", want: "etc/app"},
		{sub: "up", want: ""},
		{sub: "up/etc/passwd", want: "etc/passwd"},
		{sub: "missing", notFound: true},
		{sub: "dangling", notFound: true},
		{sub: "etc/passwd/x", notFound: true},
	} {
		t.Run(tt.sub, func(t *testing.T) {
			f, got, err := OpenVolumePath(dir, tt.sub)
			if tt.notFound {
				if !errors.Is(err, errdefs.ErrNotFound) {
					t.Errorf("got %q, %v; want NotFound", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			if want := filepath.Join(dir, tt.want); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

// TestVolume mounts the multi-layer fixture as an image volume: every layer
// is there, nothing is writable, the image cannot be removed while the
// volume exists, and the volume's removal is idempotent.
func TestVolume(t *testing.T) {
	ctx := context.Background()
	s, ref := layeredService(t)
	res, err := s.Pull(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	vol, err := s.CreateVolume(ctx, "vol1", "vol1-name", ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if vol.ImageID != res.ID {
		t.Errorf("image id: got %s, want %s", vol.ImageID, res.ID)
	}
	for path, want := range fixtures.LayeredFiles {
		got, err := os.ReadFile(filepath.Join(vol.Dir, path))
		if err != nil || string(got) != want {
			t.Errorf("%s: got %q (%v), want %q", path, got, err, want)
		}
	}
	for _, path := range fixtures.LayeredAbsent {
		if _, err := os.Lstat(filepath.Join(vol.Dir, path)); !os.IsNotExist(err) {
			t.Errorf("%s: present in the volume (%v), want absent", path, err)
		}
	}
	if err := os.WriteFile(filepath.Join(vol.Dir, "data", "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing in the volume: %v, want EROFS", err)
	}
	// The storage refuses on its own, whatever the caller's account of
	// the image's users says.
	if err := s.Remove(ctx, res.ID, func(string) []string { return nil }); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("removing the image of a volume: %v, want FailedPrecondition", err)
	}
	if !mounted(t, vol.Dir) {
		t.Errorf("volume %s no longer mounted after the refused removal", vol.Dir)
	}
	for range 2 {
		if err := s.RemoveVolume(ctx, "vol1"); err != nil {
			t.Fatal(err)
		}
	}
	if mounted(t, vol.Dir) {
		t.Errorf("volume %s still mounted after RemoveVolume", vol.Dir)
	}
	if err := s.Remove(ctx, res.ID, func(string) []string { return nil }); err != nil {
		t.Errorf("removing the image after its volume: %v", err)
	}
}
