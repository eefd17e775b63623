package server

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/image"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/trust"
)

// Image volumes (the Kubernetes image volume source): a CRI mount with an
// image is that image's rootfs, mounted read-only by the server
// (image.CreateVolume) and bound into the container by the handler from
// the descriptor the server opened. They are crivm's own storage, never
// hostPaths: the mount policy does not judge them, the trust policy judges
// their images as it does the container's.
//
// Invariants: a container record lists every image volume mounted for it
// (c.ImageVolumes, each a storage container of its own) from CreateContainer
// until RemoveContainer removes them; a failed CreateContainer leaves none;
// while one exists, its image cannot be removed.

// decideImageVolumes judges the image of each image volume of cfg with the
// trust policy, as CreateContainer judges the container's image: the
// volume's content runs in the pod (it is not noexec).
func (s *RuntimeService) decideImageVolumes(ctx context.Context, v trust.Verdict, in trust.PodInput, cfg *runtimeapi.ContainerConfig) error {
	for _, m := range cfg.GetMounts() {
		if m.GetImage() == nil {
			continue
		}
		name, err := s.imageName(ctx, m.GetImage())
		if err != nil {
			return fmt.Errorf("image volume at %q: %w", m.GetContainerPath(), err)
		}
		if err := s.deps.Trust.DecideImage(ctx, v, in, name); err != nil {
			return fmt.Errorf("container %q refused: image volume at %q: %w", cfg.GetMetadata().GetName(), m.GetContainerPath(), err)
		}
	}
	return nil
}

// mountImageVolumes mounts each image volume of cfg (owned by the ids of
// mappings, the pod's user namespace, when set), records it in
// c.ImageVolumes, and opens what the container gets (the image's root or
// its image_sub_path). It returns the handler's view of them, by mount
// index; the caller closes their files. On failure it has removed what it
// mounted.
func (s *RuntimeService) mountImageVolumes(ctx context.Context, c *store.Container, cfg *runtimeapi.ContainerConfig, mappings *image.IDMappings) (map[int]handlers.ImageVolume, error) {
	out := map[int]handlers.ImageVolume{}
	for i, m := range cfg.GetMounts() {
		if m.GetImage() == nil {
			continue
		}
		v, err := s.mountImageVolume(ctx, c, i, m, mappings)
		if err != nil {
			closeImageVolumes(out)
			err = fmt.Errorf("image volume at %q: %w", m.GetContainerPath(), err)
			return nil, errors.Join(err, s.removeImageVolumes(ctx, c))
		}
		out[i] = v
	}
	return out, nil
}

// mountImageVolume mounts m, the i-th mount of c's config, and records it in
// c.ImageVolumes before it opens what the container gets.
func (s *RuntimeService) mountImageVolume(ctx context.Context, c *store.Container, i int, m *runtimeapi.Mount, mappings *image.IDMappings) (handlers.ImageVolume, error) {
	id := store.NewID()
	vol, err := s.deps.Images.CreateVolume(ctx, id, fmt.Sprintf("%s-image-volume-%d", c.Name, i), m.GetImage().GetImage(), mappings)
	if err != nil {
		return handlers.ImageVolume{}, err
	}
	c.ImageVolumes = append(c.ImageVolumes, store.ImageVolume{Mount: i, ImageID: vol.ImageID, StorageID: id, MountPoint: vol.Dir})
	f, p, err := image.OpenVolumePath(vol.Dir, m.GetImageSubPath())
	if err != nil {
		return handlers.ImageVolume{}, fmt.Errorf("image %s: %w", vol.ImageID, err)
	}
	return handlers.ImageVolume{Path: p, File: f}, nil
}

// removeImageVolumes unmounts and deletes c's image volumes. Each removal is
// by the volume's own storage ID and idempotent, so a retry, after a
// partial failure or a daemon restart, releases nothing twice.
func (s *RuntimeService) removeImageVolumes(ctx context.Context, c *store.Container) error {
	var errs []error
	for _, v := range c.ImageVolumes {
		if err := s.deps.Images.RemoveVolume(ctx, v.StorageID); err != nil {
			errs = append(errs, fmt.Errorf("removing the image volume of image %s: %w", v.ImageID, err))
		}
	}
	return errors.Join(errs...)
}

func closeImageVolumes(vols map[int]handlers.ImageVolume) {
	for _, v := range vols {
		v.File.Close()
	}
}

// usesImage reports whether c runs image id or mounts it as a volume.
func usesImage(c *store.Container, id string) bool {
	return c.ImageRef == id || slices.ContainsFunc(c.ImageVolumes, func(v store.ImageVolume) bool { return v.ImageID == id })
}

// statusMounts is ContainerStatus.mounts: the config's mounts, each image
// volume's image with image_ref set to the ID of the image mounted (what
// PullImage returned for it).
func statusMounts(ms []*runtimeapi.Mount, vols []store.ImageVolume) []*runtimeapi.Mount {
	out := slices.Clone(ms)
	for _, v := range vols {
		if v.Mount >= len(out) || out[v.Mount].GetImage() == nil {
			continue
		}
		m := proto.Clone(out[v.Mount]).(*runtimeapi.Mount)
		m.Image.ImageRef = v.ImageID
		out[v.Mount] = m
	}
	return out
}
