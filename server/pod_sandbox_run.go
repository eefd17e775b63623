package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	imgspec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/image"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/steps"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/trust"
)

// Annotations crivm adds to every sandbox: the trust verdict and handler.
const (
	AnnotationTrust   = "io.crivm.trust"
	AnnotationHandler = "io.crivm.handler"
)

// RunPodSandbox classifies the pod, then runs the shared pipeline (pod files,
// netns, CNI, pause rootfs) and the chosen handler as named steps. A step
// that fails undoes the ones before it, so a refused or failed pod leaves
// nothing behind. The trust decision comes before any resource.
func (s *RuntimeService) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	if err := validatePodConfig(cfg); err != nil {
		return nil, err
	}
	if err := oci.CheckCgroupParent(cfg.GetLinux().GetCgroupParent(), s.deps.Config().Runtime.CgroupManager); err != nil {
		return nil, fmt.Errorf("pod sandbox linux.cgroup_parent: %w", err)
	}
	in := trust.PodInputFromConfig(cfg, req.GetRuntimeHandler())
	v, err := s.deps.Trust.Decide(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s refused: %w", in.Namespace, in.Name, err)
	}
	log.G(ctx).Info("trust verdict", "pod", in.Namespace+"/"+in.Name, "handler", v.Handler, "trusted", v.Trusted, "reasons", v.Reasons)
	entry, err := s.deps.Handlers.Get(v.Handler)
	if err != nil {
		return nil, err
	}
	userns, _ := oci.PodUserNamespace(cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()) // validated above
	if userns != nil && !entry.Features().UserNamespaces {
		return nil, errdefs.FailedPrecondition("pod %s/%s asks for its own user namespace, which handler %q does not offer", in.Namespace, in.Name, v.Handler)
	}
	if c, ok := entry.Handler.(handlers.SandboxChecker); ok {
		if err := c.CheckSandbox(ctx, cfg); err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", in.Namespace, in.Name, err)
		}
	}

	md := cfg.GetMetadata()
	sb := &store.Sandbox{
		ID:             store.NewID(),
		Name:           store.SandboxName(store.PodMetadata{Name: md.Name, UID: md.Uid, Namespace: md.Namespace, Attempt: md.Attempt}),
		Metadata:       store.PodMetadata{Name: md.Name, UID: md.Uid, Namespace: md.Namespace, Attempt: md.Attempt},
		RuntimeHandler: req.GetRuntimeHandler(),
		Handler:        v.Handler,
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		State:          store.SandboxReady,
		LogDirectory:   cfg.GetLogDirectory(),
		Extra:          map[string]string{},
	}
	if sb.Trust, err = json.Marshal(v); err != nil {
		return nil, fmt.Errorf("encoding verdict: %w", err)
	}
	if sb.Annotations == nil {
		sb.Annotations = map[string]string{}
	}
	sb.Annotations[AnnotationTrust] = trustWord(v.Trusted)
	sb.Annotations[AnnotationHandler] = v.Handler
	if sb.Config, err = proto.Marshal(cfg); err != nil {
		return nil, fmt.Errorf("encoding pod config: %w", err)
	}
	ctx = log.With(ctx, "sandbox", sb.ID, "pod", md.Namespace+"/"+md.Name)

	if err := s.deps.Store.Sandboxes.Reserve(sb.Name, sb.ID); err != nil {
		return nil, err
	}
	// Once recorded, the sandbox's resources are released by Stop/Remove.
	start := time.Now()
	if _, err := steps.Run(ctx, s.runSandboxSteps(sb, cfg, entry, userns)); err != nil {
		s.deps.Store.Sandboxes.Release(sb.Name, sb.ID)
		return nil, err
	}
	s.deps.Metrics.PodStarted(v.Handler, time.Since(start))
	log.G(ctx).Info("pod sandbox running", "handler", v.Handler, "ip", sb.IP)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: sb.ID}, nil
}

func trustWord(trusted bool) string {
	if trusted {
		return "trusted"
	}
	return "untrusted"
}

// runSandboxSteps fills sb as it goes; the last step persists it.
//
// A pod with its own user namespace (userns not nil) gets its network
// namespace from its sandbox, which creates it in the user namespace (see
// oci.SandboxSpecInput.NetNSPath): the namespace is pinned and CNI runs
// once the sandbox runs, rather than beside its start.
func (s *RuntimeService) runSandboxSteps(sb *store.Sandbox, cfg *runtimeapi.PodSandboxConfig, entry *handlers.Entry, userns *oci.UserNamespace) []steps.Step {
	files := podFilesIn(filepath.Join(s.deps.PodsDir, sb.ID))
	hostNet := hostNetwork(cfg)
	hostname := podHostname(cfg)
	var pauseRootfsPath string
	var pauseImage *imgspec.Image
	// network is the CNI ADD running beside the sandbox start; nil for
	// host network.
	var network *networkFuture
	start := time.Now()
	writeFiles := steps.Step{Name: "writing pod files", Do: func(ctx context.Context) (steps.Cleanup, error) {
		if err := os.MkdirAll(files.Dir, 0o755); err != nil {
			return nil, err
		}
		cleanup := func(context.Context) error { return files.remove() }
		// hosts exists from the start (the infra container may bind it
		// while CNI runs); the pod's address is written into the same
		// inode once CNI has it.
		err := errors.Join(files.writeResolvConf(cfg.GetDnsConfig()), files.writeHostname(hostname), files.writeHosts(hostNet, "", hostname))
		if err == nil && !hostIPC(cfg) {
			err = files.mountShm()
		}
		if err != nil {
			return nil, errors.Join(err, cleanup(ctx))
		}
		sb.Extra["pod_dir"] = files.Dir
		return cleanup, nil
	}}
	createNetNS := steps.Step{Name: "creating network namespace", Do: func(ctx context.Context) (steps.Cleanup, error) {
		if hostNet {
			return nil, nil
		}
		ns, err := netns.New(s.deps.NetNSDir, netnsName(sb.ID))
		if err != nil {
			return nil, err
		}
		sb.NetNSPath = ns.Path()
		return func(context.Context) error { return ns.Remove() }, nil
	}}
	pinNetNS := steps.Step{Name: "pinning the sandbox's network namespace", Do: func(ctx context.Context) (steps.Cleanup, error) {
		ns, err := netns.NewFromPID(s.deps.NetNSDir, netnsName(sb.ID), sb.Process.Pid)
		if err != nil {
			return nil, err
		}
		sb.NetNSPath = ns.Path()
		return func(context.Context) error { return ns.Remove() }, nil
	}}
	startNetwork := steps.Step{Name: "setting up pod network", Do: func(ctx context.Context) (steps.Cleanup, error) {
		if hostNet {
			return nil, nil
		}
		nreq := networkRequest(sb, cfg)
		// CNI ADD runs while the sandbox starts (the infra container or
		// the VM needs only the namespace); "waiting for pod network"
		// joins. What would fail before any plugin runs fails here, at
		// once.
		if err := s.deps.Network.Check(ctx, nreq); err != nil {
			return nil, err
		}
		network = &networkFuture{done: make(chan struct{})}
		go func() {
			network.res, network.err = s.deps.Network.Setup(ctx, nreq)
			close(network.done)
		}()
		return func(ctx context.Context) error {
			<-network.done // Teardown must not race a Setup still running.
			return s.deps.Network.Teardown(ctx, nreq)
		}, nil
	}}
	pauseRootfs := steps.Step{Name: "preparing pause rootfs", Do: func(ctx context.Context) (steps.Cleanup, error) {
		if p, ok := entry.Handler.(handlers.PauseUser); !ok || !p.NeedsPause(cfg) {
			return nil, nil
		}
		rootfs, img, err := s.pauseRootfs(ctx, sb, idMappings(userns))
		if err != nil {
			return nil, err
		}
		pauseRootfsPath, pauseImage = rootfs, img
		return func(ctx context.Context) error { return s.deps.Images.RemoveRootfs(ctx, sb.ID) }, nil
	}}
	startSandbox := steps.Step{Name: "starting sandbox", Do: func(ctx context.Context) (steps.Cleanup, error) {
		req := &handlers.SandboxRequest{
			Sandbox: sb, Config: cfg, Dir: files.Dir, NetNSPath: sb.NetNSPath, WaitNetwork: network.wait,
			ResolvConfPath: files.ResolvConf, HostsPath: files.Hosts, HostnamePath: files.Hostname,
			PauseRootfs: pauseRootfsPath,
		}
		if !hostIPC(cfg) {
			req.ShmPath = files.Shm
		}
		if pauseImage != nil {
			req.PauseImage = &pauseImage.Config
		}
		started, err := entry.StartSandbox(ctx, req)
		if err != nil {
			return nil, err
		}
		sb.Process = started.Process
		for k, v := range started.Extra {
			sb.Extra[k] = v
		}
		return func(ctx context.Context) error {
			return errors.Join(entry.StopSandbox(ctx, sb), entry.RemoveSandbox(ctx, sb))
		}, nil
	}}
	waitNetwork := steps.Step{Name: "joining the pod network", Do: func(ctx context.Context) (steps.Cleanup, error) {
		if network == nil {
			return nil, nil
		}
		if err := network.wait(ctx); err != nil {
			return nil, err
		}
		return nil, applyNetwork(sb, files, hostname, network.res)
	}}
	record := steps.Step{Name: "recording sandbox", Do: func(ctx context.Context) (steps.Cleanup, error) {
		sb.CreatedAt = time.Now()
		if err := s.deps.Store.Sandboxes.Add(sb); err != nil {
			return nil, err
		}
		s.emitSandbox(ctx, sb, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
		s.emitSandbox(ctx, sb, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
		log.G(ctx).Debug("sandbox recorded", "took", time.Since(start))
		return func(context.Context) error { return s.deps.Store.Sandboxes.Delete(sb.ID) }, nil
	}}
	// The intent names everything the steps may make (the netns and pod
	// dir by their fixed paths; the handler's resources by the sandbox's
	// ID), so that a sweep after a crash can undo any prefix of them.
	intent := steps.Step{Name: "recording the intent", Do: func(ctx context.Context) (steps.Cleanup, error) {
		p := *sb
		p.State = store.SandboxNotReady
		p.Extra = map[string]string{"pod_dir": files.Dir}
		if !hostNet {
			p.NetNSPath = netns.PathIn(s.deps.NetNSDir, netnsName(sb.ID))
		}
		if err := s.deps.Store.PendingSandboxes.Add(&p); err != nil {
			return nil, err
		}
		return func(context.Context) error { return s.deps.Store.PendingSandboxes.Delete(sb.ID) }, nil
	}, Retain: true}
	done := steps.Step{Name: "dropping the intent", Do: func(ctx context.Context) (steps.Cleanup, error) {
		return nil, s.deps.Store.PendingSandboxes.Delete(sb.ID)
	}}
	if userns != nil {
		return []steps.Step{intent, writeFiles, pauseRootfs, startSandbox, pinNetNS, startNetwork, waitNetwork, record, done}
	}
	return []steps.Step{intent, writeFiles, createNetNS, startNetwork, pauseRootfs, startSandbox, waitNetwork, record, done}
}

// idMappings are the rootfs mappings of a pod with its own user namespace
// (nil for none).
func idMappings(u *oci.UserNamespace) *image.IDMappings {
	if u == nil {
		return nil
	}
	return &image.IDMappings{UIDs: u.UIDs, GIDs: u.GIDs}
}

// networkRequest is the CNI request for sb; Setup and Teardown use the same.
func networkRequest(sb *store.Sandbox, cfg *runtimeapi.PodSandboxConfig) netns.SetupRequest {
	req := netns.SetupRequest{
		ContainerID: sb.ID, NetNSPath: sb.NetNSPath,
		PodName: sb.Metadata.Name, PodNamespace: sb.Metadata.Namespace, PodUID: sb.Metadata.UID,
	}
	for _, pm := range cfg.GetPortMappings() {
		proto := "tcp"
		switch pm.Protocol {
		case runtimeapi.Protocol_UDP:
			proto = "udp"
		case runtimeapi.Protocol_SCTP:
			proto = "sctp"
		}
		req.PortMappings = append(req.PortMappings, netns.PortMapping{
			Protocol: proto, ContainerPort: pm.ContainerPort, HostPort: pm.HostPort, HostIP: pm.HostIp,
		})
	}
	return req
}

func validatePodConfig(cfg *runtimeapi.PodSandboxConfig) error {
	switch {
	case cfg == nil:
		return errdefs.InvalidArgument("pod sandbox config is missing")
	case cfg.GetMetadata() == nil:
		return errdefs.InvalidArgument("pod sandbox metadata is missing")
	case cfg.GetMetadata().GetName() == "":
		return errdefs.InvalidArgument("pod sandbox metadata.name is empty")
	case cfg.GetMetadata().GetNamespace() == "":
		return errdefs.InvalidArgument("pod sandbox metadata.namespace is empty")
	case cfg.GetMetadata().GetUid() == "":
		return errdefs.InvalidArgument("pod sandbox metadata.uid is empty")
	}
	if _, err := oci.PodUserNamespace(cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()); err != nil {
		return err
	}
	return validatePodFields(cfg)
}

// networkFuture is a CNI ADD running in the background.
type networkFuture struct {
	done chan struct{} // closed once res and err are set
	res  *netns.Result
	err  error
}

// wait blocks until the ADD is done or ctx ends. A nil future (host
// network) is done.
func (f *networkFuture) wait(ctx context.Context) error {
	if f == nil {
		return nil
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// applyNetwork records the pod's addresses and writes them into its hosts
// file.
func applyNetwork(sb *store.Sandbox, files podFiles, hostname string, res *netns.Result) error {
	for i, ip := range res.IPs {
		if i == 0 {
			sb.IP = ip.String()
		} else {
			sb.AdditionalIPs = append(sb.AdditionalIPs, ip.String())
		}
	}
	return files.writeHosts(false, sb.IP, hostname)
}
