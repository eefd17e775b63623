package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
)

// A VM pod's cgroup under the systemd cgroup driver.
//
// With cgroup_manager = "systemd" the pod's cgroup_parent is a slice
// ("kubepods-burstable-pod<uid>.slice") and every cgroup below it belongs
// to a systemd unit. The VM's is the transient scope crivm-vm-<id>.scope in
// that slice, at ExpandSlice(slice) + "/crivm-vm-<id>.scope", started over
// systemd's private D-Bus socket as runc starts a container's: Slice=,
// Delegate=yes (the processes in it and its subtree are crivm's to place),
// DefaultDependencies=no, and PIDs= its first process.
//
// systemd makes a scope's cgroup by moving that first process into it,
// so the process cannot be cloned into a directory that does not exist
// yet. The first of virtiofsd and QEMU therefore starts as the
// CgroupExecName shim in its sync mode (on v2 too): the shim reports its
// pid on a socket and blocks; the daemon starts the scope with that pid and
// waits for the job, joins the pid to the v1 hierarchies systemd leaves
// alone (cpuset, freezer, hugetlb, ... as runc does), then lets the shim
// exec. Once the scope exists, a later process is placed as under
// cgroupfs, by path. Stats, KillAll and MemoryLimit read the same paths;
// Remove stops the scope, then removes what systemd leaves.

// CgroupDefaultSlice is the slice of a sandbox's scope when the pod gives
// no cgroup_parent under the systemd driver (oci's default for runc pods
// too).
const CgroupDefaultSlice = "system.slice"

// systemdSocket is systemd's private D-Bus socket: root only, and no bus
// daemon needed (runc talks to systemd there too). Only tests change it.
var systemdSocket = "/run/systemd/private"

// systemdJobWait bounds a wait for systemd: connecting, and a scope's
// start or stop job.
const systemdJobWait = 30 * time.Second

// ExpandSlice is the cgroup path of a systemd slice, as runc computes it:
// "a-b-c.slice" is "/a.slice/a-b.slice/a-b-c.slice", "-.slice" the root.
// A name with a "/", an empty component ("a--b.slice", "-a.slice") or
// without the suffix is refused.
func ExpandSlice(slice string) (string, error) {
	const suffix = ".slice"
	name, ok := strings.CutSuffix(slice, suffix)
	if !ok || strings.Contains(slice, "/") {
		return "", errdefs.InvalidArgument("invalid systemd slice name %q", slice)
	}
	if name == "-" {
		return "/", nil
	}
	var p, prefix string
	for _, c := range strings.Split(name, "-") {
		if c == "" {
			return "", errdefs.InvalidArgument("invalid systemd slice name %q", slice)
		}
		p += "/" + prefix + c + suffix
		prefix += c + "-"
	}
	return p, nil
}

// SandboxScope is the systemd scope of sandbox id under parent: a slice
// name, or a path whose last element is one (as oci takes it), defaulting
// to CgroupDefaultSlice. It returns the slice, the scope's unit name and
// its cgroup path.
func SandboxScope(parent, id string) (slice, unit, cgroupPath string, err error) {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return "", "", "", errdefs.InvalidArgument("sandbox id %q", id)
	}
	if parent == "" {
		parent = CgroupDefaultSlice
	}
	slice = path.Base(parent)
	if !strings.HasSuffix(slice, ".slice") || slice == ".slice" {
		return "", "", "", errdefs.InvalidArgument("cgroup parent %q is not a systemd slice, but the cgroup driver is systemd", parent)
	}
	dir, err := ExpandSlice(slice)
	if err != nil {
		return "", "", "", fmt.Errorf("cgroup parent %q: %w", parent, err)
	}
	unit = "crivm-vm-" + id + ".scope"
	return slice, unit, path.Join(dir, unit), nil
}

// systemdScope is the unit that owns a Cgroup under the systemd driver.
type systemdScope struct {
	Unit, Slice string
	// mu serializes adopt: two processes starting at once make one scope.
	mu sync.Mutex
}

// NewSystemdCgroup is the cgroup of sandbox id's scope under parent (see
// SandboxScope) in this host's hierarchies. It creates nothing.
func NewSystemdCgroup(parent, id string) (*Cgroup, error) {
	slice, unit, p, err := SandboxScope(parent, id)
	if err != nil {
		return nil, err
	}
	c, err := NewCgroup(p)
	if err != nil {
		return nil, err
	}
	c.scope = &systemdScope{Unit: unit, Slice: slice}
	return c, nil
}

// Unit is the systemd scope that owns the cgroup; "" under cgroupfs.
func (c *Cgroup) Unit() string {
	if c.scope == nil {
		return ""
	}
	return c.scope.Unit
}

// scopeProperties are the properties of the transient scope for a VM
// whose first process is pid.
func scopeProperties(s *systemdScope, pid int) []sddbus.Property {
	prop := func(name string, v any) sddbus.Property {
		return sddbus.Property{Name: name, Value: godbus.MakeVariant(v)}
	}
	return []sddbus.Property{
		sddbus.PropDescription("crivm VM of sandbox " + strings.TrimSuffix(strings.TrimPrefix(s.Unit, "crivm-vm-"), ".scope")),
		sddbus.PropSlice(s.Slice),
		// crivm places QEMU and virtiofsd in the scope and reads its
		// cgroup files; systemd must not move or limit them.
		prop("Delegate", true),
		// Not ordered after basic.target nor stopped at shutdown.target:
		// the VM lives as long as its pod, as a runc container's scope.
		prop("DefaultDependencies", false),
		prop("MemoryAccounting", true),
		prop("CPUAccounting", true),
		prop("TasksAccounting", true),
		sddbus.PropPids(uint32(pid)),
	}
}

// dbusAddress escapes a socket path for a D-Bus address.
func dbusAddress(socket string) string {
	var b strings.Builder
	b.WriteString("unix:path=")
	for i := 0; i < len(socket); i++ {
		c := socket[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_/.\\*", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

// connectSystemd connects to systemd's private socket. The connection
// lives until ctx ends or it is closed. Failing to connect is
// FailedPrecondition: the host's systemd is not there for crivm.
func connectSystemd(ctx context.Context) (*sddbus.Conn, error) {
	socket := systemdSocket
	conn, err := sddbus.NewConnection(func() (*godbus.Conn, error) {
		c, err := godbus.Dial(dbusAddress(socket), godbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err := c.Auth([]godbus.Auth{godbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return nil, errdefs.FailedPrecondition("connecting to systemd at %s (cgroup_manager = \"systemd\" places VM pods in systemd scopes): %w", socket, err)
	}
	return conn, nil
}

// dbusErrorIs reports a D-Bus error reply named name.
func dbusErrorIs(err error, name string) bool {
	var e godbus.Error
	return errors.As(err, &e) && e.Name == name
}

// waitJob waits for a systemd job's result on ch.
func waitJob(ctx context.Context, ch <-chan string, what string) error {
	select {
	case r := <-ch:
		if r != "done" {
			return fmt.Errorf("%s: systemd's job ended %q", what, r)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for systemd's job: %w", what, ctx.Err())
	}
}

// startScope starts the scope with pid as its first process and waits
// until systemd has made its cgroup.
func startScope(ctx context.Context, s *systemdScope, pid int) error {
	return withSystemd(ctx, func(ctx context.Context, conn *sddbus.Conn) error {
		ch := make(chan string, 1)
		if _, err := conn.StartTransientUnitContext(ctx, s.Unit, "replace", scopeProperties(s, pid), ch); err != nil {
			return fmt.Errorf("starting systemd scope %s in %s: %w", s.Unit, s.Slice, err)
		}
		if err := waitJob(ctx, ch, "starting systemd scope "+s.Unit); err != nil {
			// A failed unit stays loaded under its name until reset.
			_ = conn.ResetFailedUnitContext(context.WithoutCancel(ctx), s.Unit)
			return err
		}
		return nil
	})
}

// stopScope stops the scope and waits for the job; a scope that is not
// loaded (never made, or gone with its last process) is fine.
func stopScope(ctx context.Context, s *systemdScope) error {
	return withSystemd(ctx, func(ctx context.Context, conn *sddbus.Conn) error {
		ch := make(chan string, 1)
		_, err := conn.StopUnitContext(ctx, s.Unit, "replace", ch)
		switch {
		case dbusErrorIs(err, "org.freedesktop.systemd1.NoSuchUnit"):
			return nil
		case err != nil:
			return fmt.Errorf("stopping systemd scope %s: %w", s.Unit, err)
		}
		if err := waitJob(ctx, ch, "stopping systemd scope "+s.Unit); err != nil {
			return err
		}
		// A scope that failed (a process OOM-killed, say) stays loaded as
		// failed until reset; it is gone after this.
		if err := conn.ResetFailedUnitContext(ctx, s.Unit); err != nil && !dbusErrorIs(err, "org.freedesktop.systemd1.NoSuchUnit") && !dbusErrorIs(err, "org.freedesktop.systemd1.LoadFailed") {
			return fmt.Errorf("resetting systemd scope %s: %w", s.Unit, err)
		}
		return nil
	})
}

// checkSystemd connects to systemd and closes the connection, for an
// early, precise error before any process is started.
func checkSystemd(ctx context.Context) error {
	return withSystemd(ctx, func(context.Context, *sddbus.Conn) error { return nil })
}

// withSystemd runs fn with a connection to systemd, all of it bounded by
// systemdJobWait.
func withSystemd(ctx context.Context, fn func(context.Context, *sddbus.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, systemdJobWait)
	defer cancel()
	conn, err := connectSystemd(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(ctx, conn)
}

// exists reports that the cgroup's directory exists in every hierarchy.
func (c *Cgroup) exists() bool {
	for _, d := range c.Dirs() {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return false
		}
	}
	return true
}

// adopt puts pid, a process that has run nothing of its own yet, in the
// scope's cgroup in every hierarchy: the scope is started with pid as its
// first process when it does not exist yet, then pid joins the
// hierarchies systemd left alone (made here, as runc makes them).
func (c *Cgroup) adopt(ctx context.Context, pid int) error {
	c.scope.mu.Lock()
	defer c.scope.mu.Unlock()
	if !c.exists() {
		err := startScope(ctx, c.scope, pid)
		if err != nil && !dbusErrorIs(err, "org.freedesktop.systemd1.UnitExists") {
			return err
		}
	}
	return c.join(pid)
}

// shimSyncWait bounds how long the daemon waits for the shim to report
// its pid and how long the placement of that pid may take.
const shimSyncWait = 45 * time.Second

// placeFirst makes cmd start as the shim in its sync mode: adopt places
// the shim's pid (starting the scope) while it waits, then it execs cmd's
// program. The returned func releases the shim's end of the socket; call
// it once cmd has started (or failed to).
func (c *Cgroup) placeFirst(cmd *exec.Cmd) (func(), error) {
	self, err := selfPath()
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating the shim's socket: %w", err)
	}
	// The kernel attaches the sender's pid to what the shim writes: the
	// pid placed is the writer's, whatever it says.
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("creating the shim's socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "cgroup sync"), os.NewFile(uintptr(fds[1]), "cgroup sync (shim)")
	fc, err := net.FileConn(ours)
	ours.Close()
	conn, ok := fc.(*net.UnixConn)
	if err != nil || !ok {
		theirs.Close()
		return nil, fmt.Errorf("creating the shim's socket: %w", errors.Join(err, errors.ErrUnsupported))
	}
	syncFD := len(cmd.ExtraFiles) + 3
	args := []string{CgroupExecName, "-sync", strconv.Itoa(syncFD), strconv.Itoa(syncFD + 1), "0", "--", cmd.Path}
	args = append(args, cmd.Args[1:]...)
	cmd.Path, cmd.Args = self, args
	cmd.ExtraFiles = append(cmd.ExtraFiles, theirs)
	go c.serveShim(conn)
	return func() { theirs.Close() }, nil
}

// serveShim reads the shim's pid report from conn, places the pid the
// kernel says sent it, and answers: a zero byte, or why it could not be
// placed (the shim prints that to its log and exits 126). A shim that ends
// before reporting (cmd did not start) closes its end: there is nothing to
// place.
func (c *Cgroup) serveShim(conn *net.UnixConn) {
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), shimSyncWait)
	defer cancel()
	conn.SetDeadline(time.Now().Add(shimSyncWait))
	pid, err := readShimReport(conn)
	if err != nil {
		if !errors.Is(err, io.EOF) {
			fmt.Fprintf(conn, "reading the pid report: %v", err)
		}
		return
	}
	if err := c.adopt(ctx, pid); err != nil {
		fmt.Fprintf(conn, "placing pid %d in cgroup %s: %v", pid, c.Path, err)
		return
	}
	conn.Write([]byte{0})
}

// readShimReport reads the shim's "PID\n" and the credentials the kernel
// attached to it, and returns the pid when both agree.
func readShimReport(conn *net.UnixConn) (int, error) {
	buf, oob := make([]byte, 32), make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return 0, fmt.Errorf("no sender credentials (%d messages, %v)", len(msgs), err)
	}
	cred, err := unix.ParseUnixCredentials(&msgs[0])
	if err != nil {
		return 0, err
	}
	said, err := strconv.Atoi(strings.TrimSuffix(string(buf[:n]), "\n"))
	if err != nil || said != int(cred.Pid) || cred.Pid <= 0 {
		return 0, fmt.Errorf("pid report %q from pid %d", buf[:n], cred.Pid)
	}
	return int(cred.Pid), nil
}

// cgroupExecSync is the shim's side of serveShim on fd: it reports its
// pid and waits until the daemon has placed it.
func cgroupExecSync(fd int) error {
	f := os.NewFile(uintptr(fd), "cgroup sync")
	defer f.Close()
	if _, err := f.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		return fmt.Errorf("reporting to the daemon: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	switch {
	case len(b) == 1 && b[0] == 0:
		return nil
	case len(b) > 0:
		return errors.New(string(b))
	case err != nil:
		return fmt.Errorf("waiting for the daemon: %w", err)
	}
	return errors.New("the daemon did not place this process in its cgroup")
}
