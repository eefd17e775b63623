package image

import (
	"context"
	"errors"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"go.podman.io/storage"
	"go.podman.io/storage/pkg/idtools"
	storagetypes "go.podman.io/storage/types"

	"github.com/crivm/crivm/internal/log"
)

// CreateRootfs creates a container's writable layer on the image imageRef
// names and mounts it. It returns the mount point and the image ID. On
// failure nothing is left in storage.
func (s *Service) CreateRootfs(ctx context.Context, id, name, imageRef string) (rootfs, imageID string, err error) {
	return s.CreateRootfsMapped(ctx, id, name, imageRef, nil)
}

// IDMappings are a user namespace's uid and gid mappings.
type IDMappings struct {
	UIDs, GIDs []specs.LinuxIDMapping
}

// CreateRootfsMapped is CreateRootfs for a container in a user namespace
// (m not nil): its files, the image's layers included, are owned by the
// mapped ids, so the container's root owns what the image's root owns.
// The overlay driver mounts the image's layers through idmapped mounts
// where the kernel can (no copy); otherwise containers/storage keeps a
// chowned copy of the image for these mappings. Later mounts (MountRootfs)
// use the same mappings.
func (s *Service) CreateRootfsMapped(ctx context.Context, id, name, imageRef string, m *IDMappings) (rootfs, imageID string, err error) {
	img, err := s.lookup(imageRef)
	if err != nil {
		return "", "", err
	}
	var opts *storage.ContainerOptions
	if m != nil {
		opts = &storage.ContainerOptions{IDMappingOptions: storagetypes.IDMappingOptions{UIDMap: toIDMap(m.UIDs), GIDMap: toIDMap(m.GIDs)}}
	}
	mp, err := s.createMounted(ctx, "rootfs", id, name, img.ID, opts)
	if err != nil {
		return "", "", err
	}
	return mp, img.ID, nil
}

// createMounted creates the storage container id on the image imageID,
// marked as crivm's (storageMarker), and mounts it (what names it in
// errors). On failure nothing is left in storage.
func (s *Service) createMounted(ctx context.Context, what, id, name, imageID string, opts *storage.ContainerOptions) (string, error) {
	if _, err := s.store.CreateContainer(id, []string{name}, imageID, "", storageMarker(what), opts); err != nil {
		return "", fmt.Errorf("creating storage container: %w", err)
	}
	mp, err := s.store.Mount(id, "")
	if err != nil {
		if derr := s.store.DeleteContainer(id); derr != nil {
			log.G(ctx).Warn("deleting storage container after a failed mount", "id", id, "err", derr)
		}
		return "", fmt.Errorf("mounting %s: %w", what, err)
	}
	return mp, nil
}

func toIDMap(ms []specs.LinuxIDMapping) []idtools.IDMap {
	out := make([]idtools.IDMap, len(ms))
	for i, m := range ms {
		out[i] = idtools.IDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)}
	}
	return out
}

// MountRootfs (re)mounts an existing container's rootfs, e.g. after a
// restart, and returns the mount point.
func (s *Service) MountRootfs(id string) (string, error) {
	mp, err := s.store.Mount(id, "")
	if err != nil {
		return "", fmt.Errorf("mounting rootfs: %w", err)
	}
	return mp, nil
}

// RemoveRootfs unmounts and deletes a container's writable layer. A missing
// container is not an error.
func (s *Service) RemoveRootfs(ctx context.Context, id string) error {
	return s.removeMounted("rootfs", id)
}

// removeMounted unmounts, whatever its mount count, and deletes the storage
// container id (what names it in errors). A missing one is not an error, so
// a retried removal never touches another container's mount.
func (s *Service) removeMounted(what, id string) error {
	if _, err := s.store.Unmount(id, true); err != nil && !gone(err) {
		return fmt.Errorf("unmounting %s: %w", what, err)
	}
	if err := s.store.DeleteContainer(id); err != nil && !gone(err) {
		return fmt.Errorf("deleting storage container: %w", err)
	}
	return nil
}

// gone reports errors that mean the storage container no longer exists.
func gone(err error) bool {
	return errors.Is(err, storage.ErrContainerUnknown) || errors.Is(err, storage.ErrNotAContainer) ||
		errors.Is(err, storage.ErrLayerUnknown)
}

// WritableLayerBytes is the disk space of a container's writable layer.
func (s *Service) WritableLayerBytes(id string) (uint64, error) {
	n, err := s.store.ContainerSize(id)
	if err != nil {
		return 0, fmt.Errorf("sizing container layer: %w", err)
	}
	return uint64(n), nil
}
