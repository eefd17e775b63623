package trust

import (
	"regexp"

	"go.podman.io/image/v5/docker/reference"

	"github.com/crivm/crivm/internal/errdefs"
)

// imageName is a normalized image reference as rules see it.
type imageName struct {
	full   string // docker.io/library/busybox:latest
	domain string // docker.io
	repo   string // docker.io/library/busybox
}

var imageIDRE = regexp.MustCompile(`^(sha256:)?[0-9a-f]{64}$`)

// parseImage normalizes ref the way docker and the kubelet do: busybox is
// docker.io/library/busybox:latest; the first component is a registry only
// if it has a '.' or ':' or is localhost. An image ID is refused: it names
// no registry, so no rule could judge it.
func parseImage(ref string) (imageName, error) {
	if imageIDRE.MatchString(ref) {
		return imageName{}, errdefs.InvalidArgument("image %q is an image ID; trust rules judge image names, so pass a repo tag or digest", ref)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return imageName{}, errdefs.InvalidArgument("parsing image reference %q: %w", ref, err)
	}
	return imageName{
		full:   reference.TagNameOnly(named).String(),
		domain: reference.Domain(named),
		repo:   named.Name(),
	}, nil
}
