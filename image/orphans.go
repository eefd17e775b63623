package image

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/store"
)

// Orphans. Every storage container crivm creates (a container's or an
// infra container's rootfs, an image volume) carries storageMarker in its
// metadata, and an ID of crivm's form. A store shared with other tools
// (podman, CRI-O) holds theirs too, unmarked: only marked ones are
// crivm's to list and release.

// createdBy is the marker's creator.
const createdBy = "crivm"

// storageMeta is the metadata crivm writes on its storage containers.
type storageMeta struct {
	CreatedBy string `json:"created_by"`
	// Kind is what the container is: "rootfs" or "image volume".
	Kind string `json:"kind"`
}

// storageMarker is the metadata of a storage container crivm creates as
// kind.
func storageMarker(kind string) string {
	b, _ := json.Marshal(storageMeta{CreatedBy: createdBy, Kind: kind})
	return string(b)
}

// markedKind is the kind a storage container's metadata says crivm made
// it as; ok is false when crivm did not make it.
func markedKind(metadata string) (kind string, ok bool) {
	var m storageMeta
	if json.Unmarshal([]byte(metadata), &m) != nil || m.CreatedBy != createdBy || m.Kind == "" {
		return "", false
	}
	return m.Kind, true
}

// StorageContainer is a storage container crivm made.
type StorageContainer struct {
	ID string
	// Kind is what it is: "rootfs" or "image volume".
	Kind    string
	Names   []string
	ImageID string
}

// Owned lists the storage containers crivm made.
func (s *Service) Owned(ctx context.Context) ([]StorageContainer, error) {
	ctrs, err := s.store.Containers()
	if err != nil {
		return nil, fmt.Errorf("listing storage containers: %w", err)
	}
	var out []StorageContainer
	for _, c := range ctrs {
		if kind, ok := markedKind(c.Metadata); ok && store.IsID(c.ID) {
			out = append(out, StorageContainer{ID: c.ID, Kind: kind, Names: c.Names, ImageID: c.ImageID})
		}
	}
	return out, nil
}

// ReleaseOrphan unmounts and deletes the storage container id, once its
// metadata proves crivm made it. A missing one is not an error.
func (s *Service) ReleaseOrphan(ctx context.Context, id string) error {
	c, err := s.store.Container(id)
	if err != nil {
		if gone(err) {
			return nil
		}
		return fmt.Errorf("reading storage container %s: %w", id, err)
	}
	kind, ok := markedKind(c.Metadata)
	if !ok || !store.IsID(c.ID) {
		return errdefs.FailedPrecondition("storage container %s was not made by crivm: it is left alone", id)
	}
	return s.removeMounted(kind, c.ID)
}
