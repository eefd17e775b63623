package vmm

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/errdefs"
)

// VM templates.
//
// A template is a VM booted once until its agent is ready, then saved:
// its guest RAM lives in a memfd the daemon made (RAMFile with Shared),
// and SaveState writes only the device state (QEMU's migration with
// x-ignore-shared skips RAM that is a shared file). The daemon then seals
// the memfd against every write (SealTemplateRAM). A clone starts with the
// same devices, maps the sealed memfd privately (RAMFile without Shared:
// MAP_PRIVATE, copy-on-write) and loads the device state (Incoming, then
// LoadState). Clones share every page none of them has written; no clone
// can change the template, because the seals make write(2) and writable
// shared mappings of the memfd fail for every process, QEMU as root
// included.

// RAMFile backs guest RAM with a file QEMU maps through /proc/self/fd: a
// memfd from NewTemplateRAM.
type RAMFile struct {
	File *os.File
	// Shared maps it MAP_SHARED (a template being made: the guest's RAM is
	// the file); otherwise MAP_PRIVATE (a clone: copy-on-write over the
	// template's pages).
	Shared bool
}

// NewTemplateRAM makes the memfd that a template's guest RAM lives in.
func NewTemplateRAM(name string, sizeMiB int) (*os.File, error) {
	fd, err := unix.MemfdCreate("crivm-template-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("creating template RAM: %w", err)
	}
	f := os.NewFile(uintptr(fd), "crivm-template-"+name)
	if err := f.Truncate(int64(sizeMiB) << 20); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing template RAM: %w", err)
	}
	return f, nil
}

// SealTemplateRAM forbids any further change to a template's RAM: writes,
// writable shared mappings, resizing, and new seals. It fails while a
// writable shared mapping exists (the template's QEMU must be gone).
func SealTemplateRAM(f *os.File) error {
	_, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL)
	if err != nil {
		return fmt.Errorf("sealing template RAM: %w", err)
	}
	return nil
}

// migrationTimeout bounds a save or load of device state: a few hundred
// KiB through a pipe or file.
const migrationTimeout = 30 * time.Second

// ignoreShared is the migration capability that leaves shared RAM out of
// the stream (and, on the loading side, expects it in place).
var ignoreShared = map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}

// SaveState pauses the VM and writes its device state to out (guest RAM,
// shared in a RAMFile, is left out). The VM stays paused; quit it after.
func (v *VM) SaveState(ctx context.Context, out *os.File) error {
	ctx, cancel := context.WithTimeout(ctx, migrationTimeout)
	defer cancel()
	return v.QMP(ctx, func(q *QMP) error {
		if err := q.ExecuteWithFile(ctx, "getfd", map[string]any{"fdname": "crivm-state"}, nil, out); err != nil {
			return fmt.Errorf("passing the state file: %w", err)
		}
		if err := q.Execute(ctx, "migrate-set-capabilities", ignoreShared, nil); err != nil {
			return err
		}
		if err := q.Execute(ctx, "stop", nil, nil); err != nil {
			return err
		}
		if err := q.Execute(ctx, "migrate", map[string]any{"uri": "fd:crivm-state"}, nil); err != nil {
			return err
		}
		return waitMigration(ctx, q)
	})
}

// LoadState loads the device state a clone was started with (Incoming)
// and resumes the guest.
func (v *VM) LoadState(ctx context.Context) error {
	if v.incomingFD == 0 {
		return errdefs.FailedPrecondition("vm %s was not started to load state", v.dir)
	}
	ctx, cancel := context.WithTimeout(ctx, migrationTimeout)
	defer cancel()
	return v.QMP(ctx, func(q *QMP) error {
		if err := q.Execute(ctx, "migrate-set-capabilities", ignoreShared, nil); err != nil {
			return err
		}
		if err := q.Execute(ctx, "migrate-incoming", map[string]any{"uri": fmt.Sprintf("fd:%d", v.incomingFD)}, nil); err != nil {
			return err
		}
		for {
			st, err := q.QueryStatus(ctx)
			if err != nil {
				return err
			}
			if st.Status != "inmigrate" {
				break
			}
			if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
				return fmt.Errorf("loading device state: %w", err)
			}
		}
		if err := waitMigration(ctx, q); err != nil {
			return err
		}
		return q.Execute(ctx, "cont", nil, nil)
	})
}

// waitMigration polls query-migrate until the migration completes.
func waitMigration(ctx context.Context, q *QMP) error {
	for {
		var m struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := q.Execute(ctx, "query-migrate", nil, &m); err != nil {
			return err
		}
		switch m.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", m.Status, m.ErrorDesc)
		}
		if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for the migration (%s): %w", m.Status, err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WaitAgentPort waits until the guest has opened the agent's
// virtio-serial port (QMP query-chardev's frontend-open): the agent is up
// and waiting for a host. A template is saved in that state, with no host
// connected, so each clone's first host starts a fresh session.
func (v *VM) WaitAgentPort(ctx context.Context) error {
	return v.QMP(ctx, func(q *QMP) error {
		for {
			var devs []struct {
				Label string `json:"label"`
				Open  bool   `json:"frontend-open"`
			}
			if err := q.Execute(ctx, "query-chardev", nil, &devs); err != nil {
				return err
			}
			for _, d := range devs {
				if d.Label == "agent" && d.Open {
					return nil
				}
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return fmt.Errorf("waiting for the guest to open the agent port: %w", err)
			}
		}
	})
}
