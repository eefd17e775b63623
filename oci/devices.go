package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// defaultAllowedDevices are the device-cgroup rules every container gets on
// top of deny-all, as runc's defaults: null, zero, full, random, urandom,
// tty, console, ptmx and the devpts ptys.
var defaultAllowedDevices = []specs.LinuxDeviceCgroup{
	charRule(1, 3), charRule(1, 5), charRule(1, 7), charRule(1, 8), charRule(1, 9),
	charRule(5, 0), charRule(5, 1), charRule(5, 2), charRule(136, -1),
}

func charRule(major, minor int64) specs.LinuxDeviceCgroup {
	r := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: ptr(major), Access: "rwm"}
	if minor >= 0 {
		r.Minor = ptr(minor)
	}
	return r
}

// deviceRules is deny-all, the default allow list, then extra. A privileged
// container may use every device: it may mknod any node, but gets no host
// device nodes in /dev (unlike CRI-O, which copies the host's in).
func deviceRules(privileged bool, extra []specs.LinuxDeviceCgroup) []specs.LinuxDeviceCgroup {
	rules := []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	if privileged {
		return append(rules, specs.LinuxDeviceCgroup{Allow: true, Access: "rwm"})
	}
	rules = append(rules, defaultAllowedDevices...)
	return append(rules, extra...)
}

// criDevices turns CRI devices into device nodes and the cgroup rules that
// allow them. A host path that is a directory adds every device below it.
// A missing host path, or one that is not a device, is InvalidArgument.
func criDevices(ds []*runtimeapi.Device) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	var devs []specs.LinuxDevice
	var rules []specs.LinuxDeviceCgroup
	for _, d := range ds {
		perms := d.GetPermissions()
		if perms == "" {
			perms = "rwm"
		}
		if strings.Trim(perms, "rwm") != "" {
			return nil, nil, errdefs.InvalidArgument("device %q: permissions %q are not a subset of \"rwm\"", d.GetHostPath(), perms)
		}
		host := d.GetHostPath()
		ctr := firstNonEmpty(d.GetContainerPath(), host)
		if !filepath.IsAbs(host) || !path.IsAbs(ctr) {
			return nil, nil, errdefs.InvalidArgument("device %q -> %q: paths must be absolute", host, ctr)
		}
		fi, err := os.Stat(host)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, errdefs.InvalidArgument("device %q does not exist", host)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("checking device: %w", err)
		}
		if !fi.IsDir() {
			dev, ok := linuxDevice(fi, ctr)
			if !ok {
				return nil, nil, errdefs.InvalidArgument("%q is not a device", host)
			}
			devs = append(devs, dev)
			rules = append(rules, deviceRule(dev, perms))
			continue
		}
		err = filepath.WalkDir(host, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Type()&fs.ModeDevice == 0 {
				return err
			}
			fi, err := e.Info()
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(host, p)
			if err != nil {
				return err
			}
			dev, _ := linuxDevice(fi, path.Join(ctr, filepath.ToSlash(rel)))
			devs = append(devs, dev)
			rules = append(rules, deviceRule(dev, perms))
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("listing devices under %s: %w", host, err)
		}
	}
	return devs, rules, nil
}

// linuxDevice describes the device node fi at ctrPath; ok is false when fi
// is not a device.
func linuxDevice(fi fs.FileInfo, ctrPath string) (specs.LinuxDevice, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&fs.ModeDevice == 0 {
		return specs.LinuxDevice{}, false
	}
	typ := "b"
	if fi.Mode()&fs.ModeCharDevice != 0 {
		typ = "c"
	}
	return specs.LinuxDevice{
		Path:     ctrPath,
		Type:     typ,
		Major:    int64(unix.Major(st.Rdev)),
		Minor:    int64(unix.Minor(st.Rdev)),
		FileMode: ptr(fi.Mode().Perm()),
		UID:      ptr(st.Uid),
		GID:      ptr(st.Gid),
	}, true
}

func deviceRule(d specs.LinuxDevice, perms string) specs.LinuxDeviceCgroup {
	return specs.LinuxDeviceCgroup{Allow: true, Type: d.Type, Major: ptr(d.Major), Minor: ptr(d.Minor), Access: perms}
}
