package main

import (
	"regexp"
	"slices"
	"strings"
)

// skip is one critest spec (or group of specs) that `make critest` does not
// run, with the reason. This table is the only skip list: the runner passes
// each entry that applies to a run as one --ginkgo.skip, and checks before
// running that every entry still matches a spec of this critest.
type skip struct {
	// Spec is a substring of the spec's full text, as critest prints it
	// ("[k8s.io] Image Manager public image with digest ..."); it is
	// matched literally.
	Spec string
	// Runs are the runs it applies to; nil means every run.
	Runs []string
	// Reason is printed with the skip list.
	Reason string
}

const (
	runRunc = "runc"
	runVM   = "vm"
)

var vmOnly = []string{runVM}

var skips = []skip{
	{Spec: "public image with digest should be pulled and removed",
		Reason: "pulls gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2...: an upstream image that cannot be rebuilt bit for bit offline, and these hosts cannot reach gcr.io"},
	{Spec: "[k8s.io] AppArmor ",
		Reason: "AppArmor is not enabled on these hosts (no /sys/module/apparmor); the specs would skip themselves"},
	{Spec: "benchmark",
		Reason: "benchmarks are measurements, not conformance: critest itself skips them unless run with -benchmark"},

	// A VM pod refuses, by design, what would reach past its VM: the host's
	// network, PID and IPC namespaces (handlers/vm checkHostNamespaces
	// answers FailedPrecondition) and mount propagation from the host
	// (docs/security.md: no propagation across the VM boundary).
	{Spec: "should support HostPID", Runs: vmOnly,
		Reason: "host PID namespace: a VM pod has its own kernel; the vm handler refuses NamespaceMode_NODE for PID"},
	{Spec: "should support HostIpc is true", Runs: vmOnly,
		Reason: "host IPC namespace: a VM pod has its own kernel; the vm handler refuses NamespaceMode_NODE for IPC"},
	{Spec: "should support HostNetwork is true", Runs: vmOnly,
		Reason: "host network namespace: the vm handler refuses NamespaceMode_NODE for the network"},
	{Spec: "should support portforward in host network", Runs: vmOnly,
		Reason: "needs a host-network pod, which the vm handler refuses"},
	{Spec: "mount with 'rshared' should support propagation from host to container and vice versa", Runs: vmOnly,
		Reason: "mount propagation between host and guest: a VM pod's volumes cross the VM boundary over 9p/virtio-fs, with no propagation by design"},
	{Spec: "mount with 'rslave' should support propagation from host to container", Runs: vmOnly,
		Reason: "mount propagation from the host into a VM pod: none by design (see rshared)"},
	// critest skips these itself on the vm run ("no runtime handler found
	// which supports user namespaces"); listed for the reason.
	{Spec: "[k8s.io] Security Context UserNamespaces ", Runs: vmOnly,
		Reason: "the vm handler offers no user namespaces (its RuntimeHandlerFeatures.user_namespaces is false, as Kata's): the pod's boundary is its VM, and the runc handler's way (idmapped mounts made on the host for runc in the pod's user namespace) has no guest side yet"},
}

// skipsFor returns the entries that apply to run.
func skipsFor(run string) []skip {
	var out []skip
	for _, s := range skips {
		if s.Runs == nil || slices.Contains(s.Runs, run) {
			out = append(out, s)
		}
	}
	return out
}

// pattern is the entry as a --ginkgo.skip regular expression.
func (s skip) pattern() string { return regexp.QuoteMeta(s.Spec) }

// matches reports whether the entry skips the spec with this full text.
func (s skip) matches(spec string) bool { return strings.Contains(spec, s.Spec) }
