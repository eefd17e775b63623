// Package launch starts container processes inside the guest without an
// external runtime: the agent re-executes itself as the container's init
// (InitArg), which sets up the rootfs and credentials from the OCI spec and
// execs the container's program. It does what `runc create/start/exec`
// did in the guest, minus the three Go process starts and the JSON state
// round trips per container, which cost ~0.6 s under TCG.
//
// The parent (the agent) executes the child from a sealed memfd copy of its
// binary, creates the namespaces (clone flags), places the child in the
// container's cgroup (CLONE_INTO_CGROUP) and, for exec, joins the
// container's namespaces on a dedicated OS thread before the fork.
// Everything that must happen between fork and exec runs in the child,
// on its locked main thread, which is the thread that finally execs.
package launch

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// InitArg is argv[1] of the agent binary re-executed as a container init.
const InitArg = "__crivm-init"

// Mode says what the child sets up.
type Mode string

const (
	// ModeCreate: a container's first process, in fresh mount (and other)
	// namespaces: rootfs, mounts, devices, pivot_root, then it waits for
	// the start signal.
	ModeCreate Mode = "create"
	// ModeExec: a process joining a running container, whose namespaces
	// the parent entered before the fork; it execs at once.
	ModeExec Mode = "exec"
)

// Config is what the parent sends the child on fdConfig.
type Config struct {
	Mode Mode `json:"mode"`
	// Spec is the container's spec: its rootfs and mounts (create), and
	// seccomp and masking for both modes.
	Spec *specs.Spec `json:"spec"`
	// Process is the program to run: Spec.Process for create, the exec's
	// process for exec.
	Process *specs.Process `json:"process"`
	// Console: make a pty in the container and send its master back over
	// fdConsole.
	Console bool `json:"console,omitempty"`
	// Enter are namespaces the child enters itself, on the thread that
	// execs: a mount namespace (the parent must still exec the agent
	// binary, which the container's tree does not hold) and a cgroup
	// namespace (CLONE_INTO_CGROUP from the agent's cgroup fails with
	// ENOENT inside a cgroup namespace that does not contain it).
	Enter []Namespace `json:"enter,omitempty"`
	// Seccomp is the spec's profile compiled by the parent (Spawn does it,
	// once per distinct profile); nil: no filter.
	Seccomp *Filter `json:"seccomp,omitempty"`
}

// Filter is a compiled seccomp program and its seccomp(2) flags.
type Filter struct {
	Prog  []unix.SockFilter `json:"prog"`
	Flags uint              `json:"flags"`
}

// File descriptors of the child (ExtraFiles start at 3).
const (
	fdConfig  = 3 // read: Config as JSON, then EOF
	fdSync    = 4 // write: one message, then close-on-exec carries the exec's success
	fdStart   = 5 // read: a byte starts a created container; EOF aborts it
	fdConsole = 6 // unix socket: the pty master goes back on it
	fdExe     = 7 // the sealed agent binary the child was executed from; closed at once
)

// syncMsg is what the child reports on fdSync.
type syncMsg struct {
	// Ready: a created container waits for its start signal.
	Ready bool `json:"ready,omitempty"`
	// Error ends the child; Class is "invalid" or "precondition" for the
	// parent to classify.
	Error string `json:"error,omitempty"`
	Class string `json:"class,omitempty"`
	// Phases are the child's set-up steps and their durations (ms), for
	// the parent's debug log.
	Phases []Phase `json:"phases,omitempty"`
}

// Phase is one timed step of the child.
type Phase struct {
	Name string  `json:"name"`
	Ms   float64 `json:"ms"`
}
