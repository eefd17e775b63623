package vm

import (
	"errors"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/vmm"
)

// QEMU's identity. Each VM pod's QEMU runs as a uid and gid of its own,
// vmm_uid_base + slot, so that one pod's QEMU can neither signal, ptrace
// nor read the memory of another's. Invariant: a slot is taken while a VM
// dir's record names it (vmRecord.VMMUID, written before QEMU starts) or
// a StartSandbox holds it in h.pendingIDs; h.idMu serializes the choice.

// claimIdentity picks sandbox id's uid: the first free slot from a hash
// of id. The returned release ends the pending claim once the VM's record
// holds the uid (or the start failed).
func (h *Handler) claimIdentity(id string, ninep bool) (*vmm.Identity, func(), error) {
	h.idMu.Lock()
	defer h.idMu.Unlock()
	used := map[uint32]bool{}
	for _, uid := range h.pendingIDs {
		used[uid] = true
	}
	entries, err := os.ReadDir(h.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	for _, e := range entries {
		if r, err := readVMRecord(filepath.Join(h.dir, e.Name())); err == nil && r.VMMUID != 0 {
			used[r.VMMUID] = true
		}
	}
	base, n := h.cfg.VMMUIDBase, h.cfg.VMMUIDCount
	f := fnv.New32a()
	f.Write([]byte(id))
	start := f.Sum32() % n
	for i := range n {
		uid := base + (start+i)%n
		if used[uid] {
			continue
		}
		h.pendingIDs[id] = uid
		ident := &vmm.Identity{UID: uid, GID: uid, Groups: deviceGroups(vmmDevices)}
		if ninep {
			ident.Caps = slices.Clone(vmm.NinePCaps)
		}
		return ident, func() {
			h.idMu.Lock()
			delete(h.pendingIDs, id)
			h.idMu.Unlock()
		}, nil
	}
	return nil, nil, errdefs.FailedPrecondition("handler %q: all %d VMM uids from %d are taken (vmm_uid_base, vmm_uid_count)", h.name, n, base)
}

// deviceGroups are the groups of the devices that are not open to all
// (/dev/kvm is root:kvm 0660 on most distributions): QEMU gets them as
// supplementary groups, and no other access to devices.
func deviceGroups(devices []string) []uint32 {
	var gids []uint32
	for _, d := range devices {
		var st syscall.Stat_t
		if syscall.Stat(d, &st) != nil || st.Mode&0o006 == 0o006 || st.Gid == 0 || st.Mode&0o060 != 0o060 {
			continue
		}
		if !slices.Contains(gids, st.Gid) {
			gids = append(gids, st.Gid)
		}
	}
	return gids
}
