package vm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/crivm/crivm/agentproxy"
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

// TestPoolSpecFor: which handlers keep a pool, and of what: booted VMs
// under "pool", clones under "template" with a size, none where clones
// cannot be made (vsock, virtio-fs) or no size is set.
func TestPoolSpecFor(t *testing.T) {
	serial9p := &guestAssets{transport: agentproxy.TransportSerial, sharedFS: sharedFS9p}
	tests := []struct {
		name      string
		factory   string
		size      int
		assets    *guestAssets
		wantOK    bool
		wantClone bool
	}{
		{"none", factoryNone, 0, serial9p, false, false},
		{"pool", factoryPool, 2, serial9p, true, false},
		{"pool on virtio-fs", factoryPool, 2, &guestAssets{transport: agentproxy.TransportSerial, sharedFS: sharedFSVirtio}, true, false},
		{"template without a pool", factoryTemplate, 0, serial9p, false, true},
		{"template with a pool", factoryTemplate, 3, serial9p, true, true},
		{"template pool on virtio-fs", factoryTemplate, 3, &guestAssets{transport: agentproxy.TransportSerial, sharedFS: sharedFSVirtio}, false, true},
		{"template pool on vsock", factoryTemplate, 3, &guestAssets{transport: agentproxy.TransportVsock, sharedFS: sharedFS9p}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{cfg: &configs.RuntimeHandler{VMFactory: tt.factory, VMPoolSize: tt.size, DefaultMemoryMiB: 256, DefaultVCPUs: 1}}
			spec, ok := h.poolSpecFor(tt.assets)
			if ok != tt.wantOK || spec.Clone != tt.wantClone {
				t.Errorf("poolSpecFor: ok %v, clone %v; want %v, %v", ok, spec.Clone, tt.wantOK, tt.wantClone)
			}
			if !tt.wantOK {
				// (With a pool, taking starts a refill: e2e tests it.)
				if pv, reason := h.takePooled(context.Background(), tt.assets, 64, 1); pv != nil || reason != "" {
					t.Errorf("takePooled without a pool: %v, %q; want nothing and no reason", pv, reason)
				}
			}
		})
	}
}
