package trust

import (
	"maps"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodInput is everything the classifier judges a pod by.
type PodInput struct {
	// RuntimeHandler is RunPodSandboxRequest.runtime_handler: a RuntimeClass
	// handler name or alias, or "" for none.
	RuntimeHandler string
	Namespace      string
	Name           string
	UID            string
	Labels         map[string]string
	Annotations    map[string]string
	Privileged     bool
	HostNetwork    bool
	HostPID        bool
	HostIPC        bool
	// Images are image references (names, not IDs). Empty at RunPodSandbox;
	// the container's image at CreateContainer.
	Images []string
}

// PodInputFromConfig extracts a PodInput from a RunPodSandbox request.
func PodInputFromConfig(cfg *runtimeapi.PodSandboxConfig, runtimeHandler string) PodInput {
	md := cfg.GetMetadata()
	sc := cfg.GetLinux().GetSecurityContext()
	ns := sc.GetNamespaceOptions()
	return PodInput{
		RuntimeHandler: runtimeHandler,
		Namespace:      md.GetNamespace(),
		Name:           md.GetName(),
		UID:            md.GetUid(),
		Labels:         maps.Clone(cfg.GetLabels()),
		Annotations:    maps.Clone(cfg.GetAnnotations()),
		Privileged:     sc.GetPrivileged(),
		HostNetwork:    ns.GetNetwork() == runtimeapi.NamespaceMode_NODE,
		HostPID:        ns.GetPid() == runtimeapi.NamespaceMode_NODE,
		HostIPC:        ns.GetIpc() == runtimeapi.NamespaceMode_NODE,
	}
}

// hostRequests names what in asks for that an untrusted pod may not have;
// privileged only unless privilegedInVM.
func (in PodInput) hostRequests(privilegedInVM bool) []string {
	var asks []string
	for _, a := range []struct {
		set  bool
		name string
	}{
		{in.Privileged && !privilegedInVM, "privileged"},
		{in.HostNetwork, "host network"},
		{in.HostPID, "host PID"},
		{in.HostIPC, "host IPC"},
	} {
		if a.set {
			asks = append(asks, a.name)
		}
	}
	return asks
}

// Verdict is the classifier's decision for one pod. It is persisted with the
// sandbox and shown in verbose status.
type Verdict struct {
	// Handler is the configured handler name (aliases resolved).
	Handler     string   `json:"handler"`
	HandlerType string   `json:"handler_type"`
	Trusted     bool     `json:"trusted"`
	Reasons     []string `json:"reasons"`
	// Rule is the policy rule that decided trust, "" when none did.
	Rule string `json:"rule,omitempty"`
}
