package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/netns"
)

// What a running VM gets after its start: a VM booted ahead of its pod
// (a pool's) gets its pod's tap and cgroup once the pod exists.

// hotplugTimeout bounds the QMP calls that attach a tap.
const hotplugTimeout = 10 * time.Second

// AttachTap gives NIC i, started Unplugged (a hub port with nothing else
// on its hub), the tap named tap in the network namespace nsPath: the
// daemon opens the tap there and passes it to QEMU (getfd), which adds it
// as a netdev and as a second port of the NIC's hub. QEMU needs neither
// the namespace nor any privilege over the tap. Without a vnet header:
// a hub forwards plain frames.
//
// The guest must not have sent on the NIC before: QEMU 7.2 queues a frame
// sent while the hub has no other port and never flushes that queue, and
// the NIC transmits nothing after it (a link flap does not help). A
// guest's NIC stays down until CreateSandbox configures it.
func (v *VM) AttachTap(ctx context.Context, i int, nsPath, tap string) error {
	f, err := netns.OpenTap(nsPath, tap, false)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, hotplugTimeout)
	defer cancel()
	fdName := fmt.Sprintf("crivm-tap%d", i)
	tapID := fmt.Sprintf("tap%d", i)
	return v.QMP(ctx, func(q *QMP) error {
		if err := q.ExecuteWithFile(ctx, "getfd", map[string]any{"fdname": fdName}, nil, f); err != nil {
			return fmt.Errorf("passing the tap: %w", err)
		}
		if err := q.Execute(ctx, "netdev_add", map[string]any{"type": "tap", "id": tapID, "fd": fdName}, nil); err != nil {
			return fmt.Errorf("adding the tap: %w", err)
		}
		if err := q.Execute(ctx, "netdev_add", map[string]any{"type": "hubport", "id": "hub" + tapID, "hubid": i, "netdev": tapID}, nil); err != nil {
			return fmt.Errorf("plugging the tap into NIC %d's hub: %w", i, err)
		}
		return nil
	})
}

// Move places a running process in c: its threads and what it allocates
// from then on (cgroup v2 and v1 move no charge: pages the process touched
// before stay charged where it was). A systemd scope not started yet is
// started with pid.
func (c *Cgroup) Move(ctx context.Context, pid int) error {
	if c.scope != nil {
		return c.adopt(ctx, pid)
	}
	return c.join(pid)
}

// MoveAll moves every process in c to to (Move), until c holds none: a
// process that forks while it is moved leaves its child behind, which
// the next round moves.
func (c *Cgroup) MoveAll(ctx context.Context, to *Cgroup) error {
	for range 5 {
		pids := c.procs()
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			if err := to.Move(ctx, pid); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
		}
	}
	if pids := c.procs(); len(pids) > 0 {
		return fmt.Errorf("moving the processes of cgroup %s to %s: %v still in it", c.Path, to.Path, pids)
	}
	return nil
}

// procs are the pids in any of c's dirs.
func (c *Cgroup) procs() []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range c.Dirs() {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
