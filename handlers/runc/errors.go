package runc

import (
	"strings"

	"github.com/crivm/crivm/internal/errdefs"
)

// runtimeFailures classify what runc or conmon report when a request is the
// cause of their failure; the server validates these fields first, so a
// match means a value only the host could judge (a CPU it lacks, a sysctl
// its kernel does not know, a command the image lacks). Every pattern of an
// entry must occur in the message. Each was seen from runc 1.1.5 or conmon
// 2.1.6.
var runtimeFailures = []struct {
	patterns []string
	class    error
}{
	// The kernel refused a cgroup value: "failed to write \"5\": write
	// /sys/fs/cgroup/cpuset/.../cpuset.cpus: numerical result out of range".
	{[]string{"write /sys/fs/cgroup/", ": invalid argument"}, errdefs.ErrInvalidArgument},
	{[]string{"write /sys/fs/cgroup/", ": numerical result out of range"}, errdefs.ErrInvalidArgument},
	{[]string{"allowed cpu-shares is"}, errdefs.ErrInvalidArgument},
	// A limit below what the container already uses: "unable to set
	// memory limit to 4096 (current usage: 229376, ...)".
	{[]string{"unable to set memory limit to"}, errdefs.ErrFailedPrecondition},
	// A sysctl the kernel does not know, or a value it refuses.
	{[]string{"open /proc/sys/", "no such file or directory"}, errdefs.ErrInvalidArgument},
	{[]string{"write /proc/sys/"}, errdefs.ErrInvalidArgument},
	// A mount runc refuses ("... cannot be mounted because it is inside
	// /proc"), or one whose source and destination are a file and a
	// directory.
	{[]string{"cannot be mounted because it is inside /proc"}, errdefs.ErrInvalidArgument},
	{[]string{"error mounting ", ": not a directory"}, errdefs.ErrInvalidArgument},
	{[]string{"error mounting ", ": is a directory"}, errdefs.ErrInvalidArgument},
	// The process: env, cwd, ids, hostname, and a command that cannot run.
	{[]string{"environment variable"}, errdefs.ErrInvalidArgument},
	{[]string{"Cwd must be an absolute path"}, errdefs.ErrInvalidArgument},
	{[]string{"error during container init: mkdir "}, errdefs.ErrInvalidArgument},
	{[]string{"uids and gids must be in range"}, errdefs.ErrInvalidArgument},
	{[]string{"sethostname: invalid argument"}, errdefs.ErrInvalidArgument},
	{[]string{`exec: "`, "executable file not found"}, errdefs.ErrInvalidArgument},
	{[]string{`exec: "`, "no such file or directory"}, errdefs.ErrInvalidArgument},
	{[]string{`exec: "`, "permission denied"}, errdefs.ErrInvalidArgument},
	{[]string{"argument list too long"}, errdefs.ErrInvalidArgument},
	// conmon: a log path it cannot open ("Is a directory", "File name too
	// long"), an argument it cannot convert.
	{[]string{"Failed to open log file"}, errdefs.ErrInvalidArgument},
	{[]string{"option parsing failed"}, errdefs.ErrInvalidArgument},
}

// runtimeErrorClass is the class of the runtime's (or conmon's) failure
// msg, or nil when nothing says the request caused it: such failures stay
// unclassified.
func runtimeErrorClass(msg string) error {
	for _, f := range runtimeFailures {
		if containsAll(msg, f.patterns) {
			return f.class
		}
	}
	return nil
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// classify wraps err, a failure the runtime or conmon reported as msg, in
// its class when it has one.
func classify(err error, msg string) error {
	if class := runtimeErrorClass(msg); class != nil {
		return errdefs.Newf(class, "%w", err)
	}
	return err
}
