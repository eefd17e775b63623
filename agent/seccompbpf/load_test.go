package seccompbpf

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/oci/seccomp"
)

// helperEnv makes the test binary run TestHelperProcess as the child of
// TestLoad.
const helperEnv = "SECCOMPBPF_HELPER_PROCESS"

// probe is a syscall the child makes after loading its filter.
type probe struct {
	name string
	call func() (uintptr, unix.Errno)
	want unix.Errno // 0: the syscall must succeed
}

func syscall0(nr uintptr) func() (uintptr, unix.Errno) {
	return func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall(nr, 0, 0, 0)
		return r, e
	}
}

func probes() []probe {
	buf := make([]byte, 4096)
	var uts unix.Utsname
	return []probe{
		{"getpid", syscall0(unix.SYS_GETPID), 0},
		{"getcwd", func() (uintptr, unix.Errno) {
			r, _, e := unix.Syscall(unix.SYS_GETCWD, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0)
			return r, e
		}, unix.EACCES},
		{"uname", func() (uintptr, unix.Errno) {
			r, _, e := unix.Syscall(unix.SYS_UNAME, uintptr(unsafe.Pointer(&uts)), 0, 0)
			return r, e
		}, unix.EACCES},
		{"unshare(0)", func() (uintptr, unix.Errno) {
			r, _, e := unix.Syscall(unix.SYS_UNSHARE, 0, 0, 0)
			return r, e
		}, 0},
		{"unshare(CLONE_NEWUSER)", func() (uintptr, unix.Errno) {
			r, _, e := unix.Syscall(unix.SYS_UNSHARE, unix.CLONE_NEWUSER, 0, 0)
			return r, e
		}, unix.EXDEV},
		// Without the filter these would succeed or fail otherwise than
		// with EPERM: personality(0xffff) sets a persona and add_key faults
		// on its NULL type.
		{"personality(0xffff)", func() (uintptr, unix.Errno) {
			r, _, e := unix.Syscall(unix.SYS_PERSONALITY, 0xffff, 0, 0)
			return r, e
		}, unix.EPERM},
		{"personality(0xffffffff)", func() (uintptr, unix.Errno) {
			r, _, e := unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)
			return r, e
		}, 0},
		{"add_key", func() (uintptr, unix.Errno) {
			r, _, e := unix.Syscall6(unix.SYS_ADD_KEY, 0, 0, 0, 0, 0, 0)
			return r, e
		}, unix.EPERM},
	}
}

// helperProfile is the default profile with rules put in front of it:
// getcwd and uname answer EACCES, and unshare is allowed unless asked for a
// user namespace, which answers EXDEV.
func helperProfile() *specs.LinuxSeccomp {
	p := seccomp.Default(criOCaps)
	eacces, exdev := uint(unix.EACCES), uint(unix.EXDEV)
	p.Syscalls = append([]specs.LinuxSyscall{
		{Names: []string{"getcwd", "uname"}, Action: specs.ActErrno, ErrnoRet: &eacces},
		{
			Names: []string{"unshare"}, Action: specs.ActErrno, ErrnoRet: &exdev,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: unix.CLONE_NEWUSER, ValueTwo: unix.CLONE_NEWUSER, Op: specs.OpMaskedEqual}},
		},
		{Names: []string{"unshare"}, Action: specs.ActAllow},
	}, p.Syscalls...)
	p.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagSpecAllow}
	return p
}

// TestHelperProcess is the child of TestLoad: it loads helperProfile on its
// thread and prints one "probe NAME ERRNO" line per probe.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("run by TestLoad only")
	}
	runtime.LockOSThread() // never unlocked: the thread dies with the goroutine.
	p := helperProfile()
	prog, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	flags, err := Flags(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := Load(prog, flags); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, pr := range probes() {
		_, e := pr.call()
		fmt.Fprintf(&out, "probe %s %d\n", pr.name, int(e))
	}
	status, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if strings.HasPrefix(line, "Seccomp:") {
			fmt.Fprintf(&out, "probe seccomp-mode %s\n", strings.TrimSpace(strings.TrimPrefix(line, "Seccomp:")))
		}
	}
	os.Stdout.Write(out.Bytes())
}

// TestLoad loads a compiled filter in a child process and checks what the
// kernel answers its probes.
func TestLoad(t *testing.T) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil || !bytes.Contains(status, []byte("\nSeccomp:")) {
		t.Skip("seccomp unavailable: no Seccomp line in /proc/self/status")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper process: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr.Bytes())
	}
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "probe" {
			got[strings.Join(f[1:len(f)-1], " ")] = f[len(f)-1]
		}
	}
	want := map[string]string{"seccomp-mode": "2"}
	for _, pr := range probes() {
		want[pr.name] = fmt.Sprint(int(pr.want))
	}
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s: no result from the helper process", name)
		} else if g != w {
			t.Errorf("%s: errno %s, want %s", name, g, w)
		}
	}
	if t.Failed() {
		t.Logf("helper process output:\n%s", stdout)
	}
}

func TestLoadRejectsBadLength(t *testing.T) {
	if err := Load(nil, 0); err == nil {
		t.Error("Load(nil) succeeded")
	}
	if err := Load(make([]unix.SockFilter, maxInsns+1), 0); err == nil {
		t.Error("Load of an overlong program succeeded")
	}
}
