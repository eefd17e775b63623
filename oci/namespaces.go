package oci

import (
	"fmt"

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
}

// checkUserns refuses pods that ask for a user namespace (hostUsers: false).
func checkUserns(opts ...*runtimeapi.NamespaceOption) error {
	for _, o := range opts {
		if u := o.GetUsernsOptions(); u != nil && u.GetMode() != runtimeapi.NamespaceMode_NODE {
			return errdefs.Unimplemented("user namespaces are not supported")
		}
	}
	return nil
}

// sandboxNamespaces are the infra container's namespaces: new mount, pid,
// ipc and uts ones, and the pod network namespace at netnsPath (a new empty
// one when netnsPath is ""). NODE mode leaves pid, ipc or network in the
// host's; host networking also keeps the host's UTS namespace, as with
// containerd and CRI-O. On cgroup v2 the sandbox gets its own cgroup
// namespace.
func sandboxNamespaces(opts *runtimeapi.NamespaceOption, netnsPath string, cg CgroupFeatures) ([]specs.LinuxNamespace, error) {
	if err := checkUserns(opts); err != nil {
		return nil, err
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
func containerNamespaces(podOpts, ctrOpts *runtimeapi.NamespaceOption, sandboxPid int, overrides map[specs.LinuxNamespaceType]string, cg CgroupFeatures) ([]specs.LinuxNamespace, error) {
	if err := checkUserns(podOpts, ctrOpts); err != nil {
		return nil, err
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
	return ns, nil
}
