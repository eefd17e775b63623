// Package podhost derives a pod's hostname from its CRI config, the way the
// kubelet does. server/ (the pod files) and the vm handler (the guest's
// hostname) share it, so both see the same name.
package podhost

import (
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// MaxLabel is the longest hostname derived from a pod name: an RFC 1123
// label, which also fits the kernel's 64-byte nodename.
const MaxLabel = 63

// Hostname is the pod's hostname: the config's when set (the caller
// validates it), else Derive of the pod name.
func Hostname(cfg *runtimeapi.PodSandboxConfig) string {
	if h := cfg.GetHostname(); h != "" {
		return h
	}
	return Derive(cfg.GetMetadata().GetName())
}

// Derive is the kubelet's fallback (GeneratePodHostNameAndDomain): the pod
// name, truncated to 63 bytes, with trailing '-' and '.' trimmed after a
// truncation. It is "" only for a name that truncates to nothing.
func Derive(name string) string {
	if len(name) <= MaxLabel {
		return name
	}
	return strings.TrimRight(name[:MaxLabel], "-.")
}
