package runc

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/crivm/crivm/internal/errdefs"
)

// The messages are runc 1.1.5's and conmon 2.1.6's, as crivm saw them.
func TestRuntimeErrorClass(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  string
		want error // nil: unclassified
	}{
		{"cpuset the host lacks", `unable to start container process: unable to apply cgroup configuration: failed to write "5": write /sys/fs/cgroup/cpuset/crivm/crivm-x/cpuset.cpus: numerical result out of range`, errdefs.ErrInvalidArgument},
		{"quota refused by the parent", `error setting cgroup config for procHooks process: failed to write "999": write /sys/fs/cgroup/cpu/crivm/crivm-x/cpu.cfs_quota_us: invalid argument`, errdefs.ErrInvalidArgument},
		{"cpu shares", `level=error msg="the minimum allowed cpu-shares is 2"`, errdefs.ErrInvalidArgument},
		{"limit below usage", `Setting back cgroup configs failed due to error: unable to set memory limit to 4096 (current usage: 229376, peak usage: 2789376)`, errdefs.ErrFailedPrecondition},
		{"unknown sysctl", `error during container init: open /proc/sys/net/ipv4/nonexistent: no such file or directory`, errdefs.ErrInvalidArgument},
		{"sysctl value", `error during container init: write /proc/sys/net/ipv4/ip_forward: invalid argument`, errdefs.ErrInvalidArgument},
		{"env", `error during container init: environment variable name can't contain null(\x00): "A\x00=ok"`, errdefs.ErrInvalidArgument},
		{"cwd is a file", `error during container init: mkdir /bin/busybox: not a directory`, errdefs.ErrInvalidArgument},
		{"mount in /proc", `error during container init: error mounting "/dev/null" to rootfs at "/proc/x": "/r/merged/proc/x" cannot be mounted because it is inside /proc`, errdefs.ErrInvalidArgument},
		{"uid", `unable to setup user: uids and gids must be in range 0-2147483647`, errdefs.ErrInvalidArgument},
		{"missing command", `unable to start container process: exec: "/no/such/binary": stat /no/such/binary: no such file or directory`, errdefs.ErrInvalidArgument},
		{"command not in PATH", `unable to start container process: exec: "nope": executable file not found in $PATH`, errdefs.ErrInvalidArgument},
		{"command is a directory", `unable to start container process: exec: "/etc": permission denied`, errdefs.ErrInvalidArgument},
		{"argv too long", `exec /bin/busybox: argument list too long`, errdefs.ErrInvalidArgument},
		{"conmon log file", `[conmon:e]: Failed to open log file Is a directory`, errdefs.ErrInvalidArgument},
		{"conmon arguments", `conmon: option parsing failed: Invalid byte sequence in conversion input`, errdefs.ErrInvalidArgument},

		{"state dir gone", `open /run/crivm/handlers/runc/state/x/state.json: no such file or directory`, nil},
		{"cgroup dir gone", `unable to apply cgroup configuration: mkdir /sys/fs/cgroup/pids/crivm: read-only file system`, nil},
		{"empty", ``, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runtimeErrorClass(tc.msg); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			err := classify(fmt.Errorf("runtime create failed: %s", tc.msg), tc.msg)
			if tc.want != nil && !errors.Is(err, tc.want) || tc.want == nil && errdefs.Code(err) != codes.Unknown {
				t.Errorf("classify: %v (%v), want class %v", err, errdefs.Code(err), tc.want)
			}
		})
	}
}
