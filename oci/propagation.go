package oci

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// mountinfoPath is read to learn the propagation of a mount's source.
var mountinfoPath = "/proc/self/mountinfo"

// checkPropagation refuses a propagation the source's own mount cannot
// give: HOST_TO_CONTAINER needs the source on a shared or slave mount,
// BIDIRECTIONAL on a shared one. Without the check the container would get
// a private mount and never see the host's later mounts, silently.
func checkPropagation(src string, p runtimeapi.MountPropagation) error {
	if p != runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER && p != runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL {
		return nil
	}
	mp, shared, slave, err := mountOf(src)
	if err != nil {
		return fmt.Errorf("checking propagation of %s: %w", src, err)
	}
	switch {
	case p == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && !shared:
		return errdefs.FailedPrecondition("path %q is mounted on %q but it is not a shared mount: bidirectional propagation is impossible", src, mp)
	case p == runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER && !shared && !slave:
		return errdefs.FailedPrecondition("path %q is mounted on %q but it is not a shared or slave mount: host-to-container propagation is impossible", src, mp)
	}
	return nil
}

// mountOf finds the mount holding path (the longest mount point that is a
// prefix of it; the last one listed wins for stacked mounts) and reports
// whether it is shared and whether it is a slave.
func mountOf(path string) (mountpoint string, shared, slave bool, err error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return "", false, false, err
	}
	defer f.Close()
	path = filepath.Clean(path)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		mp := fields[4]
		if mp != "/" && path != mp && !strings.HasPrefix(path, mp+"/") {
			continue
		}
		if len(mp) < len(mountpoint) {
			continue
		}
		mountpoint, shared, slave = mp, false, false
		for _, opt := range fields[6:] {
			if opt == "-" {
				break
			}
			shared = shared || strings.HasPrefix(opt, "shared:")
			slave = slave || strings.HasPrefix(opt, "master:")
		}
	}
	if mountpoint == "" {
		return "", false, false, fmt.Errorf("no mount holds %s", path)
	}
	return mountpoint, shared, slave, sc.Err()
}
