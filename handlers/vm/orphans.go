package vm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/vmm"
)

// Orphans. A VM pod's host state is its VM dir, named by the first 32
// characters of its sandbox's ID below the handler's dir (QEMU's pidfile
// and sockets, virtiofsd's, the pod mount namespace's pin and the share),
// and its cgroup (crivm-<sandbox ID> below the pod's cgroup_parent, or
// the systemd scope crivm-vm-<sandbox ID>.scope), which the VM dir
// records (cgroupRecordFile) from its creation on. The handler's dir is
// this daemon's own (under its runroot): a dir there named as crivm names
// VM dirs is crivm's, and so is a cgroup it records whose name carries
// that dir's name. A pod's tap lives in its network namespace and ends
// with it.

var _ handlers.OrphanSweeper = (*Handler)(nil)

// cgroupRecordFile in a VM dir holds the path of the VM's cgroup.
const cgroupRecordFile = "cgroup"

// writeCgroupRecord records p, the cgroup of the VM in dir, so that the
// cgroup is found without the sandbox's record, whatever its parent.
func writeCgroupRecord(dir, p string) error {
	if err := os.WriteFile(filepath.Join(dir, cgroupRecordFile), []byte(p+"\n"), 0o600); err != nil {
		return fmt.Errorf("recording the VM's cgroup: %w", err)
	}
	return nil
}

// orphanCgroup is the cgroup of the VM whose dir is dir, named key: the
// one dir records, else (a dir from before the record) a cgroup named for
// key below vmm.CgroupDefaultParent. Nil when there is none.
func orphanCgroup(dir, key string) *vmm.Cgroup {
	if b, err := os.ReadFile(filepath.Join(dir, cgroupRecordFile)); err == nil {
		p := strings.TrimSpace(string(b))
		if !vmCgroupOf(p, key) {
			return nil
		}
		cg, err := vmm.NewCgroup(p)
		if err != nil {
			return nil
		}
		return cg
	}
	parent, err := vmm.NewCgroup(vmm.CgroupDefaultParent)
	if err != nil {
		return nil
	}
	for _, d := range parent.Dirs() {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			p := path.Join(vmm.CgroupDefaultParent, e.Name())
			if e.IsDir() && vmCgroupOf(p, key) {
				cg, err := vmm.NewCgroup(p)
				if err != nil {
					return nil
				}
				return cg
			}
		}
	}
	return nil
}

// vmCgroupOf reports whether p, a cgroup path, is a VM's cgroup as the
// vmm package names it for a sandbox whose ID starts with key: clean,
// absolute, and named crivm-<ID> (cgroupfs, vmm.SandboxCgroupPath) or
// crivm-vm-<ID>.scope (a systemd scope).
func vmCgroupOf(p, key string) bool {
	base := path.Base(p)
	id, ok := strings.CutPrefix(base, "crivm-")
	if scope, isScope := strings.CutPrefix(base, "crivm-vm-"); isScope {
		id, ok = strings.CutSuffix(scope, ".scope")
	}
	return ok && strings.HasPrefix(p, "/") && path.Clean(p) == p && store.IsID(id) && strings.HasPrefix(id, key)
}

// isVMDirName holds for the names of VM dirs (vmDir): 32 hex digits.
func isVMDirName(s string) bool { return len(s) == 32 && validID(s) }

// cgroupExists reports whether any of the cgroup's dirs exists.
func cgroupExists(cg *vmm.Cgroup) bool {
	for _, d := range cg.Dirs() {
		if _, err := os.Stat(d); err == nil {
			return true
		}
	}
	return false
}

// Owned lists the VM dirs, by name: the first 32 characters of their
// sandboxes' IDs. A pod that took a pooled VM has a symlink of that name
// to the pooled VM's dir.
func (h *Handler) Owned(ctx context.Context) ([]handlers.Owned, error) {
	entries, err := os.ReadDir(h.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", h.dir, err)
	}
	var out []handlers.Owned
	for _, e := range entries {
		if !isVMDirName(e.Name()) {
			continue
		}
		dir, ok := h.orphanDir(e.Name())
		if !ok {
			continue
		}
		what := []string{"VM dir " + dir}
		if vmm.Running(dir) {
			what = append(what, "QEMU running")
		}
		if cg := orphanCgroup(dir, e.Name()); cg != nil && cgroupExists(cg) {
			what = append(what, "cgroup "+cg.Path)
		}
		out = append(out, handlers.Owned{ID: e.Name(), Found: strings.Join(what, ", ")})
	}
	return out, nil
}

// orphanDir is the VM dir the entry key of the handler's dir names: key
// itself, or the pooled VM's dir it links to.
func (h *Handler) orphanDir(key string) (string, bool) {
	p := filepath.Join(h.dir, key)
	if d := h.vmDirNamed(key); d != p {
		return d, true
	}
	fi, err := os.Lstat(p)
	return p, err == nil && fi.IsDir()
}

// ReleaseOrphan releases the VM whose dir is named key (releaseVMDir),
// and the symlink of that name when the pod had taken a pooled VM.
func (h *Handler) ReleaseOrphan(ctx context.Context, key string) error {
	if !isVMDirName(key) {
		return errdefs.InvalidArgument("vm orphan %q: not a VM dir name", key)
	}
	p := filepath.Join(h.dir, key)
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	dir, ok := h.orphanDir(key)
	if !ok {
		return errdefs.InvalidArgument("vm orphan %s: not a directory", p)
	}
	if err := h.releaseVMDir(ctx, dir, key); err != nil {
		return err
	}
	if dir != p {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// releaseVMDir releases the VM in dir, whose cgroup is named for key:
// QEMU killed (found through its pidfile, checked against the running
// process), virtiofsd stopped, whatever else is in the VM's cgroup killed
// and the cgroup removed, then the share and the pod mount namespace
// released and the dir removed. The dir goes last: it is what finds the
// rest at a retry.
func (h *Handler) releaseVMDir(ctx context.Context, dir, key string) error {
	sh := share{dir: dir}
	if vm, err := vmm.Reconnect(ctx, dir); err == nil {
		if err := vm.Kill(ctx); err != nil {
			return err
		}
	}
	if err := vmm.StopVirtiofsd(ctx, sh.virtiofsdDir(), virtiofsdGrace); err != nil {
		return fmt.Errorf("stopping virtiofsd: %w", err)
	}
	if cg := orphanCgroup(dir, key); cg != nil {
		if err := cg.KillAll(); err != nil {
			return err
		}
		if err := cg.Remove(ctx); err != nil {
			return err
		}
	}
	if vmm.Running(dir) {
		return fmt.Errorf("QEMU of %s still runs: it answers no QMP and no cgroup of it is known", dir)
	}
	return sh.destroy()
}
