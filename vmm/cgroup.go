package vmm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.podman.io/storage/pkg/reexec"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/cgroupstat"
	"github.com/crivm/crivm/internal/errdefs"
)

// A VM pod's cgroup.
//
// QEMU and virtiofsd run in a cgroup of the sandbox, <cgroup_parent>/crivm-<id>
// (CgroupDefaultParent when the pod gives none, as for runc pods), so the
// pod's limits, the kubelet's stats and its eviction cover the whole VM.
// Under the systemd driver the cgroup is a transient scope in the pod's
// slice instead (cgroup_systemd.go); what follows holds for both.
//
// They are in it from their first instruction, so that nothing they
// allocate is charged to the daemon:
//
//   - cgroup v2 (unified): clone3 with CLONE_INTO_CGROUP (Go's
//     SysProcAttr.UseCgroupFD) starts the process in the cgroup.
//   - cgroup v1 (and hybrid): the daemon binary re-executes itself as a
//     tiny shim (CgroupExecName) that writes its pid to cgroup.procs in
//     every hierarchy (files the daemon opened and passed down: the shim
//     runs in the pod's mount namespace, which has no /sys), then execs
//     QEMU: the memory QEMU allocates belongs to an mm made by that exec,
//     inside the pod's memory cgroup. The binary must call reexec.Init
//     first thing in main (cmd/crivm does).
//   - a systemd scope not started yet (v1 and v2): the shim reports its
//     pid and waits while the daemon starts the scope with it
//     (cgroup_systemd.go), then execs.
//
// v1 hierarchies joined: cpu, cpuacct, cpuset (cpuset.cpus and .mems copied
// from the parent into each level made here), memory, pids, blkio, freezer,
// hugetlb, net_cls, net_prio, perf_event and the named systemd hierarchy,
// plus the unified tree on hybrid hosts, as runc does for a container. Not
// devices: QEMU opens host devices (/dev/kvm, /dev/net/tun, /dev/vhost-*)
// that device rules written for containers do not list, and a VM pod's
// containers get their device cgroup inside the guest.

// CgroupDefaultParent is the parent of a sandbox's cgroup when the pod
// gives no cgroup_parent (oci's default for runc pods too).
const CgroupDefaultParent = "/crivm"

// CgroupExecName is the argv[0] under which the daemon binary re-executes
// itself to start a process inside a v1 cgroup (see Cgroup).
const CgroupExecName = "crivm-cgroup-exec"

func init() { reexec.Register(CgroupExecName, cgroupExecMain) }

// SandboxCgroupPath is the cgroup of sandbox id under parent with the
// cgroupfs driver: parent + "/crivm-" + id, parent defaulting to
// CgroupDefaultParent. A systemd slice is refused.
func SandboxCgroupPath(parent, id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return "", errdefs.InvalidArgument("sandbox id %q", id)
	}
	if parent == "" {
		parent = CgroupDefaultParent
	}
	if strings.HasSuffix(path.Base(parent), ".slice") {
		return "", errdefs.InvalidArgument("cgroup parent %q is a systemd slice, but the cgroup driver is cgroupfs", parent)
	}
	if !strings.HasPrefix(parent, "/") {
		return "", errdefs.InvalidArgument("cgroup parent %q is not an absolute path", parent)
	}
	// path.Join cleans: a ".." cannot climb above the hierarchy's root.
	return path.Join("/", parent, "crivm-"+id), nil
}

// cgroupHierarchy is one mounted v1 hierarchy.
type cgroupHierarchy struct {
	// Controllers as in /proc/self/cgroup ("cpu", "memory",
	// "name=systemd"); one mount may carry several ("cpu,cpuacct").
	Controllers []string
	Mount       string
}

func (h cgroupHierarchy) has(c string) bool {
	for _, x := range h.Controllers {
		if x == c {
			return true
		}
	}
	return false
}

// cgroupLayout is where the host mounts its cgroup hierarchies.
type cgroupLayout struct {
	// V1 are the v1 hierarchies a VM joins. Empty on a pure v2 host.
	V1 []cgroupHierarchy
	// Unified is the cgroup2 mount ("" when none): the whole tree on v2,
	// a controller-less tree beside V1 on hybrid hosts.
	Unified string
}

// v2 reports a pure cgroup v2 host: the controllers are in Unified.
func (l *cgroupLayout) v2() bool { return len(l.V1) == 0 && l.Unified != "" }

// v1Joined are the controllers (and named hierarchies) whose v1
// hierarchies a VM joins; see the package comment above.
var v1Joined = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "pids": true, "blkio": true,
	"freezer": true, "hugetlb": true, "net_cls": true, "net_prio": true, "perf_event": true,
	"name=systemd": true,
}

// v1Controllers are the kernel's v1 controller names, to tell them from
// mount options in a cgroup mount's super options.
var v1Controllers = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "pids": true, "blkio": true,
	"freezer": true, "hugetlb": true, "net_cls": true, "net_prio": true, "perf_event": true,
	"devices": true, "rdma": true, "misc": true, "debug": true,
}

// parseCgroupLayout reads a mountinfo. Mounts of a hierarchy's subtree
// (root other than "/", as inside a cgroup namespace) and second mounts
// of one hierarchy are skipped.
func parseCgroupLayout(r io.Reader) (*cgroupLayout, error) {
	l := &cgroupLayout{}
	seen := map[string]bool{}
	realV1 := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || f[3] != "/" {
			continue
		}
		mount := unescapeMountinfo(f[4])
		switch g[0] {
		case "cgroup2":
			if l.Unified == "" {
				l.Unified = mount
			}
		case "cgroup":
			var h cgroupHierarchy
			join := false
			for _, o := range strings.Split(g[2], ",") {
				if v1Controllers[o] || strings.HasPrefix(o, "name=") {
					h.Controllers = append(h.Controllers, o)
					join = join || v1Joined[o]
					realV1 = realV1 || v1Controllers[o]
				}
			}
			key := strings.Join(h.Controllers, ",")
			if len(h.Controllers) == 0 || seen[key] {
				continue
			}
			seen[key] = true
			if join {
				h.Mount = mount
				l.V1 = append(l.V1, h)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !realV1 {
		// A named v1 hierarchy beside a v2 tree carries no controller:
		// the host is v2.
		l.V1 = nil
	}
	if len(l.V1) == 0 && l.Unified == "" {
		return nil, errdefs.FailedPrecondition("no cgroup hierarchy is mounted")
	}
	return l, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var hostCgroupLayout = sync.OnceValues(func() (*cgroupLayout, error) {
	// The calling thread's view: the host's (only podns's discarded
	// threads see another).
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseCgroupLayout(f)
})

// Cgroup is one cgroup of a VM, by its path below the root of every
// hierarchy it is placed in.
type Cgroup struct {
	// Path is absolute and clean, e.g.
	// /kubepods/besteffort/pod<uid>/crivm-<sandbox id>.
	Path string
	l    *cgroupLayout
	// scope is the systemd unit that owns Path under the systemd
	// driver; nil under cgroupfs.
	scope *systemdScope
}

// NewCgroup is the cgroup at p (absolute) in this host's hierarchies. It
// creates nothing.
func NewCgroup(p string) (*Cgroup, error) {
	l, err := hostCgroupLayout()
	if err != nil {
		return nil, fmt.Errorf("reading the host's cgroup mounts: %w", err)
	}
	return newCgroup(l, p)
}

func newCgroup(l *cgroupLayout, p string) (*Cgroup, error) {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
		return nil, errdefs.InvalidArgument("cgroup path %q: want a clean absolute path below the root", p)
	}
	return &Cgroup{Path: p, l: l}, nil
}

// Version is "v1", "hybrid" (v1 controllers beside a unified tree) or "v2".
func (c *Cgroup) Version() string {
	switch {
	case c.l.v2():
		return "v2"
	case c.l.Unified != "":
		return "hybrid"
	}
	return "v1"
}

// Dirs are the cgroup's directories: one per joined v1 hierarchy, plus the
// unified one on hybrid hosts; the unified one alone on v2.
func (c *Cgroup) Dirs() []string {
	var out []string
	for _, h := range c.l.V1 {
		out = append(out, filepath.Join(h.Mount, c.Path))
	}
	if c.l.Unified != "" {
		out = append(out, filepath.Join(c.l.Unified, c.Path))
	}
	return out
}

// MemoryDir is the cgroup's directory in the memory hierarchy (v1) or the
// unified tree (v2); "" when the host has no memory controller.
func (c *Cgroup) MemoryDir() string {
	if m := c.memoryMount(); m != "" {
		return filepath.Join(m, c.Path)
	}
	return ""
}

func (c *Cgroup) memoryMount() string {
	if c.l.v2() {
		return c.l.Unified
	}
	for _, h := range c.l.V1 {
		if h.has("memory") {
			return h.Mount
		}
	}
	return ""
}

// Stats reads the cgroup's usage, as cgroupstat reads a container's: the
// whole VM's (QEMU and virtiofsd), host-side.
func (c *Cgroup) Stats() (*cgroupstat.Stats, error) {
	if c.l.v2() {
		return cgroupstat.ReadV2(filepath.Join(c.l.Unified, c.Path))
	}
	d, err := cgroupstat.ReadV1(func(controller string) string {
		for _, h := range c.l.V1 {
			if h.has(controller) {
				return filepath.Join(h.Mount, c.Path)
			}
		}
		return ""
	})
	if err == nil && c.l.Unified != "" {
		d.ReadUnified(filepath.Join(c.l.Unified, c.Path))
	}
	return d, err
}

// v2Controllers are enabled in each ancestor's cgroup.subtree_control (those
// the kernel offers there), so that the VM's cgroup has them.
var v2Controllers = []string{"cpu", "cpuset", "io", "memory", "pids", "hugetlb"}

// Create makes the cgroup (and its missing ancestors) in every hierarchy.
// Idempotent. On v1, each cpuset level without CPUs or memory nodes gets
// its parent's; on v2, the ancestors' subtree_control enables the
// controllers above where the kernel offers them (best effort: the
// kubelet's pod cgroups already have them).
//
// A systemd scope is made with its first process (place), not here:
// Create only checks that systemd answers, so that an unreachable one
// fails the pod before anything runs.
func (c *Cgroup) Create() error {
	if c.scope != nil {
		return checkSystemd(context.Background())
	}
	return c.createDirs()
}

// createDirs is Create's work under cgroupfs, and what a systemd scope
// needs beside systemd's own directories: those of the v1 hierarchies
// systemd does not manage. v2 controllers are systemd's to enable there.
func (c *Cgroup) createDirs() error {
	for _, h := range c.l.V1 {
		if err := mkdirLevels(h.Mount, c.Path, h.has("cpuset")); err != nil {
			return err
		}
	}
	if c.l.Unified != "" {
		if c.l.v2() && c.scope == nil {
			enableV2Controllers(c.l.Unified, path.Dir(c.Path))
		}
		if err := mkdirLevels(c.l.Unified, c.Path, false); err != nil {
			return err
		}
	}
	return nil
}

// join makes c's dirs where missing and writes pid to each cgroup.procs.
func (c *Cgroup) join(pid int) error {
	if err := c.createDirs(); err != nil {
		return err
	}
	b := []byte(strconv.Itoa(pid))
	for _, d := range c.Dirs() {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), b, 0o644); err != nil {
			return fmt.Errorf("joining pid %d to cgroup %s: %w", pid, d, err)
		}
	}
	return nil
}

// mkdirLevels makes root/p one level at a time; with cpuset, each level
// gets its parent's cpuset.cpus and cpuset.mems where it has none (a new
// v1 cpuset takes no task until both are set).
func mkdirLevels(root, p string, cpuset bool) error {
	dir := root
	for _, e := range strings.Split(strings.Trim(p, "/"), "/") {
		parent := dir
		dir = filepath.Join(dir, e)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		if cpuset {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := inheritCgroupValue(parent, dir, f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// inheritCgroupValue copies parent/f to dir/f when dir/f is empty.
func inheritCgroupValue(parent, dir, f string) error {
	cur, _ := os.ReadFile(filepath.Join(dir, f))
	if strings.TrimSpace(string(cur)) != "" {
		return nil
	}
	v, err := os.ReadFile(filepath.Join(parent, f))
	if err != nil {
		return fmt.Errorf("reading %s: %w", filepath.Join(parent, f), err)
	}
	if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
		return fmt.Errorf("setting %s from its parent: %w", filepath.Join(dir, f), err)
	}
	return nil
}

// enableV2Controllers enables v2Controllers in the subtree_control of root
// and every level of p below it, where cgroup.controllers offers them and
// they are off. Errors are ignored: a level with processes of its own
// refuses (the no-internal-process rule), and the VM runs without that
// controller rather than not at all.
func enableV2Controllers(root, p string) {
	dir := root
	levels := []string{dir}
	for _, e := range strings.Split(strings.Trim(p, "/"), "/") {
		if e == "" {
			continue
		}
		dir = filepath.Join(dir, e)
		levels = append(levels, dir)
	}
	for _, d := range levels {
		offered, err := os.ReadFile(filepath.Join(d, "cgroup.controllers"))
		if err != nil {
			return
		}
		on, _ := os.ReadFile(filepath.Join(d, "cgroup.subtree_control"))
		have := strings.Fields(string(on))
		var add []string
		for _, want := range v2Controllers {
			if fieldsHave(strings.Fields(string(offered)), want) && !fieldsHave(have, want) {
				add = append(add, "+"+want)
			}
		}
		if len(add) > 0 {
			_ = os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte(strings.Join(add, " ")), 0o644)
		}
	}
}

func fieldsHave(fields []string, s string) bool {
	for _, f := range fields {
		if f == s {
			return true
		}
	}
	return false
}

// cgroupRemoveWait bounds how long Remove retries a cgroup that still
// holds exiting processes (EBUSY).
var cgroupRemoveWait = 3 * time.Second

// Remove removes the cgroup's directory in every hierarchy, once the
// processes in it are gone: a busy one (EBUSY, e.g. virtiofsd's sandboxed
// child still exiting) is retried for a few seconds. Its ancestors stay
// (they are the kubelet's, or shared). A cgroup that does not exist is
// fine. A systemd scope is stopped first (systemd removes its own
// directories); with systemd unreachable, a scope none of whose
// directories exists is taken for never made.
func (c *Cgroup) Remove(ctx context.Context) error {
	var errs []error
	if c.scope != nil {
		if err := stopScope(ctx, c.scope); err != nil && (!errdefs.IsClass(err, errdefs.ErrFailedPrecondition) || c.anyDir()) {
			errs = append(errs, err)
		}
	}
	deadline := time.Now().Add(cgroupRemoveWait)
	for _, d := range c.Dirs() {
		for {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			procs, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w (processes in it: %s)", d, err, strings.Join(strings.Fields(string(procs)), " ")))
			break
		}
	}
	return errors.Join(errs...)
}

// anyDir reports that the cgroup's directory exists in some hierarchy.
func (c *Cgroup) anyDir() bool {
	for _, d := range c.Dirs() {
		if _, err := os.Stat(d); err == nil {
			return true
		}
	}
	return false
}

// KillAll SIGKILLs every process in the cgroup: the VMM processes of a
// sandbox whose daemon died before it could record them (a crash between
// QEMU's start and its pidfile). The cgroup is the sandbox's own, so
// whatever is in it is the VM's. It does not wait; Remove does.
func (c *Cgroup) KillAll() error {
	var errs []error
	for _, d := range c.Dirs() {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		// ENODEV: a cgroup being removed (systemd removes an emptied
		// scope's on its own).
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 0 {
				continue
			}
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("killing pid %d in cgroup %s: %w", pid, d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// MemoryLimit is the tightest memory limit above the cgroup: the lowest
// of its ancestors' memory.limit_in_bytes (v1) or memory.max (v2), which
// bounds everything in the cgroup. Zero: none. at is the cgroup path that
// sets it. Ancestors that do not exist yet are skipped.
func (c *Cgroup) MemoryLimit() (limit uint64, at string, err error) {
	mount := c.memoryMount()
	if mount == "" {
		return 0, "", nil
	}
	file := "memory.limit_in_bytes"
	if c.l.v2() {
		file = "memory.max"
	}
	for p := path.Dir(c.Path); p != "/"; p = path.Dir(p) {
		b, err := os.ReadFile(filepath.Join(mount, p, file))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, "", err
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			continue
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, "", fmt.Errorf("%s: %w", filepath.Join(mount, p, file), err)
		}
		// v1 reports "no limit" as the page counter's maximum.
		if v >= 1<<62 {
			continue
		}
		if limit == 0 || v < limit {
			limit, at = v, p
		}
	}
	return limit, at, nil
}

// place makes cmd start inside c: through CLONE_INTO_CGROUP on v2, through
// the CgroupExecName shim on v1, through the shim's sync mode when c is a
// systemd scope not started yet. The returned func releases what place
// held; call it once cmd has started (or failed to).
func (c *Cgroup) place(cmd *exec.Cmd) (func(), error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &unix.SysProcAttr{}
	}
	if c.scope != nil && !c.exists() {
		return c.placeFirst(cmd)
	}
	if c.l.v2() {
		dir := filepath.Join(c.l.Unified, c.Path)
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening cgroup %s: %w", dir, err)
		}
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = fd
		return func() { unix.Close(fd) }, nil
	}
	self, err := selfPath()
	if err != nil {
		return nil, err
	}
	// The shim may start in a mount namespace without /sys (podns): it
	// joins through cgroup.procs files opened here, inherited as fds 3...
	files, release := []*os.File{}, func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	for _, d := range c.Dirs() {
		f, err := os.OpenFile(filepath.Join(d, "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			release(files)
			return nil, fmt.Errorf("opening cgroup %s: %w", d, err)
		}
		files = append(files, f)
	}
	args := []string{CgroupExecName, strconv.Itoa(len(cmd.ExtraFiles) + 3), strconv.Itoa(len(files)), "--", cmd.Path}
	args = append(args, cmd.Args[1:]...)
	cmd.Path, cmd.Args = self, args
	cmd.ExtraFiles = append(cmd.ExtraFiles, files...)
	return func() { release(files) }, nil
}

// selfPath is this binary, for the shim; it fails when main does not run
// reexec.Init, where re-executing would start the program itself again.
func selfPath() (p string, err error) {
	defer func() {
		if recover() != nil {
			err = errdefs.FailedPrecondition("this program cannot start processes in a cgroup v1 hierarchy: its main does not call reexec.Init")
		}
	}()
	return reexec.Command(CgroupExecName).Path, nil
}

// cgroupExecUsage is the shim's command line: -sync FD selects the sync
// mode (cgroupExecSync on FD before anything else).
var cgroupExecUsage = fmt.Errorf("usage: %s [-sync FD] FIRST_FD COUNT -- /PROGRAM [ARG...]", CgroupExecName)

// cgroupExecSyncArg splits off the shim's "-sync FD"; sync is -1 without.
func cgroupExecSyncArg(args []string) (sync int, rest []string, err error) {
	if len(args) == 0 || args[0] != "-sync" {
		return -1, args, nil
	}
	if len(args) < 2 {
		return -1, nil, cgroupExecUsage
	}
	fd, err := strconv.Atoi(args[1])
	if err != nil || fd < 3 {
		return -1, nil, cgroupExecUsage
	}
	return fd, args[2:], nil
}

// cgroupExecArgs splits the shim's arguments: the first inherited
// cgroup.procs fd, their count, "--", then the program and its arguments.
func cgroupExecArgs(args []string) (fds []int, argv []string, err error) {
	if len(args) < 4 || args[2] != "--" || !filepath.IsAbs(args[3]) {
		return nil, nil, cgroupExecUsage
	}
	first, err1 := strconv.Atoi(args[0])
	n, err2 := strconv.Atoi(args[1])
	if err1 != nil || err2 != nil || first < 3 || n < 0 || n > 64 {
		return nil, nil, cgroupExecUsage
	}
	for i := range n {
		fds = append(fds, first+i)
	}
	return fds, args[3:], nil
}

// cgroupExecMain is the shim: in sync mode it waits until the daemon has
// placed it, it writes its pid to each inherited cgroup.procs fd, then
// execs the program, which keeps its pid. Errors go to stderr (the
// program's log) and end the shim with 126 (cgroup) or 127 (exec).
func cgroupExecMain() {
	sync, args, err := cgroupExecSyncArg(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "crivm: %v\n", err)
		os.Exit(2)
	}
	fds, argv, err := cgroupExecArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crivm: %v\n", err)
		os.Exit(2)
	}
	if sync >= 0 {
		if err := cgroupExecSync(sync); err != nil {
			fmt.Fprintf(os.Stderr, "crivm: %v\n", err)
			os.Exit(126)
		}
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	for _, fd := range fds {
		if _, err := unix.Write(fd, pid); err != nil {
			fmt.Fprintf(os.Stderr, "crivm: joining the cgroup behind fd %d: %v\n", fd, err)
			os.Exit(126)
		}
		unix.Close(fd)
	}
	err = unix.Exec(argv[0], argv, os.Environ())
	fmt.Fprintf(os.Stderr, "crivm: exec %s: %v\n", argv[0], err)
	os.Exit(127)
}
