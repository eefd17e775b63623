package assets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultBootDir is where FindKernel looks for installed kernels.
const DefaultBootDir = "/boot"

// GuestKernelDir is where crivm's own guest kernel is installed
// (scripts/guest-kernel.sh: vmlinuz-<release>, its modules.builtin in
// /lib/modules/<release>). FindKernel prefers it to the host's kernels.
const GuestKernelDir = "/usr/lib/crivm"

// errNoKernel is returned when neither a configured kernel nor any
// vmlinuz-* exists in the boot directory.
var errNoKernel = errors.New("no guest kernel found in /boot (install linux-image-amd64 or set kernel = ...)")

// FindKernel returns the guest kernel to boot: configured when set (it must
// exist), else the newest of crivm's own (GuestKernelDir/vmlinuz-*), else
// /boot/vmlinuz-$(uname -r), else the newest /boot/vmlinuz-* by version
// order.
func FindKernel(configured string) (string, error) {
	return findKernel(configured, GuestKernelDir, DefaultBootDir, HostRelease())
}

// FindHostKernel returns the distro's kernel that FindKernel takes when
// crivm's own is not installed: /boot/vmlinuz-$(uname -r), else the
// newest /boot/vmlinuz-*.
func FindHostKernel() (string, error) {
	return findKernel("", "", DefaultBootDir, HostRelease())
}

// HostRelease is the running kernel's release (uname -r); "" when
// unknown.
func HostRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func findKernel(configured, guestDir, bootDir, release string) (string, error) {
	if configured != "" {
		if err := checkKernelFile(configured); err != nil {
			return "", fmt.Errorf("checking configured kernel %s: %w", configured, err)
		}
		return configured, nil
	}
	if k, err := newestKernel(guestDir); err != nil || k != "" {
		return k, err
	}
	if release != "" {
		p := filepath.Join(bootDir, "vmlinuz-"+release)
		if checkKernelFile(p) == nil {
			return p, nil
		}
	}
	k, err := newestKernel(bootDir)
	switch {
	case err != nil || k != "":
		return k, err
	case bootDir != DefaultBootDir:
		return "", fmt.Errorf("no guest kernel found in %s (install linux-image-amd64 or set kernel = ...)", bootDir)
	}
	return "", errNoKernel
}

// newestKernel is the newest dir/vmlinuz-* by version order, or "" when
// there is none (or no dir, or dir is "").
func newestKernel(dir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("listing %s: %w", dir, err)
	}
	var versions []string
	for _, e := range entries {
		v, ok := strings.CutPrefix(e.Name(), "vmlinuz-")
		if !ok || v == "" || isPackagingLeftover(v) {
			continue
		}
		if checkKernelFile(filepath.Join(dir, e.Name())) == nil {
			versions = append(versions, v)
		}
	}
	if len(versions) == 0 {
		return "", nil
	}
	return filepath.Join(dir, "vmlinuz-"+slices.MaxFunc(versions, compareVersions)), nil
}

// isPackagingLeftover reports names dpkg or editors leave next to a kernel.
func isPackagingLeftover(v string) bool {
	for _, s := range []string{".dpkg-tmp", ".dpkg-new", ".dpkg-old", ".dpkg-bak", ".old", ".bak", "~"} {
		if strings.HasSuffix(v, s) {
			return true
		}
	}
	return false
}

// checkKernelFile requires p to resolve to a non-empty regular file. The
// error does not repeat p; callers name it.
func checkKernelFile(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			return pe.Err
		}
		return err
	}
	if !st.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	if st.Size() == 0 {
		return errors.New("empty file")
	}
	return nil
}

// compareVersions orders version strings the way `sort -V` does for kernel
// releases: runs of digits compare numerically, other runs byte-wise, so
// 6.1.0-10-amd64 > 6.1.0-9-amd64 and 6.10 > 6.9.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		var ra, rb string
		ra, a = nextRun(a)
		rb, b = nextRun(b)
		da, db := isDigit(ra[0]), isDigit(rb[0])
		switch {
		case da && db:
			na, nb := strings.TrimLeft(ra, "0"), strings.TrimLeft(rb, "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
		case da != db:
			// A number sorts after a separator or suffix: 6.1.0-10 > 6.1.0-rc.
			if da {
				return 1
			}
			return -1
		default:
			if c := strings.Compare(ra, rb); c != 0 {
				return c
			}
		}
	}
	return len(a) - len(b)
}

// nextRun splits s (non-empty) into its leading run of digits or non-digits
// and the rest.
func nextRun(s string) (string, string) {
	d := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == d {
		i++
	}
	return s[:i], s[i:]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// Guest is what a VM boots: a kernel's PVH vmlinux and an agent initrd
// for its release.
type Guest struct{ Vmlinux, Initrd, Release string }

// ForKernel extracts kernel's vmlinux and builds the initrd opts describe
// for kernel's release (opts.KernelRelease is set from it), both cached in
// opts.CacheDir.
func ForKernel(ctx context.Context, kernel string, opts InitrdOptions) (Guest, error) {
	var g Guest
	var err error
	if g.Vmlinux, err = Vmlinux(ctx, kernel, opts.CacheDir); err != nil {
		return Guest{}, fmt.Errorf("extracting vmlinux from %s: %w", kernel, err)
	}
	if g.Release, err = KernelRelease(kernel); err != nil {
		return Guest{}, fmt.Errorf("reading the release of %s: %w", kernel, err)
	}
	opts.KernelRelease = g.Release
	if g.Initrd, err = Initrd(ctx, opts); err != nil {
		return Guest{}, fmt.Errorf("building the initrd for %s: %w", g.Release, err)
	}
	return g, nil
}
