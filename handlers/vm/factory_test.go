package vm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/crivm/crivm/configs"
)

// TestTemplateFailed: a template whose clone failed is replaced by a
// failed one of its spec, which pods get (and boot) until templateRetry
// has passed, without a new build; a stale caller cannot replace a newer
// template.
func TestTemplateFailed(t *testing.T) {
	h := &Handler{name: "vm", dir: t.TempDir(), cfg: &configs.RuntimeHandler{VMFactory: factoryTemplate, VMMUIDBase: 3000000000, VMMUIDCount: 16}, pendingIDs: map[string]uint32{}}
	spec := templateSpec{QEMU: "/q", MemoryMiB: 256, VCPUs: 1}
	good := &vmTemplate{spec: spec, built: make(chan struct{})}
	close(good.built)
	h.factory.cur = good

	boom := errors.New("boom")
	h.templateFailed(good, boom)
	got := h.template(context.Background(), spec)
	select {
	case <-got.built:
	default:
		t.Fatal("a new build started within templateRetry of the failure")
	}
	if !errors.Is(got.err, boom) || got == good {
		t.Errorf("after the failure: template err %v (same as before: %v), want the failure", got.err, got == good)
	}

	// A second report about the old template changes nothing.
	h.templateFailed(good, errors.New("late"))
	if h.factory.cur != got {
		t.Error("a stale failure report replaced the current template")
	}

	// Past templateRetry, the next pod starts a new build (here: one that
	// fails at once, there being no QEMU).
	got.failedAt = time.Now().Add(-2 * templateRetry)
	next := h.template(context.Background(), spec)
	if next == got {
		t.Fatal("no new build after templateRetry")
	}
	<-next.built
	if next.err == nil {
		t.Error("a template built without a QEMU")
	}
}
