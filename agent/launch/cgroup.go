package launch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// CgroupRoot is the guest's cgroup v2 mount.
const CgroupRoot = "/sys/fs/cgroup"

// wantControllers are enabled down to every container cgroup, when the
// kernel has them.
var wantControllers = []string{"cpu", "cpuset", "io", "memory", "pids", "hugetlb"}

// CreateCgroup makes the cgroup at path (below CgroupRoot; cgroupfs form
// as in the spec's cgroupsPath), enabling the controllers on the way,
// applies res and attaches the device filter of res.Devices (see
// AttachDeviceFilter), which stays as it is for the cgroup's life:
// UpdateCgroup, like `runc update`, leaves devices alone. It returns the
// directory.
func CreateCgroup(path string, res *specs.LinuxResources) (string, error) {
	dir, err := makeCgroup(path, false)
	if err != nil {
		return "", err
	}
	if err := UpdateCgroup(dir, res); err != nil {
		return "", err
	}
	var devices []specs.LinuxDeviceCgroup
	if res != nil {
		devices = res.Devices
	}
	if err := AttachDeviceFilter(dir, devices); err != nil {
		return "", err
	}
	return dir, nil
}

// PrepareCgroupParent makes the cgroup at path with the controllers
// enabled for its children, ahead of the first CreateCgroup below it:
// enabling controllers at the root for the first time costs tens of
// milliseconds in an emulated guest.
func PrepareCgroupParent(path string) error {
	_, err := makeCgroup(path, true)
	return err
}

// makeCgroup makes the directories of path, enabling the controllers in
// each parent (and in the leaf when asParent).
func makeCgroup(path string, asParent bool) (string, error) {
	rel := filepath.Clean("/" + path)
	if rel == "/" {
		return "", fmt.Errorf("cgroup path %q names the root", path)
	}
	avail, err := os.ReadFile(filepath.Join(CgroupRoot, "cgroup.controllers"))
	if err != nil {
		return "", fmt.Errorf("reading the cgroup controllers: %w", err)
	}
	var enable []string
	for _, c := range strings.Fields(string(avail)) {
		if slices.Contains(wantControllers, c) {
			enable = append(enable, c)
		}
	}
	dir := CgroupRoot
	for _, part := range strings.Split(strings.TrimPrefix(rel, "/"), "/") {
		if err := enableControllers(dir, enable); err != nil {
			return "", err
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
	}
	if asParent {
		if err := enableControllers(dir, enable); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// enableControllers enables want for dir's children, unless they are.
func enableControllers(dir string, want []string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("reading the controllers of %s: %w", dir, err)
	}
	have := strings.Fields(string(b))
	var add []string
	for _, c := range want {
		if !slices.Contains(have, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(add, " ")), 0); err != nil {
		return fmt.Errorf("enabling controllers %v in %s: %w", add, dir, err)
	}
	return nil
}

// cgroupFile is one value to write.
type cgroupFile struct{ name, value string }

// cgroupFiles converts OCI resources to cgroup v2 files, with the
// conversions runc uses (cpu shares to weight, swap as memory+swap).
func cgroupFiles(res *specs.LinuxResources) ([]cgroupFile, error) {
	if res == nil {
		return nil, nil
	}
	var out []cgroupFile
	add := func(n, v string) { out = append(out, cgroupFile{n, v}) }
	limit := func(v int64) string {
		if v < 0 {
			return "max"
		}
		return strconv.FormatInt(v, 10)
	}
	if m := res.Memory; m != nil {
		if m.Limit != nil && *m.Limit != 0 {
			add("memory.max", limit(*m.Limit))
		}
		if m.Reservation != nil && *m.Reservation != 0 {
			add("memory.low", limit(*m.Reservation))
		}
		if m.Swap != nil && *m.Swap != 0 {
			switch {
			case *m.Swap < 0:
				add("memory.swap.max", "max")
			case m.Limit == nil || *m.Limit <= 0:
				return nil, fmt.Errorf("memory swap %d needs a memory limit", *m.Swap)
			case *m.Swap < *m.Limit:
				return nil, fmt.Errorf("memory+swap %d is below the memory limit %d", *m.Swap, *m.Limit)
			default:
				add("memory.swap.max", strconv.FormatInt(*m.Swap-*m.Limit, 10))
			}
		}
	}
	if c := res.CPU; c != nil {
		if c.Shares != nil && *c.Shares != 0 {
			s := min(max(*c.Shares, 2), 262144)
			add("cpu.weight", strconv.FormatUint(1+((s-2)*9999)/262142, 10))
		}
		if (c.Quota != nil && *c.Quota != 0) || (c.Period != nil && *c.Period != 0) {
			period := uint64(100000)
			if c.Period != nil && *c.Period != 0 {
				period = *c.Period
			}
			quota := "max"
			if c.Quota != nil && *c.Quota > 0 {
				quota = strconv.FormatInt(*c.Quota, 10)
			}
			add("cpu.max", quota+" "+strconv.FormatUint(period, 10))
		}
		if c.Cpus != "" {
			add("cpuset.cpus", c.Cpus)
		}
		if c.Mems != "" {
			add("cpuset.mems", c.Mems)
		}
	}
	if p := res.Pids; p != nil && p.Limit != nil && *p.Limit != 0 {
		add("pids.max", limit(*p.Limit))
	}
	for _, h := range res.HugepageLimits {
		add("hugetlb."+h.Pagesize+".max", strconv.FormatUint(h.Limit, 10))
	}
	for k, v := range res.Unified {
		if strings.Contains(k, "/") || strings.HasPrefix(k, "cgroup.") {
			return nil, fmt.Errorf("unified key %q is not a controller file", k)
		}
		add(k, v)
	}
	return out, nil
}

// UpdateCgroup writes res into the cgroup at dir.
func UpdateCgroup(dir string, res *specs.LinuxResources) error {
	files, err := cgroupFiles(res)
	if err != nil {
		return fmt.Errorf("converting resources: %w", err)
	}
	for _, f := range files {
		if strings.HasPrefix(f.name, "hugetlb.") {
			// The kubelet sends a limit for each of the host's page
			// sizes; the guest may lack the size or the controller.
			if _, err := os.Stat(filepath.Join(dir, f.name)); errors.Is(err, os.ErrNotExist) {
				continue
			}
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.value), 0); err != nil {
			return fmt.Errorf("writing %s = %q: %w", f.name, f.value, err)
		}
	}
	return nil
}

// KillCgroup SIGKILLs every process in the cgroup at dir (cgroup.kill).
func KillCgroup(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// SignalCgroup sends sig to every process in the cgroup at dir.
func SignalCgroup(dir string, sig unix.Signal) error {
	if sig == unix.SIGKILL {
		return KillCgroup(dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			unix.Kill(pid, sig)
		}
	}
	return nil
}

// RemoveCgroup kills what is left in the cgroup at dir and removes it,
// waiting up to timeout for the processes to be gone.
func RemoveCgroup(dir string, timeout time.Duration) error {
	if err := KillCgroup(dir); err != nil {
		return fmt.Errorf("killing cgroup %s: %w", dir, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
