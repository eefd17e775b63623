package image

import (
	"regexp"
	"strings"

	"go.podman.io/image/v5/docker/reference"

	"github.com/crivm/crivm/internal/errdefs"
)

var idRE = regexp.MustCompile(`^(sha256:)?([0-9a-f]{64})$`)

// imageID returns the 64-hex ID when s is an image ID, with or without the
// sha256: prefix.
func imageID(s string) (string, bool) {
	m := idRE.FindStringSubmatch(s)
	if m == nil {
		return "", false
	}
	return m[2], true
}

// pullCandidates returns the fully qualified references a pull of s tries,
// in order. A fully qualified name yields itself; a short name is expanded
// over the search registries, or by Docker's rule when there are none. A
// reference without tag or digest gets :latest.
func (s *Service) pullCandidates(ref string) ([]reference.Named, error) {
	if ref == "" {
		return nil, errdefs.InvalidArgument("image reference is empty")
	}
	if _, ok := imageID(ref); ok {
		return nil, errdefs.InvalidArgument("cannot pull %q: it is an image ID, not a reference", ref)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, errdefs.InvalidArgument("parsing image reference %q: %w", ref, err)
	}
	named = reference.TagNameOnly(named)
	if len(s.opts.SearchRegistries) == 0 || isQualified(ref) {
		return []reference.Named{named}, nil
	}
	// Short name with search registries: try each, keeping the path as given.
	path := reference.Path(named)
	if !strings.Contains(strings.SplitN(ref, ":", 2)[0], "/") {
		path = strings.TrimPrefix(path, "library/")
	}
	suffix := strings.TrimPrefix(named.String(), reference.Domain(named)+"/"+reference.Path(named))
	var out []reference.Named
	for _, reg := range s.opts.SearchRegistries {
		n, err := reference.ParseNormalizedNamed(reg + "/" + path + suffix)
		if err != nil {
			return nil, errdefs.InvalidArgument("expanding %q with search registry %q: %w", ref, reg, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// isQualified reports whether ref names its registry, as Docker decides it:
// the first component holds a '.' or ':', or is localhost.
func isQualified(ref string) bool {
	first, _, found := strings.Cut(ref, "/")
	if !found {
		return false
	}
	return strings.ContainsAny(first, ".:") || first == "localhost"
}

// normalizeName turns a user's image name into the form stored as an image
// name: docker.io/library/busybox:latest, or name@digest.
func normalizeName(ref string) (reference.Named, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, errdefs.InvalidArgument("parsing image reference %q: %w", ref, err)
	}
	return reference.TagNameOnly(named), nil
}
