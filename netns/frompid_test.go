package netns

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/test/framework"
)

// TestNewFromPID: the network namespace of a process in its own user
// namespace (as a user-namespaced pod's sandbox makes it) is pinned, comes
// with lo up, outlives the process and is removed like any other.
func TestNewFromPID(t *testing.T) {
	requireRoot(t)
	tag := uniqueTag(t)
	before, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 200000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 200000, Size: 65536}},
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a process in a new user and network namespace: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var want unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(cmd.Process.Pid)+"/ns/net", &want); err != nil {
		t.Fatal(err)
	}

	n, err := NewFromPID("", tag, cmd.Process.Pid)
	if err != nil {
		t.Fatalf("NewFromPID: %v", err)
	}
	t.Cleanup(func() { _ = n.Remove() })
	var got unix.Stat_t
	if err := unix.Stat(n.Path(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		t.Errorf("pinned namespace %d/%d, want the process's %d/%d", got.Dev, got.Ino, want.Dev, want.Ino)
	}
	if flags := loFlags(t, n.Path()); flags&unix.IFF_UP == 0 {
		t.Errorf("lo is down in the pinned namespace (flags %#x)", flags)
	}
	cmd.Process.Kill()
	cmd.Wait()
	var st unix.Statfs_t
	if err := unix.Statfs(n.Path(), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		t.Errorf("after the process exited: statfs %v, magic %#x, want nsfs", err, st.Type)
	}
	if _, err := NewFromPID("", tag, cmd.Process.Pid); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second NewFromPID: %v, want AlreadyExists", err)
	}
	if err := n.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Remove: %v", err)
	}
	// A process that is gone leaves nothing behind.
	if _, err := NewFromPID("", tag, cmd.Process.Pid); err == nil {
		t.Error("NewFromPID of an exited process succeeded")
	}
	if _, err := os.Stat(n.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a failed NewFromPID: %v", err)
	}
	if _, err := NewFromPID("", tag, 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("pid 0: %v, want InvalidArgument", err)
	}
	checkNoLeaks(t, before, tag)
}
