package vm

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/vmm"
)

// logTrimInterval is how often the handler bounds its VMs' logs
// (vmm.TrimLogs). Between two trims a guest flooding its console adds about
// 1 MB under TCG here; a trim costs a stat of each log when there is
// nothing to trim.
const logTrimInterval = time.Second

// trimLogs bounds the logs of every VM dir of the handler (pods' VMs and
// pooled VMs) until ctx ends. A template's VM, below templatesDir, is
// left out: it runs no pod's code, and only until it is saved.
func (h *Handler) trimLogs(ctx context.Context) {
	t := time.NewTicker(logTrimInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.trimLogsOnce(ctx)
	}
}

func (h *Handler) trimLogsOnce(ctx context.Context) {
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		return
	}
	// A pod's VM dir that is a pooled VM's is a symlink to it: the
	// pooled VM's dir is trimmed.
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if err := vmm.TrimLogs(filepath.Join(h.dir, e.Name())); err != nil {
			log.G(ctx).Warn("bounding a VM's logs", "dir", e.Name(), "err", err)
		}
	}
}
