// Package store keeps crivm's sandboxes and containers: their IDs, reserved
// names and state, persisted in a bbolt database under root so that a
// restarted daemon finds them again. server/ and the handlers share it.
package store

import (
	"crypto/rand"
	"encoding/hex"
	"maps"
	"slices"
	"strings"
	"time"
)

// SandboxState mirrors the CRI PodSandboxState.
type SandboxState string

const (
	SandboxReady    SandboxState = "ready"
	SandboxNotReady SandboxState = "notready"
)

// ContainerState mirrors the CRI ContainerState.
type ContainerState string

const (
	ContainerCreated ContainerState = "created"
	ContainerRunning ContainerState = "running"
	ContainerExited  ContainerState = "exited"
	ContainerUnknown ContainerState = "unknown"
)

// Process identifies a host process across PID reuse: StartTime is field 22
// of /proc/PID/stat, in clock ticks since boot, and BootID the boot it ran in.
type Process struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	BootID    string `json:"boot_id,omitempty"`
}

// PodMetadata is the CRI PodSandboxMetadata.
type PodMetadata struct {
	Name      string `json:"name"`
	UID       string `json:"uid"`
	Namespace string `json:"namespace"`
	Attempt   uint32 `json:"attempt"`
}

// Sandbox is one pod sandbox record.
type Sandbox struct {
	ID       string      `json:"id"`
	Name     string      `json:"name"`
	Metadata PodMetadata `json:"metadata"`
	// RuntimeHandler is what the kubelet asked for; Handler is the configured
	// handler the trust verdict chose.
	RuntimeHandler string            `json:"runtime_handler"`
	Handler        string            `json:"handler"`
	Trust          []byte            `json:"trust,omitempty"` // the verdict, as JSON
	Labels         map[string]string `json:"labels,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	State          SandboxState      `json:"state"`
	CreatedAt      time.Time         `json:"created_at"`
	LogDirectory   string            `json:"log_directory,omitempty"`
	NetNSPath      string            `json:"netns_path,omitempty"`
	IP             string            `json:"ip,omitempty"`
	AdditionalIPs  []string          `json:"additional_ips,omitempty"`
	// Process is the infra container (runc) or the hypervisor (vm).
	Process *Process `json:"process,omitempty"`
	// Config is the RunPodSandbox config, proto-encoded.
	Config []byte `json:"config,omitempty"`
	// Extra holds handler-owned values (socket paths, bundle dirs).
	Extra map[string]string `json:"extra,omitempty"`
}

// ContainerMetadata is the CRI ContainerMetadata.
type ContainerMetadata struct {
	Name    string `json:"name"`
	Attempt uint32 `json:"attempt"`
}

// Container is one container record.
type Container struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	SandboxID string            `json:"sandbox_id"`
	Metadata  ContainerMetadata `json:"metadata"`
	Image     string            `json:"image"`
	// ImageRef is the image's ID, as PullImage and ImageStatus report it.
	ImageRef string `json:"image_ref"`
	// RepoDigest is a digested reference to the image (name@sha256:...),
	// the one of the name the container was created from when it has
	// one; empty when the image has none (then ImageRef stands for it).
	RepoDigest  string            `json:"repo_digest,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	State       ContainerState    `json:"state"`
	CreatedAt   time.Time         `json:"created_at"`
	StartedAt   time.Time         `json:"started_at,omitzero"`
	FinishedAt  time.Time         `json:"finished_at,omitzero"`
	ExitCode    int32             `json:"exit_code"`
	Reason      string            `json:"reason,omitempty"`
	Message     string            `json:"message,omitempty"`
	LogPath     string            `json:"log_path,omitempty"`
	Process     *Process          `json:"process,omitempty"`
	// ExitFile is where the monitor writes the exit code.
	ExitFile string `json:"exit_file,omitempty"`
	// User is the identity the container's first process starts with, as
	// its spec sets it; nil for records older than this field.
	User   *User             `json:"user,omitempty"`
	Config []byte            `json:"config,omitempty"`
	Extra  map[string]string `json:"extra,omitempty"`
	// ImageVolumes are the container's image volumes, mounted from its
	// creation until its removal.
	ImageVolumes []ImageVolume `json:"image_volumes,omitempty"`
}

// ImageVolume is an image mounted read-only as a container's volume
// (Kubernetes image volume source). Each is a storage container of its own:
// removing it by StorageID releases this volume's mount and no other's.
type ImageVolume struct {
	// Mount is the index of the image mount in the container config's
	// mounts.
	Mount int `json:"mount"`
	// ImageID is the mounted image's ID.
	ImageID   string `json:"image_id"`
	StorageID string `json:"storage_id"`
	// MountPoint is where the image's rootfs is mounted on the host.
	MountPoint string `json:"mount_point"`
}

// User is a process's uid, primary gid and supplementary groups.
type User struct {
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additional_gids,omitempty"`
}

func (p *Process) clone() *Process {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

func (s *Sandbox) clone() *Sandbox {
	c := *s
	c.Trust = slices.Clone(s.Trust)
	c.Labels = maps.Clone(s.Labels)
	c.Annotations = maps.Clone(s.Annotations)
	c.AdditionalIPs = slices.Clone(s.AdditionalIPs)
	c.Process = s.Process.clone()
	c.Config = slices.Clone(s.Config)
	c.Extra = maps.Clone(s.Extra)
	return &c
}

func (c *Container) clone() *Container {
	n := *c
	n.Labels = maps.Clone(c.Labels)
	n.Annotations = maps.Clone(c.Annotations)
	n.Process = c.Process.clone()
	if c.User != nil {
		u := *c.User
		u.AdditionalGids = slices.Clone(c.User.AdditionalGids)
		n.User = &u
	}
	n.ImageVolumes = slices.Clone(c.ImageVolumes)
	n.Config = slices.Clone(c.Config)
	n.Extra = maps.Clone(c.Extra)
	return &n
}

// NewID returns a random 64-hex-character ID.
// IsID holds for the IDs NewID makes: 64 lowercase hex digits.
func IsID(s string) bool { return len(s) == 64 && IsIDPrefix(s) }

// IsIDPrefix holds for a non-empty prefix of such an ID (a VM dir is
// named by the first 32 characters of its sandbox's).
func IsIDPrefix(s string) bool {
	return s != "" && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f')
	})
}

func NewID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("reading random bytes: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}
