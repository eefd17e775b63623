package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/internal/atomicfile"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/internal/podns"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/internal/steps"
	"github.com/crivm/crivm/netns"
)

// Files of a VM inside MachineConfig.Dir.
const (
	QMPSocketName   = "qmp.sock"
	AgentSocketName = "agent.sock"
	PidfileName     = "qemu.pid"
	ConsoleLogName  = "console.log"
	// QEMULogName receives QEMU's own stdout and stderr.
	QEMULogName = "qemu.log"
)

// BaseKernelArgs are always on the guest command line: the console on the
// first UART, no boot chatter, and a panic that ends QEMU (-no-reboot).
// QEMU does not pace its UART: the baud rate changes nothing (the agent
// test TestVMContainers/console_flood measures the console's rate).
const BaseKernelArgs = "console=ttyS0 quiet panic=-1"

// DefaultStartTimeout bounds QEMU's start-up (not the guest's boot).
const DefaultStartTimeout = 30 * time.Second

// Machine types.
const (
	MachineQ35     = "q35"
	MachineMicrovm = "microvm"
)

// MachineFor is the machine type to run under accel: microvm only under
// KVM (under TCG its guests hang at boot too often to use), else q35. The
// reason is set when the requested type is not honoured.
func MachineFor(requested, accel string) (machine, reason string) {
	if requested == MachineMicrovm && accel != AccelKVM {
		return MachineQ35, "machine_type microvm needs KVM (under TCG its guests hang at boot): using q35"
	}
	if requested == "" {
		return MachineQ35, ""
	}
	return requested, ""
}

// SharedDir is a host directory exported to the guest over 9p as Tag.
type SharedDir struct {
	Tag      string
	HostPath string
	ReadOnly bool
}

// VirtioFSDevice is a vhost-user-fs device served by a virtiofsd (see
// StartVirtiofsd) on Socket, mounted in the guest by Tag. Any such device
// puts guest RAM in a shared memfd, which vhost-user needs.
type VirtioFSDevice struct {
	Tag    string
	Socket string
}

// Tap is a tap device (already created, in NetNSPath) given to the guest
// as a virtio-net NIC.
type Tap struct {
	Name string
	// MAC is the guest NIC's address; empty: QEMU picks one.
	MAC string
	// Unplugged gives the NIC no host side (a template's: its clones get
	// their own tap); Name is then unused.
	Unplugged bool
}

// MachineConfig describes one VM.
type MachineConfig struct {
	QEMUPath string
	// Accel is AccelKVM or AccelTCG (resolve auto with ProbeAccel first).
	Accel string
	// MachineType is q35 (the default) or microvm, for KVM hosts: it is
	// given a PCIe host bridge (pcie=on), so the same virtio-pci devices
	// work; under TCG its guests hang at boot in about one boot of three
	// here (see MachineFor).
	MachineType string
	// CPU defaults to host under KVM and qemu64 under TCG.
	CPU   string
	VCPUs int
	// MemoryMiB is guest RAM; required (the handler sizes it from the pod
	// and its configured default_memory_mib).
	MemoryMiB int
	// TBSizeMiB is TCG's translation cache size; zero: QEMU's default.
	// 32 trims ~16 MB of host memory per VM.
	TBSizeMiB int
	// Kernel is an uncompressed PVH vmlinux (see Vmlinux); Initrd the
	// agent initrd (see Initrd).
	Kernel, Initrd string
	// KernelArgs are appended to BaseKernelArgs.
	KernelArgs string
	// Dir is the VM's private directory (created 0700 if missing). It
	// holds the QMP and agent sockets, the pidfile, console.log and
	// qemu.log, all made by the daemon (see launch); QEMU needs no access
	// to it.
	// Reconnect finds the VM again from it.
	Dir string
	// Name shows in ps and QMP; defaults to the base name of Dir.
	Name       string
	SharedDirs []SharedDir
	VirtioFS   []VirtioFSDevice
	// NetNSPath, when set, is the network namespace QEMU runs in (its
	// taps must live there).
	NetNSPath string
	// MountNS, when set, is the podns pin of the mount namespace QEMU
	// starts in: every path above must be visible there.
	MountNS string
	Taps    []Tap
	// VsockCID adds a vhost-vsock-pci device with this guest CID when
	// non-zero (needs /dev/vhost-vsock).
	VsockCID uint32
	// NoSandbox drops -sandbox on (QEMU's seccomp filter). Leave it off
	// unless the QEMU build lacks seccomp.
	NoSandbox bool
	// Cgroup, when set, is the cgroup QEMU starts in (it must exist; see
	// Cgroup.Create): the pod's, so its limits and stats cover the VM.
	Cgroup *Cgroup
	// User, when set, is who QEMU runs as (see Identity). Nil: the
	// daemon's uid and capabilities.
	User *Identity
	// RAM, when set, is the file guest RAM lives in (see RAMFile): a
	// template's, or the sealed one a clone maps copy-on-write.
	RAM *RAMFile
	// Incoming, when set, starts QEMU paused, waiting for the device state
	// in this file; LoadState loads it and resumes the guest. The machine
	// must match the one that saved it (same devices in the same order,
	// same RAM size), with RAM the template's.
	Incoming *os.File
	// MemMerge marks guest RAM mergeable by the host's KSM.
	MemMerge bool
	// FreePageReporting adds a virtio-balloon device that reports the
	// pages the guest frees, which QEMU gives back to the host. Not for
	// templates and clones: QEMU 7.2 discards a file-backed RAM's pages by
	// punching holes in the file (a sealed template refuses that).
	FreePageReporting bool
	// VMGenID adds a vmgenid device: a clone's guest kernel sees a new
	// generation ID at resume and reseeds its RNG. Templates and their
	// clones need it (their device sets must match).
	VMGenID bool
}

func (c *MachineConfig) validate() error {
	if c.QEMUPath == "" {
		return errdefs.InvalidArgument("no qemu path")
	}
	if _, err := os.Stat(c.QEMUPath); err != nil {
		return errdefs.FailedPrecondition("qemu %s is missing (apt-get install qemu-system-x86): %w", c.QEMUPath, err)
	}
	switch c.Accel {
	case AccelKVM, AccelTCG:
	default:
		return errdefs.InvalidArgument("accel %q: want kvm or tcg", c.Accel)
	}
	if c.MemoryMiB <= 0 {
		return errdefs.InvalidArgument("guest memory of %d MiB", c.MemoryMiB)
	}
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		return errdefs.InvalidArgument("vm dir %q must be an absolute path", c.Dir)
	}
	// sun_path holds 108 bytes; the longest socket is agent.sock.
	if n := len(filepath.Join(c.Dir, AgentSocketName)); n >= 108 {
		return errdefs.InvalidArgument("vm dir %s is too long for a unix socket path (%d bytes)", c.Dir, n)
	}
	for _, p := range []struct{ what, path string }{{"kernel", c.Kernel}, {"initrd", c.Initrd}} {
		if p.path == "" {
			return errdefs.InvalidArgument("no %s", p.what)
		}
		if _, err := os.Stat(p.path); err != nil {
			return errdefs.FailedPrecondition("guest %s %s is missing: %w", p.what, p.path, err)
		}
	}
	tags := map[string]bool{}
	checkTag := func(tag string) error {
		if tag == "" || len(tag) > 31 || strings.ContainsAny(tag, ", =") || tags[tag] {
			return errdefs.InvalidArgument("shared dir tag %q: want a unique name of 1-31 characters without ',', '=' or spaces", tag)
		}
		tags[tag] = true
		return nil
	}
	for _, f := range c.VirtioFS {
		if err := checkTag(f.Tag); err != nil {
			return err
		}
		if st, err := os.Stat(f.Socket); err != nil || st.Mode()&os.ModeSocket == 0 {
			return errdefs.FailedPrecondition("virtio-fs tag %s: no virtiofsd socket at %s", f.Tag, f.Socket)
		}
		if strings.Contains(f.Socket, ",") {
			return errdefs.InvalidArgument("virtiofsd socket %s: QEMU option values cannot hold ','", f.Socket)
		}
	}
	for _, s := range c.SharedDirs {
		if err := checkTag(s.Tag); err != nil {
			return err
		}
		if st, err := os.Stat(s.HostPath); err != nil || !st.IsDir() {
			return errdefs.InvalidArgument("shared dir %s is not a directory", s.HostPath)
		}
		if strings.Contains(s.HostPath, ",") {
			return errdefs.InvalidArgument("shared dir %s: QEMU option values cannot hold ','", s.HostPath)
		}
	}
	for _, t := range c.Taps {
		if !t.Unplugged && (t.Name == "" || strings.Contains(t.Name, ",")) {
			return errdefs.InvalidArgument("tap name %q", t.Name)
		}
	}
	if c.RAM != nil {
		if c.RAM.File == nil {
			return errdefs.InvalidArgument("a RAM file without a file")
		}
		// vhost-user (virtiofsd) maps guest RAM itself: it needs it shared.
		if !c.RAM.Shared && len(c.VirtioFS) > 0 {
			return errdefs.InvalidArgument("virtio-fs needs shared guest RAM; a clone's is private")
		}
	}
	if c.FreePageReporting && c.RAM != nil {
		return errdefs.InvalidArgument("free page reporting with a RAM file: QEMU 7.2 would punch holes in it")
	}
	if c.Incoming != nil && c.RAM == nil {
		return errdefs.InvalidArgument("loading device state needs the template's RAM file")
	}
	if strings.ContainsAny(c.Kernel+c.Initrd+c.Dir, ",") {
		return errdefs.InvalidArgument("kernel, initrd and vm dir paths cannot hold ','")
	}
	return nil
}

func (c *MachineConfig) withDefaults() MachineConfig {
	d := *c
	if d.MachineType == "" {
		d.MachineType = MachineQ35
	}
	if d.CPU == "" {
		d.CPU = "qemu64"
		if d.Accel == AccelKVM {
			d.CPU = "host"
		}
	}
	if d.VCPUs <= 0 {
		d.VCPUs = 1
	}
	if d.Name == "" {
		d.Name = filepath.Base(d.Dir)
	}
	return d
}

// qemuArgs returns QEMU's command line.
// qemuFDs are the descriptor numbers, in QEMU, of what launch opened for
// it: QEMU opens no socket, log, tap or device node path itself.
type qemuFDs struct {
	QMP, Agent, Console int
	Taps                []int
	VirtioFS            []int
	Vhost               int // /dev/vhost-vsock; 0: none
	RAM                 int // RAMFile; 0: none
	Incoming            int // the device state to load; 0: none
}

func ramFile(r *RAMFile) *os.File {
	if r == nil {
		return nil
	}
	return r.File
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func qemuArgs(c MachineConfig, fds qemuFDs) []string {
	accel := c.Accel
	if c.Accel == AccelTCG && c.TBSizeMiB > 0 {
		accel += ",tb-size=" + strconv.Itoa(c.TBSizeMiB)
	}
	appendArgs := BaseKernelArgs
	if c.KernelArgs != "" {
		appendArgs += " " + c.KernelArgs
	}
	machine := c.MachineType
	if machine == MachineMicrovm {
		machine += ",pcie=on"
	}
	if len(c.VirtioFS) > 0 || c.RAM != nil {
		machine += ",memory-backend=mem0"
	}
	machine += ",mem-merge=" + onOff(c.MemMerge)
	args := []string{
		"-name", c.Name,
		"-M", machine,
		"-accel", accel,
		"-cpu", c.CPU,
		"-smp", strconv.Itoa(c.VCPUs),
		"-m", strconv.Itoa(c.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-no-reboot",
		"-add-fd", fmt.Sprintf("fd=%d,set=1,opaque=console", fds.Console),
		"-serial", "file:/dev/fdset/1",
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", fds.QMP),
		"-mon", "chardev=qmp,mode=control",
		"-kernel", c.Kernel,
		"-initrd", c.Initrd,
		"-append", appendArgs,
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", fmt.Sprintf("socket,id=agent,fd=%d,server=on,wait=off", fds.Agent),
		"-device", "virtserialport,bus=vser0.0,chardev=agent,name=" + agentproxy.SerialPortName,
	}
	if !c.NoSandbox {
		args = append(args, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
	}
	for i, s := range c.SharedDirs {
		fsdev := fmt.Sprintf("local,id=fs%d,path=%s,security_model=none", i, s.HostPath)
		if s.ReadOnly {
			fsdev += ",readonly=on"
		}
		args = append(args, "-fsdev", fsdev,
			"-device", fmt.Sprintf("virtio-9p-pci,fsdev=fs%d,mount_tag=%s", i, s.Tag))
	}
	switch {
	case c.RAM != nil:
		args = append(args, "-object", fmt.Sprintf("memory-backend-file,id=mem0,size=%dM,mem-path=/proc/self/fd/%d,share=%s",
			c.MemoryMiB, fds.RAM, onOff(c.RAM.Shared)))
	case len(c.VirtioFS) > 0:
		args = append(args, "-object", fmt.Sprintf("memory-backend-memfd,id=mem0,size=%dM,share=on", c.MemoryMiB))
	}
	for i, f := range c.VirtioFS {
		args = append(args, "-chardev", fmt.Sprintf("socket,id=vfs%d,fd=%d", i, fds.VirtioFS[i]),
			"-device", fmt.Sprintf("vhost-user-fs-pci,chardev=vfs%d,tag=%s", i, f.Tag))
	}
	for i, t := range c.Taps {
		dev := fmt.Sprintf("virtio-net-pci,netdev=net%d", i)
		if t.MAC != "" {
			dev += ",mac=" + t.MAC
		}
		netdev := fmt.Sprintf("tap,id=net%d,fd=%d", i, fds.Taps[i])
		if t.Unplugged {
			netdev = fmt.Sprintf("hubport,id=net%d,hubid=%d", i, i)
		}
		args = append(args, "-netdev", netdev, "-device", dev)
	}
	if c.VsockCID != 0 {
		args = append(args, "-device", fmt.Sprintf("vhost-vsock-pci,guest-cid=%d,vhostfd=%d", c.VsockCID, fds.Vhost))
	}
	if c.VMGenID {
		args = append(args, "-device", "vmgenid,guid=auto")
	}
	if c.FreePageReporting {
		args = append(args, "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on")
	}
	if c.Incoming != nil {
		args = append(args, "-incoming", "defer")
	}
	return args
}

// VM is a running QEMU, started by Start or found again by Reconnect. QEMU
// runs in its own session and survives a daemon restart; the VM tracks it
// through a pidfd, which works whether or not QEMU is this process's child.
type VM struct {
	dir    string
	pid    int
	pidfd  *os.File
	exited chan struct{}

	// qmpMu serializes QMP connections: QEMU serves one client at a time.
	qmpMu sync.Mutex
	// incomingFD is the descriptor number, in QEMU, of the device state
	// LoadState loads (MachineConfig.Incoming); 0: none.
	incomingFD int

	cleanOnce sync.Once
}

// Dir is the VM's directory.
func (v *VM) Dir() string { return v.dir }

// PID is QEMU's process id.
func (v *VM) PID() int { return v.pid }

// AgentSocket is the unix socket of the agent's virtio-serial chardev.
func (v *VM) AgentSocket() string { return filepath.Join(v.dir, AgentSocketName) }

// QMPSocket is the QMP socket.
func (v *VM) QMPSocket() string { return filepath.Join(v.dir, QMPSocketName) }

// ConsoleLog is the guest's serial console output.
func (v *VM) ConsoleLog() string { return filepath.Join(v.dir, ConsoleLogName) }

// Exited is closed once QEMU has exited.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// Wait blocks until QEMU exits or ctx ends. The exit status is not
// available: QEMU is not this process's child.
func (v *VM) Wait(ctx context.Context) error {
	select {
	case <-v.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start starts QEMU for cfg and returns once QEMU runs and answers QMP.
// The guest is then booting; connect to its agent through AgentSocket. On
// failure nothing is left running and the files Start created are gone.
func Start(ctx context.Context, cfg MachineConfig) (*VM, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("starting vm: %w", err)
	}
	c := cfg.withDefaults()
	ctx = log.With(ctx, "vm", c.Name)
	var vm *VM
	undo, err := steps.Run(ctx, []steps.Step{
		{Name: "preparing vm dir", Do: func(ctx context.Context) (steps.Cleanup, error) {
			if err := os.MkdirAll(c.Dir, 0o700); err != nil {
				return nil, err
			}
			if pid, ok := readPidfile(c.Dir); ok && processRunsQEMUFor(pid, c.Dir) {
				return nil, errdefs.AlreadyExists("a QEMU (pid %d) already runs for %s", pid, c.Dir)
			}
			removeRuntimeFiles(c.Dir)
			return func(context.Context) error { removeRuntimeFiles(c.Dir); return nil }, nil
		}},
		{Name: "starting qemu", Do: func(ctx context.Context) (steps.Cleanup, error) {
			var err error
			vm, err = launch(ctx, c)
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { return vm.Kill(ctx) }, nil
		}},
		{Name: "checking qmp", Do: func(ctx context.Context) (steps.Cleanup, error) {
			st, err := vm.Status(ctx)
			if err != nil {
				return nil, err
			}
			if c.Incoming != nil {
				if st.Status != "inmigrate" {
					return nil, fmt.Errorf("vm is %s, not waiting for its state", st.Status)
				}
				return nil, nil
			}
			if !st.Running {
				return nil, fmt.Errorf("vm is %s, not running", st.Status)
			}
			return nil, nil
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("starting vm %s: %w", c.Name, err)
	}
	_ = undo // the VM owns its resources from here; Stop and Kill release them
	l := log.G(ctx).With("pid", vm.pid, "accel", c.Accel, "memory_mib", c.MemoryMiB)
	if c.Cgroup != nil {
		l = l.With("cgroup", c.Cgroup.Path)
	}
	l.Info("qemu started")
	return vm, nil
}

// launch starts QEMU in its own session (inside NetNSPath, MountNS and
// Cgroup when set, as User when set) and waits until it greets on QMP.
// QEMU is not daemonized: -daemonize needs fork and setsid, which
// -sandbox's spawn=deny and elevateprivileges=deny forbid.
//
// QEMU opens no path but its kernel and initrd (and 9p shares): the
// daemon makes the QMP and agent sockets (listening, in Dir), the console
// log and qemu.log (its stdout and stderr), opens the taps, the virtiofsd
// connections and /dev/vhost-vsock, and passes them down as descriptors.
// So QEMU needs no writable directory, no CAP_NET_ADMIN and no device
// access of its own, and nothing it could plant in Dir is ever followed by
// the daemon. The pidfile is the daemon's too.
func launch(ctx context.Context, c MachineConfig) (*VM, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultStartTimeout)
	defer cancel()
	var files passedFiles
	defer files.close()
	logPath := filepath.Join(c.Dir, QEMULogName)
	logf, err := createLog(logPath)
	if err != nil {
		return nil, err
	}
	files.keep(logf)
	var fds qemuFDs
	if fds, err = openForQEMU(c, &files); err != nil {
		return nil, err
	}
	cmd := exec.Command(c.QEMUPath, qemuArgs(c, fds)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = files.passed
	// Its own session: a terminal's or the daemon's signals must not reach
	// the VM, and it must outlive the daemon (no Pdeathsig).
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if c.User != nil {
		c.User.apply(cmd.SysProcAttr)
	}
	if c.Cgroup != nil {
		release, err := c.Cgroup.place(cmd)
		if err != nil {
			return nil, fmt.Errorf("placing qemu in cgroup %s: %w", c.Cgroup.Path, err)
		}
		defer release()
	}
	log.G(ctx).Debug("running qemu", "args", cmd.Args)
	if err := podns.Run(podns.Target{MountNS: c.MountNS, NetNS: c.NetNSPath}, cmd.Start); err != nil {
		return nil, fmt.Errorf("running %s: %w", c.QEMUPath, err)
	}
	pid := cmd.Process.Pid
	// pid is an unreaped child until cmd.Wait below, so it cannot be
	// recycled before the pidfd pins it.
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("opening pidfd of qemu: %w", err)
	}
	vm := &VM{dir: c.Dir, pid: pid, pidfd: os.NewFile(uintptr(fd), "pidfd"), exited: make(chan struct{}), incomingFD: fds.Incoming}
	// Reap QEMU if it exits while this process lives; after a daemon
	// restart init does.
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	go vm.watch()
	// QEMU holds its copies now: a socket whose last listener is QEMU's
	// resets its pending connections when QEMU dies.
	files.close()
	if err := writePidfile(c.Dir, pid); err != nil {
		vm.Kill(context.WithoutCancel(ctx))
		return nil, err
	}

	greeted := make(chan error, 1)
	go func() {
		q, err := DialQMP(ctx, filepath.Join(c.Dir, QMPSocketName))
		if err == nil {
			q.Close()
		}
		greeted <- err
	}()
	select {
	case err := <-greeted:
		if err == nil {
			return vm, nil
		}
		select {
		case <-vm.exited:
		case <-time.After(time.Second):
			vm.Kill(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("qemu did not answer on qmp: %w: %s", err, tailFile(logPath, 2048))
		}
	case <-vm.exited:
	}
	err = <-waitErr
	return nil, fmt.Errorf("qemu exited during start-up (%v): %s", err, tailFile(logPath, 2048))
}

// openForQEMU makes or opens everything QEMU gets as a descriptor (see
// launch) and records it in files.
func openForQEMU(c MachineConfig, files *passedFiles) (qemuFDs, error) {
	var fds qemuFDs
	for _, s := range []struct {
		name string
		fd   *int
	}{{QMPSocketName, &fds.QMP}, {AgentSocketName, &fds.Agent}} {
		f, err := listenUnix(filepath.Join(c.Dir, s.name))
		if err != nil {
			return fds, err
		}
		*s.fd = files.pass(f)
	}
	console, err := createLog(filepath.Join(c.Dir, ConsoleLogName))
	if err != nil {
		return fds, err
	}
	fds.Console = files.pass(console)
	for _, t := range c.Taps {
		if t.Unplugged {
			fds.Taps = append(fds.Taps, 0)
			continue
		}
		f, err := netns.OpenTap(c.NetNSPath, t.Name, true)
		if err != nil {
			return fds, err
		}
		fds.Taps = append(fds.Taps, files.pass(f))
	}
	// Duplicates: passedFiles closes what it passes, and these stay the
	// caller's.
	for _, p := range []struct {
		f  *os.File
		fd *int
	}{{ramFile(c.RAM), &fds.RAM}, {c.Incoming, &fds.Incoming}} {
		if p.f == nil {
			continue
		}
		fd, err := unix.FcntlInt(p.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fds, fmt.Errorf("duplicating %s: %w", p.f.Name(), err)
		}
		*p.fd = files.pass(os.NewFile(uintptr(fd), p.f.Name()))
	}
	for _, v := range c.VirtioFS {
		conn, err := net.Dial("unix", v.Socket)
		if err != nil {
			return fds, fmt.Errorf("connecting to virtiofsd for %s: %w", v.Tag, err)
		}
		f, err := conn.(*net.UnixConn).File()
		conn.Close()
		if err != nil {
			return fds, err
		}
		fds.VirtioFS = append(fds.VirtioFS, files.pass(f))
	}
	if c.VsockCID != 0 {
		f, err := os.OpenFile(VhostVsockDevice, os.O_RDWR, 0)
		if err != nil {
			return fds, fmt.Errorf("opening %s: %w", VhostVsockDevice, err)
		}
		fds.Vhost = files.pass(f)
	}
	return fds, nil
}

// passedFiles are the files launch hands to QEMU: passed ones become its
// descriptors 3, 4, ... in order; kept ones (its stdout) are only closed
// with them.
type passedFiles struct{ passed, kept []*os.File }

func (p *passedFiles) pass(f *os.File) int {
	p.passed = append(p.passed, f)
	return 2 + len(p.passed)
}

func (p *passedFiles) keep(f *os.File) { p.kept = append(p.kept, f) }

func (p *passedFiles) close() {
	for _, f := range append(p.passed, p.kept...) {
		f.Close()
	}
	p.passed, p.kept = nil, nil
}

// listenUnix makes a listening unix socket at path (replacing a stale
// one) and returns it as a file, for QEMU's chardev fd=.
func listenUnix(path string) (*os.File, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("making socket %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.File()
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// createLog truncates or creates a log file the daemon hands to a VMM,
// never through a symlink.
func createLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
}

// tailFile returns up to n trailing bytes of path, trimmed.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	k, _ := f.ReadAt(b, off)
	return strings.TrimSpace(string(b[:k]))
}

// attach opens a pidfd for pid and checks it is QEMU for dir (so a
// recycled pid is never mistaken for the VM). The caller starts watch.
func attach(pid int, dir string) (*VM, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, errdefs.NotFound("qemu (pid %d) for %s is not running", pid, dir)
		}
		return nil, fmt.Errorf("opening pidfd of %d: %w", pid, err)
	}
	// Checked after the pidfd pins the process: from here pid cannot be
	// recycled under us.
	if !processRunsQEMUFor(pid, dir) {
		unix.Close(fd)
		return nil, errdefs.NotFound("pid %d is not the qemu of %s", pid, dir)
	}
	return &VM{dir: dir, pid: pid, pidfd: os.NewFile(uintptr(fd), "pidfd"), exited: make(chan struct{})}, nil
}

// watch waits for the pidfd to become readable, which it does when the
// process exits, then removes the VM's runtime files and closes exited:
// whoever sees exited closed also sees the files gone, even when the guest
// powered itself off and nobody called Stop. The pidfd is non-blocking, so
// the wait parks in the runtime's poller instead of holding a thread.
func (v *VM) watch() {
	defer close(v.exited)
	defer v.cleanup()
	rc, err := v.pidfd.SyscallConn()
	if err != nil {
		v.pollExit()
		return
	}
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n > 0
	})
	if err != nil {
		v.pollExit()
	}
}

// pollExit is watch's fallback when the pidfd is not in the poller.
func (v *VM) pollExit() {
	rc, err := v.pidfd.SyscallConn()
	if err != nil {
		return
	}
	for done := false; !done; {
		cerr := rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 1000)
			done = (err == nil && n > 0) || (err != nil && !errors.Is(err, unix.EINTR))
		})
		if cerr != nil {
			return
		}
	}
}

// signal sends sig through the pidfd, which cannot hit a recycled pid.
func (v *VM) signal(sig unix.Signal) error {
	rc, err := v.pidfd.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		return err
	}
	return serr
}

// Reconnect finds the VM whose directory is dir again, after a daemon
// restart: from its pidfile, checked against the running process, and
// QMP. It is NotFound when QEMU no longer runs; the stale sockets and
// pidfile are then removed.
func Reconnect(ctx context.Context, dir string) (*VM, error) {
	pid, ok := readPidfile(dir)
	if !ok {
		return nil, errdefs.NotFound("reconnecting to vm in %s: no pidfile", dir)
	}
	vm, err := attach(pid, dir)
	if err != nil {
		if errdefs.IsClass(err, errdefs.ErrNotFound) {
			removeRuntimeFiles(dir)
		}
		return nil, fmt.Errorf("reconnecting to vm in %s: %w", dir, err)
	}
	// Not watched yet: a failed check must not remove a running VM's files.
	if _, err := vm.Status(ctx); err != nil {
		vm.pidfd.Close()
		return nil, fmt.Errorf("reconnecting to vm in %s: %w", dir, err)
	}
	go vm.watch()
	return vm, nil
}

// QMP runs fn with a fresh QMP connection, serialized with the VM's other
// QMP users.
func (v *VM) QMP(ctx context.Context, fn func(*QMP) error) error {
	v.qmpMu.Lock()
	defer v.qmpMu.Unlock()
	select {
	case <-v.exited:
		return errdefs.Newf(errdefs.ErrNotFound, "qemu (pid %d) has exited", v.pid)
	default:
	}
	q, err := DialQMP(ctx, v.QMPSocket())
	if err != nil {
		return err
	}
	defer q.Close()
	return fn(q)
}

// Status runs query-status.
func (v *VM) Status(ctx context.Context) (VMStatus, error) {
	var st VMStatus
	err := v.QMP(ctx, func(q *QMP) error {
		var err error
		st, err = q.QueryStatus(ctx)
		return err
	})
	return st, err
}

// killWait bounds the wait for QEMU to die after SIGKILL.
const killWait = 10 * time.Second

// Stop powers the guest off through the ACPI power button and waits up to
// timeout for QEMU to exit; then it asks QEMU to quit, and finally kills
// it. The VM's sockets and pidfile are removed; console.log is kept.
func (v *VM) Stop(ctx context.Context, timeout time.Duration) error {
	l := log.G(ctx).With("pid", v.pid)
	select {
	case <-v.exited:
		return nil
	default:
	}
	qctx, cancel := context.WithTimeout(ctx, min(timeout, DefaultQMPTimeout))
	err := v.QMP(qctx, func(q *QMP) error { return q.SystemPowerdown(qctx) })
	cancel()
	if err != nil {
		l.Warn("system_powerdown failed; quitting qemu", "error", err)
	} else if v.waitExit(ctx, timeout) {
		l.Debug("guest powered off")
		return nil
	} else {
		l.Warn("guest did not power off in time; quitting qemu", "timeout", timeout)
	}
	qctx, cancel = context.WithTimeout(ctx, 2*time.Second)
	err = v.QMP(qctx, func(q *QMP) error { return q.Quit(qctx) })
	cancel()
	if err == nil && v.waitExit(ctx, 5*time.Second) {
		return nil
	}
	return v.Kill(ctx)
}

// Kill sends SIGKILL to QEMU, waits for it to exit and removes the VM's
// sockets and pidfile.
func (v *VM) Kill(ctx context.Context) error {
	select {
	case <-v.exited:
	default:
		if err := v.signal(unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("killing qemu (pid %d): %w", v.pid, err)
		}
		if !v.waitExit(context.WithoutCancel(ctx), killWait) {
			return fmt.Errorf("killing qemu (pid %d): still running %s after SIGKILL", v.pid, killWait)
		}
	}
	return nil
}

func (v *VM) waitExit(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-v.exited:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// cleanup runs once QEMU has exited, from watch (before exited is
// closed) or from launch's failure path.
func (v *VM) cleanup() {
	v.cleanOnce.Do(func() {
		removeRuntimeFiles(v.dir)
		v.pidfd.Close()
	})
}

// removeRuntimeFiles removes what QEMU leaves in dir when it dies without
// cleaning up (SIGKILL): sockets and the pidfile.
func removeRuntimeFiles(dir string) {
	for _, n := range []string{QMPSocketName, AgentSocketName, PidfileName} {
		_ = os.Remove(filepath.Join(dir, n)) // best effort: a leftover is replaced on the next Start
	}
}

// writePidfile records QEMU's pid and its start time (clock ticks since
// boot, /proc/<pid>/stat field 22), which a recycled pid does not share.
func writePidfile(dir string, pid int) error {
	start, err := proc.StartTime(pid)
	if err != nil {
		return fmt.Errorf("reading qemu's start time: %w", err)
	}
	content := fmt.Sprintf("%d %d\n", pid, start)
	return atomicfile.Write(dir, filepath.Join(dir, PidfileName), 0o600, func(f *os.File) error {
		_, err := f.WriteString(content)
		return err
	})
}

// readPidfile returns the pid written by writePidfile, if the process
// with that pid is still the one that was started.
func readPidfile(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, PidfileName))
	if err != nil {
		return 0, false
	}
	var pid int
	var start uint64
	if n, _ := fmt.Sscanf(string(b), "%d %d", &pid, &start); n != 2 || pid <= 0 {
		return 0, false
	}
	if now, err := proc.StartTime(pid); err != nil || now != start {
		return 0, false
	}
	return pid, true
}

// Running reports whether the QEMU the pidfile in dir names still runs
// (same pid, same start time).
func Running(dir string) bool {
	_, ok := readPidfile(dir)
	return ok
}

// processRunsQEMUFor reports whether pid is the process dir's pidfile
// names (same start time).
func processRunsQEMUFor(pid int, dir string) bool {
	p, ok := readPidfile(dir)
	return ok && p == pid
}

// cmdlineHas reports whether pid's command line (NUL-separated) holds s.
func cmdlineHas(pid int, s string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(s))
}
