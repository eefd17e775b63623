package framework

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/store"
)

// forceCleanup removes what a daemon that died mid-test (or a test that
// failed before its own cleanup) left: containers, monitors, mounts and
// network namespaces under this daemon's dirs. A passing test leaves
// nothing for it to do; the leak checks of the tests themselves assert that.
func (d *Daemon) forceCleanup() {
	states, _ := filepath.Glob(filepath.Join(d.Runroot, "handlers", "*", "state"))
	for _, st := range states {
		out, _ := exec.Command("runc", "--root", st, "list", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			exec.Command("runc", "--root", st, "delete", "--force", id).Run()
		}
	}
	exec.Command("pkill", "-KILL", "-f", "conmon -b "+d.Dir).Run()
	exec.Command("pkill", "-KILL", "-f", "qemu-system.*"+d.Dir).Run()
	if s, err := store.Open(filepath.Join(d.Root, "store")); err == nil {
		for _, sb := range s.Sandboxes.List(nil) {
			if sb.NetNSPath != "" {
				unix.Unmount(sb.NetNSPath, unix.MNT_DETACH)
				os.Remove(sb.NetNSPath)
			}
		}
		s.Close()
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var mine []string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], d.Dir+"/") {
			mine = append(mine, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mine)))
	for _, m := range mine {
		unix.Unmount(m, unix.MNT_DETACH)
	}
}
