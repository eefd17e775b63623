package image

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/docker/reference"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/storage"

	"github.com/crivm/crivm/internal/errdefs"
)

// Image is what the CRI reports about one stored image.
type Image struct {
	ID          string
	RepoTags    []string
	RepoDigests []string
	Size        uint64
	// UID is set when the config's USER is numeric; Username otherwise.
	UID      *int64
	Username string
	Pinned   bool
	// Config is the image's OCI config.
	Config *imgspecv1.Image
}

// imageInfo is the immutable part of Image, cached per image ID.
type imageInfo struct {
	size   uint64
	config *imgspecv1.Image
}

// List returns every stored image, or those matching filter (a name, tag,
// digest or ID) when it is not empty.
func (s *Service) List(ctx context.Context, filter string) ([]Image, error) {
	if filter != "" {
		img, err := s.Status(ctx, filter)
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []Image{*img}, nil
	}
	imgs, err := s.store.Images()
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	out := make([]Image, 0, len(imgs))
	for i := range imgs {
		img, err := s.describe(ctx, &imgs[i])
		if err != nil {
			if errors.Is(err, storage.ErrImageUnknown) {
				continue // removed meanwhile
			}
			return nil, err
		}
		out = append(out, *img)
	}
	return out, nil
}

// Status returns the image that ref names: an ID (or unique ID prefix), a
// name:tag (short names normalised), or name@digest.
func (s *Service) Status(ctx context.Context, ref string) (*Image, error) {
	img, err := s.lookup(ref)
	if err != nil {
		return nil, err
	}
	return s.describe(ctx, img)
}

// Resolve returns the ID of the image ref names.
func (s *Service) Resolve(ref string) (string, error) {
	img, err := s.lookup(ref)
	if err != nil {
		return "", err
	}
	return img.ID, nil
}

func (s *Service) lookup(ref string) (*storage.Image, error) {
	if ref == "" {
		return nil, errdefs.InvalidArgument("image reference is empty")
	}
	if id, ok := imageID(ref); ok {
		img, err := s.store.Image(id)
		if err != nil {
			return nil, notFound(ref, err)
		}
		return img, nil
	}
	named, err := normalizeName(ref)
	if err != nil {
		// Perhaps an ID prefix, which containers/storage resolves.
		if img, serr := s.store.Image(ref); serr == nil && strings.HasPrefix(img.ID, ref) {
			return img, nil
		}
		return nil, err
	}
	if canon, ok := named.(reference.Canonical); ok {
		imgs, err := s.store.ImagesByDigest(canon.Digest())
		if err != nil {
			return nil, notFound(ref, err)
		}
		for _, img := range imgs {
			for _, n := range img.Names {
				if nn, err := reference.ParseNormalizedNamed(n); err == nil && nn.Name() == canon.Name() {
					return img, nil
				}
			}
		}
		return nil, errdefs.NotFound("image %q not found", ref)
	}
	img, err := s.store.Image(named.String())
	if err != nil {
		return nil, notFound(ref, err)
	}
	return img, nil
}

func notFound(ref string, err error) error {
	if errors.Is(err, storage.ErrImageUnknown) || errors.Is(err, storage.ErrNotAnImage) {
		return errdefs.NotFound("image %q not found", ref)
	}
	return fmt.Errorf("looking up image %q: %w", ref, err)
}

func (s *Service) describe(ctx context.Context, img *storage.Image) (*Image, error) {
	info, err := s.cachedInfo(ctx, img)
	if err != nil {
		return nil, err
	}
	out := &Image{ID: img.ID, Size: info.size, Config: info.config}
	seen := map[string]bool{}
	for _, n := range img.Names {
		named, err := reference.ParseNormalizedNamed(n)
		if err != nil {
			continue
		}
		if _, ok := named.(reference.Canonical); !ok {
			out.RepoTags = append(out.RepoTags, named.String())
		}
		for _, d := range append([]digest.Digest{img.Digest}, img.Digests...) {
			if d == "" {
				continue
			}
			rd := named.Name() + "@" + d.String()
			if !seen[rd] {
				seen[rd] = true
				out.RepoDigests = append(out.RepoDigests, rd)
			}
		}
		if slices.Contains(s.opts.PinnedImages, named.String()) {
			out.Pinned = true
		}
	}
	if info.config != nil {
		user, _, _ := strings.Cut(info.config.Config.User, ":")
		if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
			out.UID = &uid
		} else if user != "" {
			out.Username = user
		} else {
			zero := int64(0)
			out.UID = &zero
		}
	}
	return out, nil
}

func (s *Service) cachedInfo(ctx context.Context, img *storage.Image) (*imageInfo, error) {
	s.mu.Lock()
	info, ok := s.info[img.ID]
	s.mu.Unlock()
	if ok {
		return info, nil
	}
	ref, err := istorage.Transport.NewStoreReference(s.store, nil, img.ID)
	if err != nil {
		return nil, fmt.Errorf("referencing image %s: %w", img.ID, err)
	}
	src, err := ref.NewImage(ctx, &s.sys)
	if err != nil {
		return nil, fmt.Errorf("opening image %s: %w", img.ID, err)
	}
	defer src.Close()
	cfg, err := src.OCIConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading config of image %s: %w", img.ID, err)
	}
	size, err := s.store.ImageSize(img.ID)
	if err != nil {
		return nil, fmt.Errorf("sizing image %s: %w", img.ID, err)
	}
	info = &imageInfo{size: uint64(size), config: cfg}
	s.mu.Lock()
	s.info[img.ID] = info
	s.mu.Unlock()
	return info, nil
}
