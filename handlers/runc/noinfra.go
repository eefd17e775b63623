package runc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/podhost"
	"github.com/crivm/crivm/internal/podns"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/store"
)

// Pods without an infra container (drop_infra_ctr, as CRI-O has it).
//
// A pod whose containers share no PID namespace and that has no user
// namespace of its own needs no process to hold its namespaces: its
// network namespace is already pinned by the server, and its IPC and UTS
// namespaces are made and pinned here, in the pod's dir (podns.PinIPCUTS).
// Its containers join all three by path. Such a sandbox has no Process;
// its record says so (extraInfra = infraNone) and names its pins
// (podns.ExtraIPCPin, podns.ExtraUTSPin): the server takes the pod for
// alive while they exist. A PID namespace cannot be held that way (it ends
// with its init), nor can a user namespace be made without a process to
// own the network namespace, so those pods keep the pause container.
//
// The pins are released by StopSandbox and RemoveSandbox; after a crash
// before the sandbox was recorded, by the server's removal of the pod dir,
// which unmounts whatever is below it.

// extraInfra is the sandbox record's Extra key saying whether the pod has
// an infra container (infraPause) or none (infraNone). PodSandboxStatus's
// verbose info shows it.
const (
	extraInfra = "infra"
	infraNone  = "none"
	infraPause = "pause"
)

// Pin file names in the pod's dir.
const (
	ipcPinName = "ipc.ns"
	utsPinName = "uts.ns"
)

// needsInfra reports whether the pod runs an infra container: always when
// drop_infra_ctr is off; else when its containers share a PID namespace
// (any PID mode but CONTAINER and NODE) or it has its own user namespace.
func (h *Handler) needsInfra(cfg *runtimeapi.PodSandboxConfig) bool {
	if !h.dropInfra {
		return true
	}
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	switch opts.GetPid() {
	case runtimeapi.NamespaceMode_CONTAINER, runtimeapi.NamespaceMode_NODE:
	default:
		return true
	}
	u, err := oci.PodUserNamespace(opts)
	return err != nil || u != nil
}

// podPins are the pins of a pod without an infra container in dir: the
// IPC namespace unless the pod uses the host's or one per container, the
// UTS namespace unless it uses the host's network (and so its UTS
// namespace), as oci's containerNamespaces joins them.
func podPins(dir string, cfg *runtimeapi.PodSandboxConfig) podns.IPCUTS {
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	var p podns.IPCUTS
	switch opts.GetIpc() {
	case runtimeapi.NamespaceMode_NODE, runtimeapi.NamespaceMode_CONTAINER:
	default:
		p.IPC = filepath.Join(dir, ipcPinName)
	}
	if opts.GetNetwork() != runtimeapi.NamespaceMode_NODE {
		p.UTS = filepath.Join(dir, utsPinName)
		p.Hostname = podhost.Hostname(cfg)
	}
	return p
}

// startPinned starts a pod without an infra container: it pins the pod's
// IPC and UTS namespaces. The infra spec is still generated, and
// discarded, so that the pod is refused for what would have refused its
// infra container.
func (h *Handler) startPinned(ctx context.Context, req *handlers.SandboxRequest, spec oci.SandboxSpecInput) (*handlers.SandboxStarted, error) {
	if _, err := oci.SandboxSpec(spec); err != nil {
		return nil, fmt.Errorf("generating infra spec: %w", err)
	}
	pins := podPins(req.Dir, req.Config)
	if err := podns.PinIPCUTS(pins); err != nil {
		return nil, fmt.Errorf("pinning the pod's namespaces: %w", err)
	}
	log.G(ctx).Debug("pod without infra container", "ipc", pins.IPC, "uts", pins.UTS)
	extra := map[string]string{extraInfra: infraNone}
	if pins.IPC != "" {
		extra[podns.ExtraIPCPin] = pins.IPC
	}
	if pins.UTS != "" {
		extra[podns.ExtraUTSPin] = pins.UTS
	}
	return &handlers.SandboxStarted{Extra: extra}, nil
}

// hasInfra is false for a sandbox recorded without an infra container. A
// record that does not say (a crash left only the intent, or a sandbox
// of an older daemon) may have one.
func hasInfra(sb *store.Sandbox) bool {
	return sb.Extra[extraInfra] != infraNone
}

// releasePins unpins the namespaces sb's record names. Idempotent.
func releasePins(sb *store.Sandbox) error {
	var errs []error
	for _, p := range podns.RecordedPins(sb.Extra) {
		errs = append(errs, podns.Unpin(p))
	}
	return errors.Join(errs...)
}

// pinnedNamespacePaths are the namespaces a container of sb (a pod without
// an infra container) joins by path: its network namespace and its pinned
// IPC and UTS ones. Each must still exist: a pod whose pins are gone is not
// running. A container that asks to share the pod's PID namespace is
// refused: the pod has none.
func pinnedNamespacePaths(sb *store.Sandbox, ctr *runtimeapi.ContainerConfig) (map[specs.LinuxNamespaceType]string, error) {
	if opts := ctr.GetLinux().GetSecurityContext().GetNamespaceOptions(); opts != nil && opts.GetPid() == runtimeapi.NamespaceMode_POD {
		return nil, errdefs.InvalidArgument("container %q asks for its pod's PID namespace: pod %s shares none", ctr.GetMetadata().GetName(), sb.ID)
	}
	paths := map[specs.LinuxNamespaceType]string{}
	for t, p := range map[specs.LinuxNamespaceType]string{
		specs.NetworkNamespace: sb.NetNSPath,
		specs.IPCNamespace:     sb.Extra[podns.ExtraIPCPin],
		specs.UTSNamespace:     sb.Extra[podns.ExtraUTSPin],
	} {
		if p == "" {
			continue
		}
		if !podns.Exists(p) {
			return nil, errdefs.FailedPrecondition("sandbox %s is not running: its %s namespace pin %s is gone", sb.ID, t, p)
		}
		paths[t] = p
	}
	return paths, nil
}

var _ handlers.PauseUser = (*Handler)(nil)

// NeedsPause: only a pod with an infra container runs the pause image.
func (h *Handler) NeedsPause(cfg *runtimeapi.PodSandboxConfig) bool { return h.needsInfra(cfg) }
