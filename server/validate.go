package server

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"unicode"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/podhost"
)

// The pod spec is hostile: a tenant writes it. What follows checks every
// path and string of a CRI request that reaches the host (the pod files,
// conmon's log path, runc's cgroups, CNI_ARGS, the guest's hostname) before
// anything is written or created. Each refusal is InvalidArgument and names
// the CRI field.

const (
	// maxNameBytes caps metadata names, namespaces and UIDs: a Kubernetes
	// DNS subdomain (the longest of them) is 253 bytes.
	maxNameBytes = 253
	// maxPathBytes is PATH_MAX.
	maxPathBytes = 4096
	// maxHostnameBytes is the kernel's nodename (64 bytes without the NUL),
	// the longest FQDN the kubelet sends with setHostnameAsFQDN.
	maxHostnameBytes = 64
	// maxLabelBytes is the longest RFC 1123 label.
	maxLabelBytes = 63
	// maxMetadataBytes caps the keys and values of labels plus annotations
	// together, as the API server does (TotalAnnotationSizeLimitB).
	maxMetadataBytes = 256 << 10
	// DNS: the kubelet sends at most 3 servers (glibc's MAXNS) and 32
	// searches of 2048 bytes in all (MaxDNSSearchPaths and
	// MaxDNSSearchListChars); servers and options get room to spare.
	maxDNSServers     = 16
	maxDNSSearches    = 32
	maxDNSSearchChars = 2048
	maxDNSOptions     = 32
	maxDNSEntryBytes  = 253
)

// validatePodFields checks the pod config's names, paths and strings; the
// caller has checked that metadata is present.
func validatePodFields(cfg *runtimeapi.PodSandboxConfig) error {
	md := cfg.GetMetadata()
	for _, f := range []struct{ field, value string }{
		{"metadata.name", md.GetName()},
		{"metadata.namespace", md.GetNamespace()},
		{"metadata.uid", md.GetUid()},
	} {
		if err := checkName("pod sandbox", f.field, f.value); err != nil {
			return err
		}
		// They become CNI_ARGS values, which ';' and '=' would split.
		if strings.ContainsAny(f.value, ";=") {
			return errdefs.InvalidArgument("pod sandbox %s %q: may not contain ';' or '='", f.field, f.value)
		}
	}
	if err := checkHostname(cfg); err != nil {
		return err
	}
	if err := checkLogDirectory(cfg.GetLogDirectory()); err != nil {
		return err
	}
	if err := checkCgroupParent(cfg.GetLinux().GetCgroupParent()); err != nil {
		return err
	}
	if err := checkDNS(cfg.GetDnsConfig()); err != nil {
		return err
	}
	return checkMetadataSize("pod sandbox", cfg.GetLabels(), cfg.GetAnnotations())
}

// validateContainerConfig checks what CreateContainer takes from the
// container config before it looks at the sandbox.
func validateContainerConfig(cfg *runtimeapi.ContainerConfig) error {
	if cfg.GetMetadata().GetName() == "" {
		return errdefs.InvalidArgument("container metadata.name is empty")
	}
	if err := checkName("container", "metadata.name", cfg.GetMetadata().GetName()); err != nil {
		return err
	}
	if err := checkLogPath(cfg.GetLogPath()); err != nil {
		return err
	}
	if err := checkImageVolumes(cfg.GetMounts()); err != nil {
		return err
	}
	return checkMetadataSize("container", cfg.GetLabels(), cfg.GetAnnotations())
}

// checkImageVolumes: an image volume (a mount with image set) names an
// image and no host_path; it is readonly (image volumes are read-only by
// definition: containerd and CRI-O refuse readonly false too); it does not
// ask for bidirectional propagation (nothing a container mounts may reach
// crivm's storage); its image_sub_path, when set, is a relative path that
// stays inside the image. A mount without an image has no image_sub_path.
func checkImageVolumes(ms []*runtimeapi.Mount) error {
	for _, m := range ms {
		dst, sub := m.GetContainerPath(), m.GetImageSubPath()
		if m.GetImage() == nil {
			if sub != "" {
				return errdefs.InvalidArgument("mount at %q: image_sub_path %q is set without an image", dst, sub)
			}
			continue
		}
		switch {
		case m.GetImage().GetImage() == "":
			return errdefs.InvalidArgument("image volume at %q: image.image is empty", dst)
		case m.GetHostPath() != "":
			return errdefs.InvalidArgument("image volume at %q: host_path %q must be empty when an image is set", dst, m.GetHostPath())
		case !m.GetReadonly():
			return errdefs.InvalidArgument("image volume at %q: readonly must be true: image volumes are read-only", dst)
		case m.GetPropagation() == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			return errdefs.InvalidArgument("image volume at %q: bidirectional propagation is not allowed: an image volume propagates no mount", dst)
		case sub == "":
		case len(sub) > maxPathBytes:
			return errdefs.InvalidArgument("image volume at %q: image_sub_path is %d bytes, more than %d", dst, len(sub), maxPathBytes)
		case hasControl(sub):
			return errdefs.InvalidArgument("image volume at %q: image_sub_path %q may not contain control characters", dst, sub)
		case !filepath.IsLocal(sub):
			return errdefs.InvalidArgument("image volume at %q: image_sub_path %q must be a relative path inside the image", dst, sub)
		}
	}
	return nil
}

// checkName refuses a name the host would misread: a path separator, a
// control character (NUL and newline included), whitespace, or more than
// maxNameBytes. Empty names are the caller's to refuse.
func checkName(kind, field, v string) error {
	switch {
	case len(v) > maxNameBytes:
		return errdefs.InvalidArgument("%s %s is %d bytes, more than %d", kind, field, len(v), maxNameBytes)
	case strings.Contains(v, "/"):
		return errdefs.InvalidArgument("%s %s %q: may not contain '/'", kind, field, v)
	case hasControlOrSpace(v):
		return errdefs.InvalidArgument("%s %s %q: may not contain whitespace or control characters", kind, field, v)
	}
	return nil
}

// checkHostname: a hostname the pod gives must be an RFC 1123 label (at
// most 63 bytes), or, as the kubelet sends with setHostnameAsFQDN, dotted
// labels of at most 64 bytes in all. Without one, the hostname is derived
// from the pod name (podhost.Derive), which must leave something.
func checkHostname(cfg *runtimeapi.PodSandboxConfig) error {
	h := cfg.GetHostname()
	if h == "" {
		if podhost.Derive(cfg.GetMetadata().GetName()) == "" {
			return errdefs.InvalidArgument("pod sandbox hostname is empty and metadata.name %q leaves none to derive", cfg.GetMetadata().GetName())
		}
		return nil
	}
	if len(h) > maxHostnameBytes {
		return errdefs.InvalidArgument("pod sandbox hostname %q is %d bytes, more than %d", h, len(h), maxHostnameBytes)
	}
	for _, label := range strings.Split(h, ".") {
		if !isDNS1123Label(label) {
			return errdefs.InvalidArgument("pod sandbox hostname %q: not an RFC 1123 DNS label (lower case letters, digits and '-', at most %d, starting and ending with a letter or digit)", h, maxLabelBytes)
		}
	}
	return nil
}

// isDNS1123Label is apimachinery's IsDNS1123Label:
// [a-z0-9]([-a-z0-9]*[a-z0-9])? of at most 63 bytes.
func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > maxLabelBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i != 0 && i != len(s)-1:
		default:
			return false
		}
	}
	return true
}

// checkLogDirectory: when set, the pod's log directory is an absolute,
// clean path.
func checkLogDirectory(dir string) error {
	switch {
	case dir == "":
		return nil
	case len(dir) > maxPathBytes:
		return errdefs.InvalidArgument("pod sandbox log_directory is %d bytes, more than %d", len(dir), maxPathBytes)
	case hasControl(dir):
		return errdefs.InvalidArgument("pod sandbox log_directory %q: may not contain control characters", dir)
	case !filepath.IsAbs(dir) || filepath.Clean(dir) != dir:
		return errdefs.InvalidArgument("pod sandbox log_directory %q: must be an absolute, clean path", dir)
	}
	return nil
}

// checkLogPath: a container's log path is relative to the pod's log
// directory and stays inside it ("ctr/0.log" as the kubelet sends it).
func checkLogPath(p string) error {
	if p == "" {
		return nil
	}
	switch {
	case len(p) > maxPathBytes:
		return errdefs.InvalidArgument("container log_path is %d bytes, more than %d", len(p), maxPathBytes)
	case hasControl(p):
		return errdefs.InvalidArgument("container log_path %q: may not contain control characters", p)
	case filepath.IsAbs(p):
		return errdefs.InvalidArgument("container log_path %q: must be relative to the pod's log_directory", p)
	}
	if !filepath.IsLocal(p) || filepath.Clean(p) == "." {
		return errdefs.InvalidArgument("container log_path %q: must name a file inside the pod's log_directory", p)
	}
	return nil
}

// checkCgroupParent accepts what oci's cgroupsPath turns into a cgroup
// under the hierarchy: "" (the daemon's default), a clean absolute path
// ("/kubepods/burstable/pod<uid>", "/kubepods.slice/...") or a systemd
// slice name ("kubepods-burstable-pod<uid>.slice"). No ".." element, no
// control character.
func checkCgroupParent(p string) error {
	switch {
	case p == "":
		return nil
	case len(p) > maxPathBytes:
		return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent is %d bytes, more than %d", len(p), maxPathBytes)
	case hasControl(p):
		return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent %q: may not contain control characters", p)
	case hasDotDot(p):
		return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent %q: may not contain a '..' element", p)
	case filepath.IsAbs(p):
		if filepath.Clean(p) != p {
			return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent %q: must be a clean path", p)
		}
		return nil
	case !strings.Contains(p, "/") && strings.HasSuffix(p, ".slice") && p != ".slice":
		return nil
	}
	return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent %q: must be an absolute path or a systemd slice name", p)
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

// checkDNS: servers are IP addresses; searches and options are single
// words (each is written on a resolv.conf line, so a newline would add a
// line); their counts are capped.
func checkDNS(dns *runtimeapi.DNSConfig) error {
	if dns == nil {
		return nil
	}
	if n := len(dns.GetServers()); n > maxDNSServers {
		return errdefs.InvalidArgument("pod sandbox dns_config.servers: %d entries, more than %d", n, maxDNSServers)
	}
	for i, s := range dns.GetServers() {
		if _, err := netip.ParseAddr(s); err != nil {
			return errdefs.InvalidArgument("pod sandbox dns_config.servers[%d] %q: not an IP address", i, s)
		}
	}
	if n := len(dns.GetSearches()); n > maxDNSSearches {
		return errdefs.InvalidArgument("pod sandbox dns_config.searches: %d entries, more than %d", n, maxDNSSearches)
	}
	if n := len(strings.Join(dns.GetSearches(), " ")); n > maxDNSSearchChars {
		return errdefs.InvalidArgument("pod sandbox dns_config.searches: %d bytes, more than %d", n, maxDNSSearchChars)
	}
	if err := checkDNSWords("searches", dns.GetSearches()); err != nil {
		return err
	}
	if n := len(dns.GetOptions()); n > maxDNSOptions {
		return errdefs.InvalidArgument("pod sandbox dns_config.options: %d entries, more than %d", n, maxDNSOptions)
	}
	return checkDNSWords("options", dns.GetOptions())
}

func checkDNSWords(field string, words []string) error {
	for i, w := range words {
		switch {
		case w == "":
			return errdefs.InvalidArgument("pod sandbox dns_config.%s[%d] is empty", field, i)
		case len(w) > maxDNSEntryBytes:
			return errdefs.InvalidArgument("pod sandbox dns_config.%s[%d] is %d bytes, more than %d", field, i, len(w), maxDNSEntryBytes)
		case hasControlOrSpace(w):
			return errdefs.InvalidArgument("pod sandbox dns_config.%s[%d] %q: may not contain whitespace or control characters", field, i, w)
		}
	}
	return nil
}

// checkMetadataSize caps labels plus annotations at maxMetadataBytes
// (keys and values) and refuses a NUL in a key.
func checkMetadataSize(kind string, labels, annotations map[string]string) error {
	total := 0
	for _, m := range []struct {
		field string
		kv    map[string]string
	}{{"labels", labels}, {"annotations", annotations}} {
		for k, v := range m.kv {
			if strings.IndexByte(k, 0) >= 0 {
				return errdefs.InvalidArgument("%s %s: key %q contains NUL", kind, m.field, k)
			}
			total += len(k) + len(v)
		}
	}
	if total > maxMetadataBytes {
		return errdefs.InvalidArgument("%s labels and annotations: %s in all, more than %s", kind, sizeString(total), sizeString(maxMetadataBytes))
	}
	return nil
}

func sizeString(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

func hasControlOrSpace(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0
}
