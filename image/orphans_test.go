package image

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestMarkedKind(t *testing.T) {
	tests := []struct {
		name     string
		metadata string
		kind     string
		ok       bool
	}{
		{"rootfs", storageMarker("rootfs"), "rootfs", true},
		{"image volume", storageMarker("image volume"), "image volume", true},
		{"none (before the marker, or another tool's)", "", "", false},
		{"another tool's JSON", `{"pod-name":"x","created_by":"podman","kind":"rootfs"}`, "", false},
		{"crivm without a kind", `{"created_by":"crivm"}`, "", false},
		{"not JSON", "crivm", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, ok := markedKind(tt.metadata)
			if kind != tt.kind || ok != tt.ok {
				t.Errorf("markedKind(%q) = %q, %v; want %q, %v", tt.metadata, kind, ok, tt.kind, tt.ok)
			}
		})
	}
}

// TestOwnedStorage: of the storage containers in a store, only those crivm made
// (marked, with an ID of crivm's form) are listed and released; another
// tool's is refused and stays.
func TestOwnedStorage(t *testing.T) {
	ctx := context.Background()
	s, ref := layeredService(t)
	res, err := s.Pull(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	mine := strings.Repeat("a1", 32)
	vol := strings.Repeat("b2", 32)
	foreign := strings.Repeat("c3", 32)
	rootfs, _, err := s.CreateRootfs(ctx, mine, "mine", res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateVolume(ctx, vol, "vol", res.ID, nil); err != nil {
		t.Fatal(err)
	}
	// Another tool's, in the same store: no marker.
	if _, err := s.store.CreateContainer(foreign, []string{"foreign"}, res.ID, "", "", nil); err != nil {
		t.Fatal(err)
	}
	// crivm's marker on an ID crivm never makes.
	if _, err := s.store.CreateContainer("not-an-id", []string{"odd"}, res.ID, "", storageMarker("rootfs"), nil); err != nil {
		t.Fatal(err)
	}

	got, err := s.Owned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, c := range got {
		kinds[c.ID] = c.Kind
	}
	want := map[string]string{mine: "rootfs", vol: "image volume"}
	if len(kinds) != len(want) || kinds[mine] != want[mine] || kinds[vol] != want[vol] {
		t.Errorf("Owned: %v, want %v", kinds, want)
	}

	if err := s.ReleaseOrphan(ctx, foreign); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("releasing another tool's container: %v, want FailedPrecondition", err)
	}
	if _, err := s.store.Container(foreign); err != nil {
		t.Errorf("another tool's container is gone: %v", err)
	}
	for range 2 {
		if err := s.ReleaseOrphan(ctx, mine); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.store.Container(mine); !gone(err) {
		t.Errorf("released container still in storage: %v", err)
	}
	if mounted(t, rootfs) {
		t.Errorf("released rootfs %s still mounted", rootfs)
	}
	for _, id := range []string{vol, foreign, "not-an-id"} {
		if err := s.store.DeleteContainer(id); err != nil {
			t.Error(err)
		}
	}
}
