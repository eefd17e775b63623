package netns

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/test/framework"
)

// requireRoot skips tests that create namespaces, mounts and interfaces.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, bind mounts and bridges")
	}
}

// requireCNI skips tests that run the host's CNI plugins.
func requireCNI(t *testing.T) {
	t.Helper()
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			t.Skipf("needs the CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins): %v", err)
		}
	}
}

// uniqueTag returns a name unique to this test run, short enough for an
// interface name (IFNAMSIZ 16) with one extra character.
func uniqueTag(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "crivmtest" + hex.EncodeToString(b)[:5]
}

// checkNoLeaks fails t when anything matching tags was added since before.
func checkNoLeaks(t *testing.T, before framework.NetState, tags ...string) {
	t.Helper()
	diff, err := before.Leaks(5 * time.Second)
	if err != nil {
		t.Fatalf("leak snapshot: %v", err)
	}
	if own := framework.Matching(diff, tags...); len(own) > 0 {
		t.Errorf("left behind:\n  %s", strings.Join(own, "\n  "))
	}
	if other := len(diff) - len(framework.Matching(diff, tags...)); other > 0 {
		t.Logf("ignoring %d entries of other tests: %v", other, diff)
	}
}

// loFlags reads lo's interface flags inside the namespace at path.
func loFlags(t *testing.T, path string) uint16 {
	t.Helper()
	var flags uint16
	err := Do(path, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return err
		}
		flags = ifr.Uint16()
		return nil
	})
	if err != nil {
		t.Fatalf("reading lo flags in %s: %v", path, err)
	}
	return flags
}

func isMountpoint(t *testing.T, path string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

func TestNewRemove(t *testing.T) {
	requireRoot(t)
	tag := uniqueTag(t)
	before, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}

	n, err := New("", tag)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = n.Remove() })
	want := filepath.Join(DefaultDir, tag)
	if n.Path() != want {
		t.Errorf("Path = %q, want %q", n.Path(), want)
	}
	real, err := filepath.EvalSymlinks(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !isMountpoint(t, real) {
		t.Errorf("%s is not a mount point", real)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(n.Path(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.NSFS_MAGIC {
		t.Errorf("%s: filesystem magic %#x, want nsfs", n.Path(), st.Type)
	}
	if !isMountpoint(t, filepath.Dir(real)) {
		t.Errorf("%s is not a mount point; New must self-bind it", filepath.Dir(real))
	}

	// The namespace is not the test's own.
	var self, inside unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(n.Path(), &inside); err != nil {
		t.Fatal(err)
	}
	if self.Ino == inside.Ino {
		t.Fatal("the new namespace is the caller's namespace")
	}

	if flags := loFlags(t, n.Path()); flags&unix.IFF_UP == 0 {
		t.Errorf("lo is down in the new namespace (flags %#x)", flags)
	}
	// lo carries traffic: listen and dial 127.0.0.1 inside.
	err = Do(n.Path(), func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Errorf("loopback TCP inside the namespace: %v", err)
	}

	if _, err := New("", tag); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second New(%q): %v, want AlreadyExists", tag, err)
	}
	if !isMountpoint(t, real) {
		t.Errorf("a failed New removed the existing namespace %s", real)
	}

	if err := n.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(n.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Remove, stat %s: %v", n.Path(), err)
	}
	if isMountpoint(t, real) {
		t.Errorf("after Remove, %s is still mounted", real)
	}
	if err := n.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := FromPath(filepath.Join(DefaultDir, tag+"-never")).Remove(); err != nil {
		t.Errorf("Remove of a never-created namespace: %v", err)
	}
	checkNoLeaks(t, before, tag)
}

func TestNewInvalid(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b"} {
		if _, err := New(t.TempDir(), name); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("New(%q): %v, want InvalidArgument", name, err)
		}
	}
}

func TestNewFailureLeavesNothing(t *testing.T) {
	requireRoot(t)
	tag := uniqueTag(t)
	before, err := framework.NetSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected failure")
	testHookAfterMount = func() error { return injected }
	t.Cleanup(func() { testHookAfterMount = nil })

	_, err = New("", tag)
	if !errors.Is(err, injected) {
		t.Fatalf("New: %v, want the injected failure", err)
	}
	p := filepath.Join(DefaultDir, tag)
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed New left %s: %v", p, err)
	}
	checkNoLeaks(t, before, tag)
}
