package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.podman.io/storage"
	storagetypes "go.podman.io/storage/types"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
)

// Image volumes (the Kubernetes image volume source, KEP-4639): an image's
// rootfs, every layer of it, mounted read-only as a container's volume.
//
// Each volume is a storage container of its own on the image, mounted with
// "ro": the overlay driver then stacks the image's layers as lower
// directories with no upper one, so nothing in the mount is writable. As a
// storage container it keeps containers/storage from deleting the image
// while it exists (ErrImageUsedByContainer), and it is unmounted and deleted
// by its own ID: a removal that is retried, or that runs after a daemon
// restart or a reboot, never releases another volume's mount.

// volumeMountOptions are the overlay mount options of an image volume.
var volumeMountOptions = []string{"ro", "nosuid", "nodev"}

// Volume is a mounted image volume.
type Volume struct {
	ImageID string
	// Dir is the mount point: the image's root directory.
	Dir string
}

// CreateVolume creates the image volume id (a storage container named name)
// on the image imageRef names (an ID, name:tag or name@digest) and mounts
// it; with m, for a pod in a user namespace, its files are owned by the
// mapped ids, as CreateRootfsMapped's. On failure nothing is left in
// storage.
func (s *Service) CreateVolume(ctx context.Context, id, name, imageRef string, m *IDMappings) (*Volume, error) {
	img, err := s.lookup(imageRef)
	if err != nil {
		return nil, err
	}
	opts := &storage.ContainerOptions{MountOpts: volumeMountOptions}
	if m != nil {
		opts.IDMappingOptions = storagetypes.IDMappingOptions{UIDMap: toIDMap(m.UIDs), GIDMap: toIDMap(m.GIDs)}
	}
	dir, err := s.createMounted(ctx, "image volume", id, name, img.ID, opts)
	if err != nil {
		return nil, err
	}
	return &Volume{ImageID: img.ID, Dir: dir}, nil
}

// RemoveVolume unmounts and deletes the image volume id. A missing volume is
// not an error.
func (s *Service) RemoveVolume(ctx context.Context, id string) error {
	return s.removeMounted("image volume", id)
}

// OpenVolumePath opens sub, a path relative to the image volume mounted at
// dir ("" for its root), as an O_PATH descriptor and returns it with the
// path it was found at. sub is resolved as if dir were the root
// (RESOLVE_IN_ROOT): ".." and the image's symlinks, absolute ones included,
// cannot leave the image, and no mount is crossed. A missing sub is
// NotFound.
func OpenVolumePath(dir, sub string) (*os.File, string, error) {
	root, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("opening the image volume: %w", err)
	}
	defer root.Close()
	base, err := fdPath(int(root.Fd()))
	if err != nil {
		return nil, "", err
	}
	rel := sub
	if rel == "" {
		rel = "."
	}
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	// EAGAIN: a rename or mount somewhere on the host raced a ".." of the
	// lookup, which RESOLVE_IN_ROOT then cannot vouch for; the kernel asks
	// for a retry.
	fd, err := -1, error(unix.EAGAIN)
	for try := 0; try < 64 && (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)); try++ {
		fd, err = unix.Openat2(int(root.Fd()), rel, how)
	}
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return nil, "", errdefs.NotFound("sub path %q does not exist in the image", sub)
	case err != nil:
		return nil, "", fmt.Errorf("opening sub path %q in the image: %w", sub, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, rel))
	p, err := fdPath(fd)
	if err != nil {
		f.Close()
		return nil, "", err
	}
	if p != base && !strings.HasPrefix(p, base+"/") {
		f.Close()
		return nil, "", fmt.Errorf("sub path %q resolved to %q, outside the image volume %q", sub, p, base)
	}
	return f, p, nil
}

// fdPath is the path the descriptor fd was opened at, as the kernel
// reports it.
func fdPath(fd int) (string, error) {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", fmt.Errorf("reading the image volume's path: %w", err)
	}
	if !filepath.IsAbs(p) || strings.HasSuffix(p, " (deleted)") {
		return "", fmt.Errorf("image volume path %q: not a path in crivm's mount namespace", p)
	}
	return p, nil
}
