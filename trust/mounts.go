package trust

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// The mount policy: hostPath mounts and host devices of untrusted pods are
// denied by default (docs: ARCHITECTURE.md, "The VM boundary").
//
// A mount is allowed when its source, opened by fd with symlinks followed
// as the runtime would follow them, resolves to a path at or below
//   - the pod's own kubelet directory, kubelet_root_dir/pods/<pod UID>
//     (emptyDir, configMap, secret, projected and CSI volumes, etc-hosts,
//     termination logs), or
//   - an entry of untrusted_allowed_host_paths, or
//   - an entry of allow_host_paths of the rule that made the pod untrusted,
//
// unless it overlaps a protected path (crivm's root and runroot, the other
// pods' kubelet directories, /proc, /sys, /dev), which no allowlist opens.
// A missing source is refused, never created. A device is allowed only when
// listed in untrusted_allowed_devices. Trusted pods are not restricted.

// MountSource is a mount source the policy allowed: File is an O_PATH
// descriptor of the source and Resolved the path it was found at when the
// policy judged it. Whoever mounts it uses the descriptor, so a symlink
// swapped after the check is not followed.
type MountSource struct {
	Resolved string
	File     *os.File
}

// MountDecision is the policy's judgement of one hostPath mount or device.
type MountDecision struct {
	// HostPath is the CRI host_path, exactly as given.
	HostPath string
	// Device is set for a CRI device, unset for a mount.
	Device bool
	// Resolved is the path the source resolved to; "" for devices and for
	// sources that could not be opened.
	Resolved string
	Allowed  bool
	// Rule is what decided, e.g. `untrusted_allowed_host_paths entry
	// "/srv/shared"` or `deny by default (pod untrusted by rule "tenants")`.
	Rule string
	// Err is the refusal (nil when allowed): FailedPrecondition, or
	// InvalidArgument for a host_path that is not absolute.
	Err error
	// File is the allowed mount's O_PATH descriptor; the caller closes it.
	File *os.File
}

// Kinds of MountDecision, as metric labels and audit events.
const (
	mountKind  = "mount"
	deviceKind = "device"
)

func (d *MountDecision) kind() string {
	if d.Device {
		return deviceKind
	}
	return mountKind
}

// JudgeMounts decides each hostPath mount and each device of a container in
// the pod in, whose sandbox verdict is v. A host_path given twice is judged
// once. For a trusted v it decides nothing and returns nil. The caller
// closes the File of every allowed decision (CloseDecisions).
func (c *Classifier) JudgeMounts(v Verdict, in PodInput, mounts []*runtimeapi.Mount, devices []*runtimeapi.Device) []MountDecision {
	if v.Trusted {
		return nil
	}
	p := c.mountPolicy(v, in)
	var out []MountDecision
	seen := map[string]bool{}
	for _, m := range mounts {
		hp := m.GetHostPath()
		if hp == "" && m.GetImage() != nil {
			continue // an image volume: crivm's own storage, mounted by the server
		}
		if seen[hp] {
			continue
		}
		seen[hp] = true
		out = append(out, p.judgeMount(hp))
	}
	seenDev := map[string]bool{}
	for _, d := range devices {
		hp := d.GetHostPath()
		if seenDev[hp] {
			continue
		}
		seenDev[hp] = true
		out = append(out, p.judgeDevice(hp))
	}
	return out
}

// CheckMounts is JudgeMounts for CreateContainer: the allowed sources keyed
// by host_path (nil for a trusted pod, non-nil for an untrusted one), or the
// first refusal, with every descriptor closed.
func (c *Classifier) CheckMounts(v Verdict, in PodInput, mounts []*runtimeapi.Mount, devices []*runtimeapi.Device) (map[string]MountSource, error) {
	if v.Trusted {
		return nil, nil
	}
	return sourcesOf(c.JudgeMounts(v, in, mounts, devices))
}

// DecideMounts is CheckMounts plus counting every decision and recording
// every refusal in the audit log. The server calls it at CreateContainer,
// before any rootfs, handler or mount work, with the sandbox's verdict.
func (c *Classifier) DecideMounts(ctx context.Context, v Verdict, in PodInput, container string, mounts []*runtimeapi.Mount, devices []*runtimeapi.Device) (map[string]MountSource, error) {
	if v.Trusted {
		return nil, nil
	}
	ds := c.JudgeMounts(v, in, mounts, devices)
	for i := range ds {
		d := &ds[i]
		c.mounts.WithLabelValues(d.kind(), outcome(d.Err)).Inc()
		if d.Err == nil {
			continue
		}
		log.G(ctx).Warn("hostPath refused for an untrusted pod", "pod", in.Namespace+"/"+in.Name, "container", container,
			"kind", d.kind(), "host_path", d.HostPath, "resolved", d.Resolved, "rule", d.Rule)
		if err := c.audit.RecordMount(ctx, in, v, container, *d); err != nil {
			log.G(ctx).Warn("writing trust audit log", "error", err)
		}
	}
	return sourcesOf(ds)
}

// sourcesOf turns an untrusted pod's decisions into sources (non-nil), or
// closes them all and returns the first refusal.
func sourcesOf(ds []MountDecision) (map[string]MountSource, error) {
	for _, d := range ds {
		if d.Err != nil {
			CloseDecisions(ds)
			if n := refusals(ds); n > 1 {
				return nil, fmt.Errorf("%w (and %d more refused)", d.Err, n-1)
			}
			return nil, d.Err
		}
	}
	srcs := make(map[string]MountSource, len(ds))
	for _, d := range ds {
		if !d.Device {
			srcs[d.HostPath] = MountSource{Resolved: d.Resolved, File: d.File}
		}
	}
	return srcs, nil
}

func refusals(ds []MountDecision) int {
	n := 0
	for _, d := range ds {
		if d.Err != nil {
			n++
		}
	}
	return n
}

// CloseDecisions closes the descriptors of ds.
func CloseDecisions(ds []MountDecision) {
	for i := range ds {
		if ds[i].File != nil {
			ds[i].File.Close()
			ds[i].File = nil
		}
	}
}

// CloseSources closes the descriptors of srcs.
func CloseSources(srcs map[string]MountSource) {
	for _, s := range srcs {
		if s.File != nil {
			s.File.Close()
		}
	}
}

// DefaultKubeletRootDir is kubelet_root_dir when a config leaves it empty.
const DefaultKubeletRootDir = "/var/lib/kubelet"

// mountPolicy is the policy for one container: its allowances, resolved.
type mountPolicy struct {
	podDir    string // "" when the pod's UID cannot name a directory
	allowed   []allowance
	protected []allowance
	devices   []string
	untrusted string // why the pod is untrusted, for messages
}

// allowance is a prefix and how to name it in messages.
type allowance struct {
	prefix, name string
}

func (c *Classifier) mountPolicy(v Verdict, in PodInput) *mountPolicy {
	rt := &c.cfg.Runtime
	kroot := rt.KubeletRootDir
	if kroot == "" {
		kroot = DefaultKubeletRootDir
	}
	// /var/lib may be a symlink: compare with the kubelet root's real
	// path. It is resolved on every check, as it may appear after start-up.
	kroots := resolvedForms(kroot)
	p := &mountPolicy{devices: rt.UntrustedAllowedDevices}
	if validUID(in.UID) {
		p.podDir = filepath.Join(kroots[len(kroots)-1], "pods", in.UID)
	}
	for _, a := range rt.UntrustedAllowedHostPaths {
		p.allowed = append(p.allowed, allowance{a, fmt.Sprintf("untrusted_allowed_host_paths entry %q", a)})
	}
	if r := c.policy.Load().ruleNamed(v.Rule); r != nil && !r.trusted {
		for _, a := range r.allowHostPaths {
			p.allowed = append(p.allowed, allowance{a, fmt.Sprintf("allow_host_paths entry %q of rule %q", a, r.name)})
		}
	}
	for _, pr := range []allowance{
		{c.cfg.Root, "crivm's root"}, {c.cfg.Runroot, "crivm's runroot"},
		{filepath.Join(kroot, "pods"), "the kubelet's pod directories (other pods' volumes)"},
		{"/proc", "the host's /proc"}, {"/sys", "the host's /sys"}, {"/dev", "the host's /dev"},
	} {
		if pr.prefix == "" || !filepath.IsAbs(pr.prefix) {
			continue
		}
		for _, f := range resolvedForms(pr.prefix) {
			p.protected = append(p.protected, allowance{f, fmt.Sprintf("%s %q", pr.name, f)})
		}
	}
	switch {
	case v.Rule != "":
		p.untrusted = fmt.Sprintf("pod untrusted by rule %q", v.Rule)
	case len(v.Reasons) > 0:
		p.untrusted = "pod untrusted by " + v.Reasons[0]
	default:
		p.untrusted = "pod untrusted"
	}
	return p
}

// resolvedForms is p cleaned and, when it differs, its real path (last).
func resolvedForms(p string) []string {
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil && r != p && filepath.IsAbs(r) {
		return []string{p, r}
	}
	return []string{p}
}

// validUID reports whether uid names exactly one directory below pods/.
func validUID(uid string) bool {
	return uid != "" && uid != "." && uid != ".." && !strings.ContainsAny(uid, "/\x00")
}

func (p *mountPolicy) judgeMount(hp string) MountDecision {
	d := MountDecision{HostPath: hp}
	refuse := func(rule string, err error) MountDecision {
		if d.File != nil {
			d.File.Close()
			d.File = nil
		}
		d.Rule, d.Err = rule, err
		return d
	}
	if !filepath.IsAbs(hp) {
		return refuse("absolute paths only", errdefs.InvalidArgument("mount source %q is not an absolute path", hp))
	}
	f, resolved, err := openResolved(hp)
	if err != nil {
		return refuse("sources must exist", err)
	}
	d.File, d.Resolved = f, resolved

	if p.podDir != "" && within(resolved, p.podDir) {
		d.Allowed, d.Rule = true, fmt.Sprintf("the pod's own kubelet directory %q", p.podDir)
		return d
	}
	i := slices.IndexFunc(p.allowed, func(a allowance) bool { return within(resolved, a.prefix) })
	if i < 0 {
		own := "(none: the pod has no usable UID)"
		if p.podDir != "" {
			own = strconv.Quote(p.podDir)
		}
		rule := "deny by default (" + p.untrusted + ")"
		return refuse(rule, errdefs.FailedPrecondition(
			"hostPath %q (resolved %q) refused by the mount policy, rule: %s: untrusted pods may mount only paths at or below their own kubelet directory %s, an entry of untrusted_allowed_host_paths or of their rule's allow_host_paths; allow it with untrusted_allowed_host_paths or a rule's allow_host_paths",
			hp, resolved, rule, own))
	}
	if j := slices.IndexFunc(p.protected, func(a allowance) bool { return within(resolved, a.prefix) || within(a.prefix, resolved) }); j >= 0 {
		rule := "protected path: " + p.protected[j].name
		return refuse(rule, errdefs.FailedPrecondition(
			"hostPath %q (resolved %q) refused by the mount policy, rule: %s: it would expose %s to an untrusted pod, which no allowlist permits (%s)",
			hp, resolved, rule, p.protected[j].name, p.allowed[i].name))
	}
	d.Allowed, d.Rule = true, p.allowed[i].name
	return d
}

func (p *mountPolicy) judgeDevice(hp string) MountDecision {
	d := MountDecision{HostPath: hp, Device: true}
	if filepath.IsAbs(hp) && slices.Contains(p.devices, filepath.Clean(hp)) {
		d.Allowed, d.Rule = true, fmt.Sprintf("untrusted_allowed_devices entry %q", filepath.Clean(hp))
		return d
	}
	d.Rule = "no host devices by default (" + p.untrusted + ")"
	d.Err = errdefs.FailedPrecondition("device %q refused by the mount policy, rule: %s: untrusted pods get no host devices unless listed in untrusted_allowed_devices", hp, d.Rule)
	return d
}

// openResolved opens hp with O_PATH, following symlinks as the runtime
// would, and reads back the path the descriptor refers to. It creates
// nothing.
func openResolved(hp string) (*os.File, string, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(hp, unix.O_PATH|unix.O_CLOEXEC, 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, "", errdefs.FailedPrecondition("hostPath %q does not exist (sources are never created for untrusted pods)", hp)
	case err != nil:
		return nil, "", errdefs.FailedPrecondition("hostPath %q cannot be opened: %v", hp, err)
	}
	f := os.NewFile(uintptr(fd), hp)
	resolved, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		f.Close()
		return nil, "", errdefs.FailedPrecondition("hostPath %q: reading the path it resolves to: %v", hp, err)
	}
	if !filepath.IsAbs(resolved) || filepath.Clean(resolved) != resolved || strings.HasSuffix(resolved, " (deleted)") {
		f.Close()
		return nil, "", errdefs.FailedPrecondition("hostPath %q resolves to %q, not a path in crivm's mount namespace", hp, resolved)
	}
	return f, resolved, nil
}

// within reports whether p is dir or below it, element by element: /a/b is
// within /a but /a/bc is not. Both are clean absolute paths.
func within(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}
