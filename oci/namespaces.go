package oci

import (
	"fmt"
	"math"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// procNSName maps namespace types to their /proc/PID/ns entries.
var procNSName = map[specs.LinuxNamespaceType]string{
	specs.PIDNamespace:     "pid",
	specs.NetworkNamespace: "net",
	specs.IPCNamespace:     "ipc",
	specs.UTSNamespace:     "uts",
	specs.MountNamespace:   "mnt",
	specs.CgroupNamespace:  "cgroup",
	specs.UserNamespace:    "user",
}

// UserNamespace is a pod's own user namespace (userns_options mode POD):
// its uid and gid mappings, host ids as seen from the daemon.
type UserNamespace struct {
	UIDs, GIDs []specs.LinuxIDMapping
}

// Equal reports whether u and o map the same ids (both nil: the host's).
func (u *UserNamespace) Equal(o *UserNamespace) bool {
	if u == nil || o == nil {
		return u == o
	}
	return slices.Equal(u.UIDs, o.UIDs) && slices.Equal(u.GIDs, o.GIDs)
}

// PodUserNamespace validates opts.userns_options and returns the user
// namespace it asks for: nil for NODE (or none: the host's), the mappings
// for POD. As with containerd, a POD user namespace has exactly one uid
// and one gid mapping, each starting at container id 0 (the kubelet sends
// one range of 65536 ids); it may not map the container's root to the
// host's root, and it does not go with the host's network, PID or IPC
// namespace (the kubelet refuses hostUsers: false with those too).
// CONTAINER and TARGET are not modes a user namespace has.
func PodUserNamespace(opts *runtimeapi.NamespaceOption) (*UserNamespace, error) {
	u := opts.GetUsernsOptions()
	if u == nil {
		return nil, nil // POD is the zero mode: no options means the host's
	}
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		return nil, nil
	case runtimeapi.NamespaceMode_POD:
	default:
		return nil, errdefs.InvalidArgument("user namespace mode %s is not supported: POD or NODE", u.GetMode())
	}
	for _, ns := range []struct {
		what string
		mode runtimeapi.NamespaceMode
	}{{"network", opts.GetNetwork()}, {"PID", opts.GetPid()}, {"IPC", opts.GetIpc()}} {
		if ns.mode == runtimeapi.NamespaceMode_NODE {
			return nil, errdefs.InvalidArgument("a pod with its own user namespace cannot use the host's %s namespace", ns.what)
		}
	}
	uids, err := idMappings("uid", u.GetUids())
	if err != nil {
		return nil, err
	}
	gids, err := idMappings("gid", u.GetGids())
	if err != nil {
		return nil, err
	}
	return &UserNamespace{UIDs: uids, GIDs: gids}, nil
}

func idMappings(what string, ms []*runtimeapi.IDMapping) ([]specs.LinuxIDMapping, error) {
	if len(ms) != 1 {
		return nil, errdefs.InvalidArgument("user namespace: %d %s mappings, want exactly one", len(ms), what)
	}
	m := ms[0]
	switch {
	case m.GetContainerId() != 0:
		return nil, errdefs.InvalidArgument("user namespace: the %s mapping starts at container id %d: container id 0 must be mapped", what, m.GetContainerId())
	case m.GetLength() == 0:
		return nil, errdefs.InvalidArgument("user namespace: the %s mapping is empty", what)
	case m.GetHostId() == 0:
		return nil, errdefs.InvalidArgument("user namespace: the %s mapping maps the container's root to the host's root", what)
	case uint64(m.GetHostId())+uint64(m.GetLength()) > math.MaxUint32:
		return nil, errdefs.InvalidArgument("user namespace: the %s mapping %d+%d is out of range", what, m.GetHostId(), m.GetLength())
	}
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: m.GetHostId(), Size: m.GetLength()}}, nil
}

// podUserns is the pod's user namespace, refused with Unimplemented when
// the runtime applying the spec cannot run one (supported false).
func podUserns(opts *runtimeapi.NamespaceOption, supported bool) (*UserNamespace, error) {
	u, err := PodUserNamespace(opts)
	if err != nil {
		return nil, err
	}
	if u != nil && !supported {
		return nil, errdefs.Unimplemented("user namespaces are not supported by this runtime handler")
	}
	return u, nil
}

// sandboxNamespaces are the infra container's namespaces: new mount, pid,
// ipc and uts ones, and the pod network namespace at netnsPath (a new empty
// one when netnsPath is ""). NODE mode leaves pid, ipc or network in the
// host's; host networking also keeps the host's UTS namespace, as with
// containerd and CRI-O. On cgroup v2 the sandbox gets its own cgroup
// namespace.
//
// With a user namespace (userns not nil) the sandbox creates it, and a new
// network namespace, which the user namespace then owns (so that sysfs can
// be mounted and network sysctls set in it): netnsPath must be "", and the
// caller pins the sandbox's network namespace once it runs.
func sandboxNamespaces(opts *runtimeapi.NamespaceOption, netnsPath string, cg CgroupFeatures, userns *UserNamespace) ([]specs.LinuxNamespace, error) {
	if userns != nil && netnsPath != "" {
		return nil, errdefs.InvalidArgument("a sandbox with a user namespace creates its network namespace: no path may be given (%s)", netnsPath)
	}
	var ns []specs.LinuxNamespace
	if opts.GetPid() != runtimeapi.NamespaceMode_NODE {
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	hostNet := opts.GetNetwork() == runtimeapi.NamespaceMode_NODE
	if !hostNet {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netnsPath})
	}
	if opts.GetIpc() != runtimeapi.NamespaceMode_NODE {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace})
	}
	if !hostNet {
		ns = append(ns, specs.LinuxNamespace{Type: specs.UTSNamespace})
	}
	ns = append(ns, specs.LinuxNamespace{Type: specs.MountNamespace})
	if cg.V2 {
		ns = append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	if userns != nil {
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace})
	}
	return ns, nil
}

// containerNamespaces are a container's namespaces. The network, IPC and UTS
// namespaces are the pod's (podOpts): the sandbox's, or the host's in NODE
// mode (UTS follows network). The PID namespace follows the container's own
// option (ctrOpts, else podOpts): POD joins the sandbox's, CONTAINER creates
// one, NODE stays in the host's, TARGET joins another container's, which
// overrides must name. The mount namespace is always new, and so is the
// cgroup namespace on cgroup v2.
//
// A joined namespace is /proc/sandboxPid/ns/NAME unless overrides names a
// path for its type; overrides also turn a new namespace into a joined one.
//
// A pod with a user namespace (userns not nil) has its containers join it;
// a container's own userns_options, when set, must ask for the same.
func containerNamespaces(podOpts, ctrOpts *runtimeapi.NamespaceOption, sandboxPid int, overrides map[specs.LinuxNamespaceType]string, cg CgroupFeatures, userns *UserNamespace) ([]specs.LinuxNamespace, error) {
	if ctrOpts.GetUsernsOptions() != nil {
		own, err := PodUserNamespace(ctrOpts)
		if err != nil {
			return nil, err
		}
		if !own.Equal(userns) {
			return nil, errdefs.InvalidArgument("the container's user namespace options differ from its pod's")
		}
	}
	if ctrOpts == nil {
		ctrOpts = podOpts
	}
	join := func(t specs.LinuxNamespaceType) (specs.LinuxNamespace, error) {
		if p := overrides[t]; p != "" {
			return specs.LinuxNamespace{Type: t, Path: p}, nil
		}
		if sandboxPid <= 0 {
			return specs.LinuxNamespace{}, fmt.Errorf("joining the sandbox's %s namespace: no sandbox pid and no path given", t)
		}
		return specs.LinuxNamespace{Type: t, Path: fmt.Sprintf("/proc/%d/ns/%s", sandboxPid, procNSName[t])}, nil
	}
	fresh := func(t specs.LinuxNamespaceType) specs.LinuxNamespace {
		return specs.LinuxNamespace{Type: t, Path: overrides[t]}
	}

	var ns []specs.LinuxNamespace
	add := func(n specs.LinuxNamespace, err error) error {
		if err == nil {
			ns = append(ns, n)
		}
		return err
	}

	switch ctrOpts.GetPid() {
	case runtimeapi.NamespaceMode_NODE:
	case runtimeapi.NamespaceMode_CONTAINER:
		ns = append(ns, fresh(specs.PIDNamespace))
	case runtimeapi.NamespaceMode_TARGET:
		p := overrides[specs.PIDNamespace]
		if p == "" {
			return nil, errdefs.InvalidArgument("pid namespace of target container %q: no namespace path given", ctrOpts.GetTargetId())
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: p})
	default:
		if err := add(join(specs.PIDNamespace)); err != nil {
			return nil, err
		}
	}
	hostNet := podOpts.GetNetwork() == runtimeapi.NamespaceMode_NODE
	if !hostNet {
		if err := add(join(specs.NetworkNamespace)); err != nil {
			return nil, err
		}
	}
	switch podOpts.GetIpc() {
	case runtimeapi.NamespaceMode_NODE:
	case runtimeapi.NamespaceMode_CONTAINER:
		ns = append(ns, fresh(specs.IPCNamespace))
	default:
		if err := add(join(specs.IPCNamespace)); err != nil {
			return nil, err
		}
	}
	if !hostNet {
		if err := add(join(specs.UTSNamespace)); err != nil {
			return nil, err
		}
	}
	ns = append(ns, fresh(specs.MountNamespace))
	if cg.V2 {
		ns = append(ns, fresh(specs.CgroupNamespace))
	}
	if userns != nil {
		if err := add(join(specs.UserNamespace)); err != nil {
			return nil, err
		}
	}
	return ns, nil
}
