package launch

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/oci/seccomp"
	"github.com/crivm/crivm/test/testutil"
)

// TestMain lets the test binary act as the container init Spawn
// re-executes.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == InitArg {
		Init()
	}
	if len(os.Args) > 1 && os.Args[1] == "version" {
		// Warm's child: PID 1 of a new PID namespace, or it fails; it
		// writes its cgroup to stdout.
		if os.Getpid() != 1 {
			os.Exit(3)
		}
		b, _ := os.ReadFile("/proc/self/cgroup")
		os.Stdout.Write(b)
		os.Exit(0)
	}
	// The read-only bind of the binary goes below a temp dir, not the
	// host's /run.
	dir, err := os.MkdirTemp("", "crivm-launch-")
	if err != nil {
		panic(err)
	}
	sealedDir = dir
	code := m.Run()
	unix.Unmount(filepath.Join(dir, "init"), unix.MNT_DETACH)
	os.RemoveAll(dir)
	os.Exit(code)
}

// busyboxRootfs makes a rootfs with the static busybox and its applets.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	bb := testutil.RequiresBinary(t, "busybox")
	if out, _ := exec.Command("file", bb).Output(); bytes.Contains(out, []byte("dynamically")) {
		t.Skipf("%s is not static (apt-get install busybox-static)", bb)
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc", "data"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "tmp/secret"), []byte("masked"), 0o644)
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "cat", "echo", "sleep", "id", "ls", "hostname", "readlink", "grep", "tty", "touch", "mkdir", "wc", "true", "stat", "mknod", "head", "sed"} {
		os.Symlink("busybox", filepath.Join(root, "bin", a))
	}
	return root
}

// hostStart is Options.Start without the agent's reaper.
func hostStart(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	go func() {
		cmd.Wait()
		ch <- unix.WaitStatus(cmd.ProcessState.Sys().(syscall.WaitStatus))
	}()
	return ch, nil
}

func testSpec(rootfs, volume string, args ...string) *specs.Spec {
	caps := []string{"CAP_KILL", "CAP_SETUID", "CAP_SETGID"}
	return &specs.Spec{
		Root:     &specs.Root{Path: rootfs},
		Hostname: "launched",
		Process: &specs.Process{
			Args: args, Env: []string{"PATH=/bin"}, Cwd: "/",
			User: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1001}},
			// A non-root process keeps capabilities across exec only as
			// ambient ones.
			Capabilities: &specs.LinuxCapabilities{Bounding: caps, Effective: []string{"CAP_KILL"}, Permitted: []string{"CAP_KILL"},
				Inheritable: []string{"CAP_KILL"}, Ambient: []string{"CAP_KILL"}},
			NoNewPrivileges: true,
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 512, Hard: 512}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/data", Type: "bind", Source: volume, Options: []string{"rbind", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
			},
			MaskedPaths:   []string{"/proc/meminfo", "/tmp", "/proc/nonexistent"},
			ReadonlyPaths: []string{"/proc/sys"},
			Seccomp:       seccomp.Default(caps),
		},
	}
}

// TestSpawnOnHost runs the launcher for real on the host (no VM): a
// created container waits for Start, then runs as the spec says
// (namespaces, pivot_root, user, capabilities, no_new_privs, seccomp,
// rlimits, masked and read-only paths); an exec joins its namespaces, with
// and without a terminal; a missing program fails the create.
func TestSpawnOnHost(t *testing.T) {
	testutil.RequiresRoot(t)
	rootfs := busyboxRootfs(t)
	volume := t.TempDir()
	os.WriteFile(filepath.Join(volume, "file"), []byte("from-the-volume"), 0o644)

	// 1. Create: the init is set up and waits; nothing ran yet.
	script := `echo started; hostname; id -u; id -G; grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status; ` +
		`cat /data/file; echo; touch /data/x 2>&1 | grep -o "Read-only"; cat /proc/meminfo | wc -c; ` +
		`ls /tmp | wc -l; (echo 1 > /proc/sys/kernel/domainname) 2>&1 | grep -o "Read-only"; echo pid=$$; exec sleep 30`
	spec := testSpec(rootfs, volume, "/bin/sh", "-c", script)
	outR, outW, _ := os.Pipe()
	flags, join, err := SpecNamespaces(spec.Linux.Namespaces)
	if err != nil {
		t.Fatal(err)
	}
	child, err := Spawn(Options{
		Config:     Config{Mode: ModeCreate, Spec: spec, Process: spec.Process},
		Cloneflags: flags, Join: join,
		Stdio: [3]*os.File{nil, outW, outW},
		Start: hostStart,
	})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(child.Pid, unix.SIGKILL) })

	// 2. Start: it execs the program.
	if err := startChild(child); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	outR.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for !bytes.Contains(out.Bytes(), []byte("pid=")) {
		n, err := outR.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			break
		}
	}
	got := out.String()
	for _, want := range []string{
		"started\nlaunched\n1000\n1000 1001\n",
		"CapEff:\t0000000000000020\n", // CAP_KILL only
		"NoNewPrivs:\t1\n", "Seccomp:\t2\n",
		"from-the-volume\nRead-only\n",
		// /proc/meminfo and /tmp masked (empty), /proc/sys read-only, the
		// shell is PID 1 of its namespace.
		"Read-only\n0\n0\nRead-only\npid=1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("container output lacks %q:\n%s", want, got)
		}
	}

	// 3. Exec joins the container's namespaces: its hostname, its PID
	//    namespace (a small pid), and the spec's user.
	execOut := func(console bool, args ...string) string {
		t.Helper()
		join, err := ProcessNamespaces(child.Pid)
		if err != nil {
			t.Fatal(err)
		}
		p := *spec.Process
		p.Args, p.Terminal = args, console
		r, w, _ := os.Pipe()
		defer r.Close()
		ex, err := Spawn(Options{Config: Config{Mode: ModeExec, Spec: spec, Process: &p, Console: console}, Join: join, Stdio: [3]*os.File{nil, w, w}, Start: hostStart})
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		src := r
		if console {
			defer ex.Console.Close()
			src = ex.Console
		}
		var b bytes.Buffer
		src.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			n, err := src.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		<-ex.Exited
		return b.String()
	}
	if got := execOut(false, "sh", "-c", "hostname; readlink /proc/self; id -u"); !strings.HasPrefix(got, "launched\n") || !strings.HasSuffix(got, "\n1000\n") || len(strings.Split(got, "\n")[1]) > 3 {
		t.Errorf("exec output %q, want the container's hostname, a pid of its namespace and uid 1000", got)
	}
	if got := execOut(true, "tty"); !strings.Contains(got, "/dev/pts/0") {
		t.Errorf("tty exec: %q, want /dev/pts/0 of the container's devpts", got)
	}

	// 4. A program that does not exist fails the create, with nothing left.
	bad := testSpec(rootfs, volume, "/bin/nonexistent")
	flags, join, _ = SpecNamespaces(bad.Linux.Namespaces)
	if c, err := Spawn(Options{Config: Config{Mode: ModeCreate, Spec: bad, Process: bad.Process}, Cloneflags: flags, Join: join, Start: hostStart}); err == nil || !strings.Contains(err.Error(), "nonexistent") {
		if c != nil {
			c.Abort()
		}
		t.Errorf("creating with a missing program: %v, want an error naming it", err)
	}
}

// TestWarm: Warm runs the sealed binary as "version" in new namespaces
// (the test binary's TestMain exits 0 only as PID 1 of a new PID
// namespace) and in the cgroup it is given, and reports a child that
// fails or does not start.
func TestWarm(t *testing.T) {
	dir := cgroup2Dir(t)
	var out bytes.Buffer
	if err := Warm(dir, func(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
		cmd.Stdout = &out
		return hostStart(cmd)
	}); err != nil {
		t.Fatalf("Warm: %v", err)
	}
	if got, want := out.String(), "0::/"+filepath.Base(dir)+"\n"; !strings.HasSuffix(got, want) {
		t.Errorf("Warm's child in cgroup %q, want it in %q", got, want)
	}
	tests := []struct {
		name  string
		start func(*exec.Cmd) (<-chan unix.WaitStatus, error)
	}{
		{"exits 3", func(*exec.Cmd) (<-chan unix.WaitStatus, error) {
			ch := make(chan unix.WaitStatus, 1)
			ch <- unix.WaitStatus(3 << 8)
			return ch, nil
		}},
		{"killed", func(*exec.Cmd) (<-chan unix.WaitStatus, error) {
			ch := make(chan unix.WaitStatus, 1)
			ch <- unix.WaitStatus(unix.SIGKILL)
			return ch, nil
		}},
		{"does not start", func(*exec.Cmd) (<-chan unix.WaitStatus, error) { return nil, unix.ENOENT }},
	}
	for _, tt := range tests {
		if err := Warm(dir, tt.start); err == nil {
			t.Errorf("%s: Warm returned nil, want an error", tt.name)
		}
	}
}

// startChild releases a created container and waits for its exec.
func startChild(c *Child) error {
	if err := c.Release(); err != nil {
		return err
	}
	<-c.Execed()
	return c.ExecErr()
}
