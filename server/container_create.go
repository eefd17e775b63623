package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"go.podman.io/image/v5/docker/reference"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/image"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/steps"
	"github.com/crivm/crivm/oci"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/trust"
)

// CreateContainer checks the image, and those of its image volumes, against
// the trust policy, creates the container's rootfs from it, mounts its image
// volumes and hands the container to the sandbox's handler. Each step is
// undone if a later one fails.
func (s *RuntimeService) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	cfg := req.GetConfig()
	if err := validateContainerConfig(cfg); err != nil {
		return nil, err
	}
	if cfg.GetImage().GetImage() == "" {
		return nil, errdefs.InvalidArgument("container %q names no image", cfg.GetMetadata().GetName())
	}
	sb, err := s.deps.Store.Sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	unlock := s.locks.lock(sb.ID)
	defer unlock()
	// The sandbox as it is under the lock: a removal may have run while
	// this call waited for it.
	if sb, err = s.deps.Store.Sandboxes.Get(sb.ID); err != nil {
		return nil, err
	}
	sb = s.refreshSandbox(ctx, sb)
	if sb.State != store.SandboxReady {
		return nil, errdefs.FailedPrecondition("sandbox %s is not ready", sb.ID)
	}
	if err := checkLogFile(sb.LogDirectory, cfg.GetLogPath()); err != nil {
		return nil, err
	}
	h, err := s.sandboxHandler(sb)
	if err != nil {
		return nil, err
	}
	sbCfg, err := handlers.SandboxConfig(sb)
	if err != nil {
		return nil, err
	}
	if err := checkContainerInPod(cfg, sbCfg); err != nil {
		return nil, err
	}
	target, err := s.targetProcess(sb, cfg)
	if err != nil {
		return nil, err
	}
	imageName, err := s.imageName(ctx, cfg.GetImage())
	if err != nil {
		return nil, err
	}
	v, err := sandboxVerdict(sb)
	if err != nil {
		return nil, err
	}
	in := trust.PodInputFromConfig(sbCfg, sb.RuntimeHandler)
	if err := s.deps.Trust.DecideImage(ctx, v, in, imageName); err != nil {
		return nil, fmt.Errorf("container %q refused: %w", cfg.GetMetadata().GetName(), err)
	}
	if err := s.decideImageVolumes(ctx, v, in, cfg); err != nil {
		return nil, err
	}
	// The mount policy, before any rootfs, handler or mount work: an
	// untrusted pod's hostPath sources are opened and checked here, and the
	// handler mounts from these descriptors only.
	srcs, err := s.deps.Trust.DecideMounts(ctx, v, in, cfg.GetMetadata().GetName(), cfg.GetMounts(), cfg.GetDevices())
	if err != nil {
		return nil, fmt.Errorf("container %q refused: %w", cfg.GetMetadata().GetName(), err)
	}
	defer trust.CloseSources(srcs)

	c := &store.Container{
		ID:          store.NewID(),
		SandboxID:   sb.ID,
		Metadata:    store.ContainerMetadata{Name: cfg.GetMetadata().GetName(), Attempt: cfg.GetMetadata().GetAttempt()},
		Image:       cfg.GetImage().GetImage(),
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		State:       store.ContainerCreated,
		Extra:       map[string]string{},
	}
	c.Name = store.ContainerName(c.Metadata, sb.Metadata)
	if c.Config, err = proto.Marshal(cfg); err != nil {
		return nil, fmt.Errorf("encoding container config: %w", err)
	}
	if sb.LogDirectory != "" && cfg.GetLogPath() != "" {
		c.LogPath = filepath.Join(sb.LogDirectory, cfg.GetLogPath())
	}
	ctx = log.With(ctx, "container", c.ID, "name", c.Name)
	if err := s.deps.Store.Containers.Reserve(c.Name, c.ID); err != nil {
		return nil, err
	}
	if _, err := steps.Run(ctx, s.createContainerSteps(sb, sbCfg, c, cfg, h, containerPlacement{untrusted: !v.Trusted, sources: hostSources(srcs), target: target})); err != nil {
		s.deps.Store.Containers.Release(c.Name, c.ID)
		return nil, err
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: c.ID}, nil
}

// hostSources hands the mount policy's sources to the handler (nil for a
// trusted pod).
func hostSources(srcs map[string]trust.MountSource) map[string]handlers.HostSource {
	if srcs == nil {
		return nil
	}
	out := make(map[string]handlers.HostSource, len(srcs))
	for hp, src := range srcs {
		out[hp] = handlers.HostSource{Resolved: src.Resolved, File: src.File}
	}
	return out
}

// containerPlacement is what CreateContainer decided about a container
// before its steps: the pod's trust, the mount policy's sources (nil for
// a trusted pod) and the target of a TARGET PID namespace.
type containerPlacement struct {
	untrusted bool
	sources   map[string]handlers.HostSource
	target    *store.Process
}

// createContainerSteps are CreateContainer's steps.
func (s *RuntimeService) createContainerSteps(sb *store.Sandbox, sbCfg *runtimeapi.PodSandboxConfig, c *store.Container, cfg *runtimeapi.ContainerConfig, h handlers.Handler, pl containerPlacement) []steps.Step {
	untrusted, sources := pl.untrusted, pl.sources
	var rootfs string
	var mappings *image.IDMappings
	var volumes map[int]handlers.ImageVolume
	files := podFilesIn(sb.Extra["pod_dir"])
	return []steps.Step{
		// The intent names everything the steps below make (the rootfs
		// and the handler's state by the container's ID, the image
		// volumes once mounted), so that a sweep after a crash can undo
		// any prefix of them.
		{Name: "recording the container intent", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if err := s.deps.Store.PendingContainers.Add(c); err != nil {
				return nil, err
			}
			return func(context.Context) error { return s.deps.Store.PendingContainers.Delete(c.ID) }, nil
		}, Retain: true},
		{Name: "creating rootfs", Do: func(ctx context.Context) (steps.Cleanup, error) {
			// In a pod with its own user namespace, the rootfs (and the
			// image volumes) are owned by the mapped ids.
			userns, err := oci.PodUserNamespace(sbCfg.GetLinux().GetSecurityContext().GetNamespaceOptions())
			if err != nil {
				return nil, err
			}
			mappings = idMappings(userns)
			rootfs, c.ImageRef, err = s.deps.Images.CreateRootfsMapped(ctx, c.ID, c.Name, c.Image, mappings)
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { return s.deps.Images.RemoveRootfs(ctx, c.ID) }, nil
		}},
		{Name: "mounting image volumes", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var err error
			if volumes, err = s.mountImageVolumes(ctx, c, cfg, mappings); err != nil {
				return nil, err
			}
			undo := func(ctx context.Context) error { return s.removeImageVolumes(ctx, c) }
			if len(c.ImageVolumes) > 0 {
				if _, err := s.deps.Store.PendingContainers.Update(c.ID, func(p *store.Container) error {
					p.ImageVolumes = c.ImageVolumes
					return nil
				}); err != nil {
					return nil, errors.Join(err, undo(ctx))
				}
			}
			return undo, nil
		}},
		{Name: "creating container", Do: func(ctx context.Context) (steps.Cleanup, error) {
			// The handler has mounted what it needs from the volumes'
			// descriptors once it returns.
			defer closeImageVolumes(volumes)
			img, err := s.deps.Images.Status(ctx, c.ImageRef)
			if err != nil {
				return nil, err
			}
			req := &handlers.ContainerRequest{
				Container: c, Config: cfg, SandboxConfig: sbCfg, Rootfs: rootfs, LogPath: c.LogPath,
				ResolvConfPath: files.ResolvConf, HostsPath: files.Hosts, HostnamePath: files.Hostname,
				Untrusted: untrusted, Sources: sources, ImageVolumes: volumes, Target: pl.target,
			}
			c.RepoDigest = repoDigest(img.RepoDigests, cfg.GetImage().GetUserSpecifiedImage(), c.Image)
			if img.Config != nil {
				req.Image = &img.Config.Config
				c.Extra["stop_signal"] = img.Config.Config.StopSignal
			}
			if !hostIPC(sbCfg) {
				req.ShmPath = files.Shm
			}
			created, err := h.CreateContainer(ctx, sb, req)
			if err != nil {
				return nil, err
			}
			c.Process, c.ExitFile, c.User = created.Process, created.ExitFile, created.User
			for k, v := range created.Extra {
				c.Extra[k] = v
			}
			return func(ctx context.Context) error { return h.RemoveContainer(ctx, c) }, nil
		}},
		{Name: "recording container", Do: func(ctx context.Context) (steps.Cleanup, error) {
			c.CreatedAt = time.Now()
			if err := s.deps.Store.Containers.Add(c); err != nil {
				return nil, err
			}
			s.emitContainer(ctx, c, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
			// Undone only when dropping the intent fails (a store write).
			return func(ctx context.Context) error {
				err := s.deps.Store.Containers.Delete(c.ID)
				s.emitContainer(ctx, c, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
				return err
			}, nil
		}},
		{Name: "dropping the container intent", Do: func(ctx context.Context) (steps.Cleanup, error) {
			return nil, s.deps.Store.PendingContainers.Delete(c.ID)
		}},
	}
}

// imageName is the name the trust policy judges: the user's reference, or
// for an image ID the image's first repo tag or digest.
func (s *RuntimeService) imageName(ctx context.Context, spec *runtimeapi.ImageSpec) (string, error) {
	if u := spec.GetUserSpecifiedImage(); u != "" {
		return u, nil
	}
	img, err := s.deps.Images.Status(ctx, spec.GetImage())
	if err != nil {
		return "", fmt.Errorf("finding image %q: %w", spec.GetImage(), err)
	}
	if img.ID != spec.GetImage() && !isIDPrefix(img.ID, spec.GetImage()) {
		return spec.GetImage(), nil
	}
	switch {
	case len(img.RepoTags) > 0:
		return img.RepoTags[0], nil
	case len(img.RepoDigests) > 0:
		return img.RepoDigests[0], nil
	}
	return "", errdefs.FailedPrecondition("image %s has no name to check against the trust policy", img.ID)
}

// repoDigest picks the digested reference ContainerStatus.image_ref reports
// (as containerd and CRI-O do; the kubelet shows it as the pod's imageID):
// the one of the first of names (the user's reference, then the image
// field) whose repository has one, else the image's first, else "".
func repoDigest(digests []string, names ...string) string {
	for _, n := range names {
		named, err := reference.ParseNormalizedNamed(n)
		if err != nil {
			continue // an image ID, or empty
		}
		for _, d := range digests {
			if repo, _, ok := strings.Cut(d, "@"); ok && repo == named.Name() {
				return d
			}
		}
	}
	if len(digests) > 0 {
		return digests[0]
	}
	return ""
}

func isIDPrefix(id, s string) bool {
	if len(s) > 7 && s[:7] == "sha256:" {
		s = s[7:]
	}
	return len(s) >= 12 && len(s) <= len(id) && id[:len(s)] == s
}

// targetProcess is, for a container whose PID namespace mode is TARGET,
// the process of the container it names: one of the same pod, running.
func (s *RuntimeService) targetProcess(sb *store.Sandbox, cfg *runtimeapi.ContainerConfig) (*store.Process, error) {
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if opts.GetPid() != runtimeapi.NamespaceMode_TARGET {
		return nil, nil
	}
	id := opts.GetTargetId()
	if id == "" {
		return nil, errdefs.InvalidArgument("container linux.security_context.namespace_options: pid mode TARGET without a target_id")
	}
	t, err := s.deps.Store.Containers.Get(id)
	if err != nil {
		return nil, fmt.Errorf("target container %q of the PID namespace: %w", id, err)
	}
	switch {
	case t.SandboxID != sb.ID:
		return nil, errdefs.InvalidArgument("target container %q of the PID namespace is not in pod sandbox %s", id, sb.ID)
	case t.State != store.ContainerRunning:
		return nil, errdefs.FailedPrecondition("target container %q of the PID namespace is not running", id)
	}
	return t.Process, nil // nil for a VM's: its process is the guest's
}
