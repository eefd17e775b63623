package hostcheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/vmm/hostprobe"
)

// checkExecutable requires path to resolve to a regular file the caller may
// execute.
func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errors.New("no such file")
		}
		return err
	}
	if !st.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return fmt.Errorf("not executable: %w", err)
	}
	return nil
}

// dirWritable creates dir when missing and reports whether the caller may
// create files in it.
func dirWritable(dir string) bool {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false
	}
	return unix.Access(dir, unix.W_OK) == nil
}

// Cgroup modes.
const (
	CgroupV1     = "v1"
	CgroupV2     = "v2"
	CgroupHybrid = "hybrid"
)

// requiredControllers are the controllers the kubelet and the runc handler
// cannot work without.
var requiredControllers = []string{"cpu", "memory", "pids"}

// cgroupFS is the part of the host the cgroup check reads; tests fake it.
type cgroupFS struct {
	root     string
	statfs   func(path string) (int64, error) // filesystem magic
	readFile func(path string) ([]byte, error)
}

func hostCgroupFS() cgroupFS {
	return cgroupFS{
		root: "/sys/fs/cgroup",
		statfs: func(path string) (int64, error) {
			var st unix.Statfs_t
			if err := unix.Statfs(path, &st); err != nil {
				return 0, err
			}
			return int64(st.Type), nil
		},
		readFile: os.ReadFile,
	}
}

// cgroupMode tells v2 (cgroup2 at the root), hybrid (tmpfs at the root with
// cgroup2 at unified/) and v1 (tmpfs at the root, no cgroup2).
func cgroupMode(cfs cgroupFS) (string, error) {
	magic, err := cfs.statfs(cfs.root)
	if err != nil {
		return "", fmt.Errorf("statfs %s: %w", cfs.root, err)
	}
	switch magic {
	case unix.CGROUP2_SUPER_MAGIC:
		return CgroupV2, nil
	case unix.TMPFS_MAGIC:
		if m, err := cfs.statfs(filepath.Join(cfs.root, "unified")); err == nil && m == unix.CGROUP2_SUPER_MAGIC {
			return CgroupHybrid, nil
		}
		return CgroupV1, nil
	}
	return "", fmt.Errorf("%s is neither cgroup2 nor tmpfs (magic %#x)", cfs.root, magic)
}

// parseProcCgroups returns the controllers that are enabled and bound to a
// v1 hierarchy (hierarchy id != 0) in /proc/cgroups.
func parseProcCgroups(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[1] != "0" && f[3] == "1" {
			out = append(out, f[0])
		}
	}
	return out
}

// cgroupControllers lists the controllers containers can use in mode.
func cgroupControllers(cfs cgroupFS, mode string) ([]string, error) {
	if mode == CgroupV2 {
		p := filepath.Join(cfs.root, "cgroup.controllers")
		data, err := cfs.readFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		return sortedUnique(strings.Fields(string(data))), nil
	}
	data, err := cfs.readFile("/proc/cgroups")
	if err != nil {
		return nil, fmt.Errorf("reading /proc/cgroups: %w", err)
	}
	return sortedUnique(parseProcCgroups(data)), nil
}

func checkCgroups(cfs cgroupFS) Item {
	it := Item{Name: ItemCgroups}
	mode, err := cgroupMode(cfs)
	if err != nil {
		it.Value, it.Detail = "none", err.Error()
		return it
	}
	it.Value = mode
	ctrls, err := cgroupControllers(cfs, mode)
	if err != nil {
		it.Detail = err.Error()
		return it
	}
	var missing []string
	for _, r := range requiredControllers {
		if !slices.Contains(ctrls, r) {
			missing = append(missing, r)
		}
	}
	prefix := "controllers: "
	if mode == CgroupHybrid {
		prefix = "v1 controllers (cgroup2 at " + filepath.Join(cfs.root, "unified") + "): "
	}
	it.Detail = prefix + strings.Join(ctrls, " ")
	if len(missing) > 0 {
		it.Detail = "missing controllers " + strings.Join(missing, " ") + "; " + it.Detail
		return it
	}
	it.OK = true
	return it
}

// checkOverlay mounts a real overlay when running as root; otherwise it can
// only look for overlay in /proc/filesystems.
func checkOverlay(ctx context.Context) Item {
	it := Item{Name: ItemOverlay}
	if os.Geteuid() != 0 {
		data, err := os.ReadFile("/proc/filesystems")
		if err != nil {
			it.Value, it.Detail = "unknown", fmt.Sprintf("not root, and reading /proc/filesystems: %v", err)
			return it
		}
		if !procFilesystemsHas(data, "overlay") {
			it.Value, it.Detail = "missing", "not root: overlay not in /proc/filesystems (module not loaded?)"
			return it
		}
		it.OK, it.Value, it.Detail = true, "listed", "not root: checked /proc/filesystems only"
		return it
	}
	if err := overlayMountTest(os.TempDir()); err != nil {
		log.G(ctx).Debug("overlay mount test failed", "error", err)
		it.Value, it.Detail = "failed", err.Error()
		return it
	}
	it.OK, it.Value, it.Detail = true, "works", "mounted, wrote and unmounted an overlay in "+os.TempDir()
	return it
}

func procFilesystemsHas(data []byte, fsType string) bool {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[len(f)-1] == fsType {
			return true
		}
	}
	return false
}

// overlayMountTest mounts lower+upper on merged inside a fresh directory
// under base, reads a lower file and writes a new one through the mount,
// unmounts, and checks the write landed in upper. The directory is removed
// only once nothing is mounted in it.
func overlayMountTest(base string) (err error) {
	dir, err := os.MkdirTemp(base, "crivm-overlay-check-")
	if err != nil {
		return fmt.Errorf("creating test dir: %w", err)
	}
	mounted := false
	defer func() {
		if mounted {
			if uerr := unix.Unmount(filepath.Join(dir, "merged"), unix.MNT_DETACH); uerr != nil {
				err = errors.Join(err, fmt.Errorf("unmounting %s/merged: %w (left in place)", dir, uerr))
				return
			}
		}
		os.RemoveAll(dir)
	}()
	lower, upper, work, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "from-lower"), []byte("lower"), 0o644); err != nil {
		return fmt.Errorf("writing lower file: %w", err)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mounting overlay in %s: %w", dir, err)
	}
	mounted = true
	if b, err := os.ReadFile(filepath.Join(merged, "from-lower")); err != nil || string(b) != "lower" {
		return fmt.Errorf("reading a lower file through the overlay: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(merged, "from-merged"), []byte("upper"), 0o644); err != nil {
		return fmt.Errorf("writing through the overlay: %w", err)
	}
	if err := unix.Unmount(merged, 0); err != nil {
		return fmt.Errorf("unmounting overlay: %w", err)
	}
	mounted = false
	if b, err := os.ReadFile(filepath.Join(upper, "from-merged")); err != nil || string(b) != "upper" {
		return fmt.Errorf("finding the overlay write in upperdir: %q, %v", b, err)
	}
	return nil
}

func checkVhostVsock() Item {
	ok, why := hostprobe.VhostVsockAvailable()
	it := Item{Name: ItemVhostVsock, OK: ok, Value: yesNo(ok, "present", "missing"), Detail: why}
	if !ok {
		it.Detail += ": vm handlers use virtio-serial for the agent"
	}
	return it
}

// cniPlugins are the plugins crivm's default network and port mappings use.
var cniPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

func checkCNIPlugins(dirs []string) Item {
	it := Item{Name: ItemCNIPlugins}
	var existing []string
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			existing = append(existing, d)
		}
	}
	it.Value = strings.Join(existing, " ")
	if len(existing) == 0 {
		it.Value = "none"
		it.Detail = "no plugin dir exists (looked in " + strings.Join(dirs, ", ") + ")"
		return it
	}
	var missing []string
	byDir := map[string][]string{}
	for _, p := range cniPlugins {
		at := ""
		for _, d := range existing {
			if checkExecutable(filepath.Join(d, p)) == nil {
				at = d
				break
			}
		}
		if at == "" {
			missing = append(missing, p)
		} else {
			byDir[at] = append(byDir[at], p)
		}
	}
	var found []string
	for _, d := range existing {
		if ps := byDir[d]; len(ps) > 0 {
			found = append(found, strings.Join(ps, " ")+" in "+d)
		}
	}
	it.Detail = strings.Join(found, "; ")
	if len(missing) > 0 {
		it.Detail = "missing " + strings.Join(missing, " ") + " (looked in " + strings.Join(existing, ", ") + ")"
		if len(found) > 0 {
			it.Detail += "; found " + strings.Join(found, "; ")
		}
		return it
	}
	it.OK = true
	return it
}

func checkCNIConfig(dir string) Item {
	it := Item{Name: ItemCNIConfig, Value: dir}
	var files []string
	for _, pat := range []string{"*.conflist", "*.conf", "*.json"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			it.Detail = err.Error()
			return it
		}
		for _, f := range m {
			files = append(files, filepath.Base(f))
		}
	}
	if len(files) == 0 {
		if _, err := os.Stat(dir); err != nil {
			it.Detail = fmt.Sprintf("%s does not exist: pods get no network until a *.conflist is added", dir)
		} else {
			it.Detail = "no *.conflist, *.conf or *.json: pods get no network until one is added"
		}
		return it
	}
	files = sortedUnique(files)
	it.OK = true
	it.Detail = strconv.Itoa(len(files)) + " file(s): " + strings.Join(files, " ")
	return it
}
