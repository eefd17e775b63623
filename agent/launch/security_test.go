package launch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/oci/seccomp"
	"github.com/crivm/crivm/test/testutil"
)

// rootSpec is a container of uid 0 with caps in every set, in its own
// PID, mount, UTS and IPC namespaces, with /proc, a /dev tmpfs, devpts
// and the default seccomp profile for caps.
func rootSpec(rootfs string, caps []string, args ...string) *specs.Spec {
	return &specs.Spec{
		Root: &specs.Root{Path: rootfs},
		Process: &specs.Process{
			Args: args, Env: []string{"PATH=/bin"}, Cwd: "/",
			Capabilities: &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
			},
			Seccomp: seccomp.Default(caps),
		},
	}
}

// createContainer creates the container of spec (in cgroup v2 directory
// cgroup unless empty), with stdout and stderr on the returned pipe.
func createContainer(t *testing.T, spec *specs.Spec, cgroup string) (*Child, *os.File) {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outR.Close() })
	flags, join, err := SpecNamespaces(spec.Linux.Namespaces)
	if err != nil {
		t.Fatal(err)
	}
	child, err := Spawn(Options{
		Config:     Config{Mode: ModeCreate, Spec: spec, Process: spec.Process},
		Cloneflags: flags, Join: join, CgroupDir: cgroup,
		Stdio: [3]*os.File{nil, outW, outW},
		Start: hostStart,
	})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(child.Pid, unix.SIGKILL) })
	return child, outR
}

// runContainer creates and starts the container of spec and returns its
// output and wait status once it exited.
func runContainer(t *testing.T, spec *specs.Spec, cgroup string) (string, unix.WaitStatus) {
	t.Helper()
	child, out := createContainer(t, spec, cgroup)
	if err := startChild(child); err != nil {
		t.Fatal(err)
	}
	out.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(out)
	if err != nil {
		t.Fatalf("reading the container's output: %v (so far %q)", err, b)
	}
	select {
	case ws := <-child.Exited:
		return string(b), ws
	case <-time.After(10 * time.Second):
		t.Fatalf("the container did not exit; output %q", b)
	}
	return "", 0
}

// Only the spec's devices can be opened: the device filter of the
// container's cgroup follows Linux.Resources.Devices and runc's defaults.
// Like runc, it lets a process with CAP_MKNOD make any node; opening one
// the rules do not allow fails with EPERM.
func TestDeviceCgroupInContainer(t *testing.T) {
	cgroup := cgroup2Dir(t)
	rootfs := busyboxRootfs(t)
	spec := rootSpec(rootfs, []string{"CAP_MKNOD", "CAP_DAC_OVERRIDE"}, "sh", "-c",
		`try() { mknod /dev/x-$1 $2 $3 $4 && echo "$1 made"; (head -c 1 /dev/x-$1 >/dev/null && echo "$1 read") 2>&1 | sed "s/.*: //"; }; `+
			`try null c 1 3; try mem c 1 1; try sda b 8 0`)
	spec.Linux.Resources = &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}}
	if err := AttachDeviceFilter(cgroup, spec.Linux.Resources.Devices); err != nil {
		t.Fatal(err)
	}
	got, ws := runContainer(t, spec, cgroup)
	want := "null made\nnull read\n" +
		"mem made\nOperation not permitted\n" +
		"sda made\nOperation not permitted\n"
	if got != want || ws.ExitStatus() != 0 {
		t.Errorf("container output %q (status %d), want %q", got, ws.ExitStatus(), want)
	}
}

// The container's process holds only stdio: an fd the agent leaked into
// the fork (not close-on-exec) is closed at the final execve.
func TestOnlyStdioSurvives(t *testing.T) {
	testutil.RequiresRoot(t)
	rootfs := busyboxRootfs(t)
	leaked := leakFd(t, "/dev/null", unix.O_RDONLY)
	got, _ := runContainer(t, rootSpec(rootfs, nil, "ls", "/proc/self/fd"), "")
	// 3 is the directory ls reads.
	if want := "0\n1\n2\n3\n"; got != want {
		t.Errorf("/proc/self/fd of the container's process: %q, want %q (fd %d leaked)", got, want, leaked)
	}
}

// A working directory reached through an fd of the agent's tree lies
// outside the container's root: the start fails (CVE-2024-21626).
func TestCwdOutsideRoot(t *testing.T) {
	testutil.RequiresRoot(t)
	rootfs := busyboxRootfs(t)
	hostDir := t.TempDir()
	spec := rootSpec(rootfs, nil, "ls")
	spec.Process.Cwd = fmt.Sprintf("/proc/self/fd/%d", leakFd(t, hostDir, unix.O_RDONLY|unix.O_DIRECTORY))
	child, _ := createContainer(t, spec, "")
	err := startChild(child)
	if err == nil || !strings.Contains(err.Error(), "outside the container's root") {
		t.Errorf("starting with cwd %s (the host's %s): %v, want the cwd refused", spec.Process.Cwd, hostDir, err)
	}
}

// The process's umask is the spec's, 0022 when unset, whatever the agent's.
func TestUmask(t *testing.T) {
	testutil.RequiresRoot(t)
	tests := []struct {
		name  string
		umask *uint32
		want  string
	}{
		{"unset", nil, "644"},
		{"0027", ptr(uint32(0o027)), "640"},
		{"0", ptr(uint32(0)), "666"},
	}
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rootfs := busyboxRootfs(t)
			spec := rootSpec(rootfs, nil, "sh", "-c", "touch /f && stat -c %a /f")
			spec.Process.User.Umask = tt.umask
			got, _ := runContainer(t, spec, "")
			if got != tt.want+"\n" {
				t.Errorf("mode of a new file: %q, want %s", got, tt.want)
			}
		})
	}
}

// tinyELF is a static x86-64 program that makes syscall nr with zero
// arguments and exits with the errno it got (0 on success).
func tinyELF(nr uint32) []byte {
	const base, hdr = 0x400000, 64 + 56
	code := []byte{0xb8}                                    // mov eax, nr
	code = binary.LittleEndian.AppendUint32(code, nr)       //
	code = append(code, 0x31, 0xff, 0x31, 0xf6, 0x31, 0xd2) // xor edi, edi; xor esi, esi; xor edx, edx
	code = append(code, 0x45, 0x31, 0xd2, 0x0f, 0x05)       // xor r10d, r10d; syscall
	code = append(code, 0xf7, 0xd8, 0x89, 0xc7)             // neg eax; mov edi, eax
	code = append(code, 0xb8, 0xe7, 0, 0, 0, 0x0f, 0x05)    // mov eax, exit_group; syscall
	le := binary.LittleEndian
	b := []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	b = le.AppendUint16(b, 2)    // ET_EXEC
	b = le.AppendUint16(b, 0x3e) // EM_X86_64
	b = le.AppendUint32(b, 1)
	b = le.AppendUint64(b, base+hdr) // entry
	b = le.AppendUint64(b, 64)       // phoff
	b = le.AppendUint64(b, 0)        // shoff
	b = le.AppendUint32(b, 0)        // flags
	b = le.AppendUint16(b, 64)       // ehsize
	b = le.AppendUint16(b, 56)       // phentsize
	b = le.AppendUint16(b, 1)        // phnum
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, 1) // PT_LOAD
	b = le.AppendUint32(b, 5) // PF_R|PF_X
	b = le.AppendUint64(b, 0) // offset
	b = le.AppendUint64(b, base)
	b = le.AppendUint64(b, base)
	b = le.AppendUint64(b, uint64(hdr+len(code)))
	b = le.AppendUint64(b, uint64(hdr+len(code)))
	b = le.AppendUint64(b, 0x1000)
	return append(b, code...)
}

// Under the default profile a syscall newer than the filter's tables
// answers ENOSYS, so libc falls back (glibc's fchmodat2 fallback), and a
// known one the profile denies answers EPERM.
func TestSeccompENOSYSInContainer(t *testing.T) {
	testutil.RequiresRoot(t)
	tests := []struct {
		name string
		nr   uint32
		want unix.Errno
	}{
		{"fchmodat2, newer than the tables", 452, unix.ENOSYS},
		{"a number past every syscall", 999, unix.ENOSYS},
		// Unfiltered, add_key faults on its NULL type.
		{"add_key, denied", unix.SYS_ADD_KEY, unix.EPERM},
		{"getppid, allowed", unix.SYS_GETPPID, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rootfs := t.TempDir()
			for _, d := range []string{"proc", "dev"} {
				os.Mkdir(filepath.Join(rootfs, d), 0o755)
			}
			if err := os.WriteFile(filepath.Join(rootfs, "probe"), tinyELF(tt.nr), 0o755); err != nil {
				t.Fatal(err)
			}
			out, ws := runContainer(t, rootSpec(rootfs, nil, "/probe"), "")
			if got := unix.Errno(ws.ExitStatus()); !ws.Exited() || got != tt.want {
				t.Errorf("syscall %d: %v (errno %d, output %q), want errno %d (%v)", tt.nr, ws, got, out, tt.want, tt.want)
			}
		})
	}
}

// The init runs from the read-only bind of the agent binary, which no
// one can change through the init's /proc/PID/exe; where no bind can be
// made, the sealed memfd copy refuses writes through its own fd.
func TestSealedInit(t *testing.T) {
	testutil.RequiresRoot(t)
	rootfs := busyboxRootfs(t)
	child, _ := createContainer(t, rootSpec(rootfs, nil, "true"), "")
	exe := fmt.Sprintf("/proc/%d/exe", child.Pid)
	if target, err := os.Readlink(exe); err != nil || target != filepath.Join(sealedDir, "init") {
		t.Errorf("the init runs %q (%v), want the read-only bind %s", target, err, filepath.Join(sealedDir, "init"))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(exe, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("the init's binary is not on a read-only mount (flags %#x, %v)", st.Flags, err)
	}
	if f, err := os.OpenFile(exe, os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Errorf("%s opened for writing", exe)
	} else if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.ETXTBSY) {
		t.Errorf("opening %s for writing: %v, want EROFS", exe, err)
	}
	child.Abort()

	f, err := sealedMemfd()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	want := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if err != nil || seals&want != want {
		t.Errorf("seals %#x (%v), want %#x", seals, err, want)
	}
	// The memfd's own fd is open for writing: the seals refuse.
	if _, err := unix.Pwrite(int(f.Fd()), []byte("x"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("writing the sealed binary: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(int(f.Fd()), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("truncating the sealed binary: %v, want EPERM", err)
	}
}

// leakFd opens path without close-on-exec at a high fd number, which the
// child's stdio and launch fds do not overwrite, as a leak of the agent.
func leakFd(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(high) })
	return high
}

// dropPtrace removes CAP_SYS_PTRACE from the calling thread's bounding,
// permitted, effective and inheritable sets, for good: the caller's
// thread must be locked and never unlocked.
func dropPtrace() error {
	if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SYS_PTRACE, 0, 0, 0); err != nil {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	bit := uint32(1) << unix.CAP_SYS_PTRACE
	data[0].Effective &^= bit
	data[0].Permitted &^= bit
	data[0].Inheritable &^= bit
	return unix.Capset(&hdr, &data[0])
}

// ptraceReadable reports whether the calling thread may read pid's
// /proc/PID/cwd, which takes ptrace read access: with the same uid and no
// CAP_SYS_PTRACE, it may while pid is dumpable and its capabilities are
// the caller's or fewer.
func ptraceReadable(pid int) (bool, error) {
	_, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return false, nil
	}
	return false, err
}

// An exec's init is not dumpable from its start until its final execve:
// while it sits in the container's PID namespace, before it entered the
// container's mount namespace, a process of the container with its uid
// and capabilities cannot read its /proc files (CVE-2016-9962).
func TestExecNotDumpable(t *testing.T) {
	testutil.RequiresRoot(t)
	rootfs := busyboxRootfs(t)
	spec := rootSpec(rootfs, nil, "sleep", "30")
	c, _ := createContainer(t, spec, "")
	if err := startChild(c); err != nil {
		t.Fatal(err)
	}
	join, err := ProcessNamespaces(c.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// The thread that forks the exec (JoinNamespaces' own, locked, never
	// reused) lacks CAP_SYS_PTRACE, and so does the init it forks; the
	// probe runs on the same thread, with the same uid and capabilities.
	var probed error
	start := func(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
		if err := dropPtrace(); err != nil {
			return nil, err
		}
		control := exec.Command("sleep", "10")
		if err := control.Start(); err != nil {
			return nil, err
		}
		ok, err := ptraceReadable(control.Process.Pid)
		control.Process.Kill()
		control.Wait()
		if err != nil || !ok {
			probed = fmt.Errorf("the probe cannot read a dumpable process (%v): it proves nothing", err)
			return hostStart(cmd)
		}
		exited, err := hostStart(cmd)
		if err != nil {
			return nil, err
		}
		// The init waits for its config, which Spawn sends once this
		// returns: it is past its execve of the agent binary, not yet at
		// its last one.
		pid, deadline := cmd.Process.Pid, time.Now().Add(10*time.Second)
		for {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			readable, err := ptraceReadable(pid)
			switch {
			case err != nil:
				probed = err
			case bytes.Contains(cmdline, []byte(InitArg)) && !readable:
				return exited, nil
			case time.Now().After(deadline):
				probed = fmt.Errorf("the init (cmdline %q) stayed dumpable", cmdline)
			default:
				time.Sleep(time.Millisecond)
				continue
			}
			return exited, nil
		}
	}
	ex, err := Spawn(Options{Config: Config{Mode: ModeExec, Spec: spec, Process: &specs.Process{Args: []string{"true"}, Cwd: "/"}}, Join: join, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	<-ex.Exited
	if probed != nil {
		t.Error(probed)
	}
}
