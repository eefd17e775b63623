package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/crivm/crivm/internal/log"
)

// An idle daemon allocates nothing, so the Go runtime collects the garbage
// of its last burst of work (an image pull, pods starting) only at its
// forced GC two minutes later, and its scavenger then hands the freed pages
// back gradually: the burst's heap stays resident meanwhile, several times
// the live heap (2 MiB at idle). releaseIdle gives it back as soon as the
// daemon has gone quiet.
const (
	// releaseEvery is how often the allocation counter is read.
	releaseEvery = time.Second
	// releaseQuiet is the most allocated during one period for the daemon
	// to count as quiet. A pull or a pod start allocates more; so does a
	// kubelet's relist once it lists a few dozen pods (about 12 KiB a pod),
	// and then the runtime's own GC paces the heap as before.
	releaseQuiet = 256 << 10
	// releaseBurst is the least allocated since the last release for
	// another to be worth its two GCs: at most two per 2 MiB allocated,
	// where the runtime runs one per heap goal (4 MiB at least).
	releaseBurst = 2 << 20
	// releaseFree is the least free heap, freed by a GC after the last
	// release and not yet returned, for a release while quiet: a burst's
	// garbage that was still referenced at its release, freed by a later
	// GC, is otherwise returned only gradually.
	releaseFree = 1 << 20
)

// idleRelease decides when to release, from the cumulative bytes the heap
// has allocated, read once a period. Its zero value has released nothing.
type idleRelease struct {
	quiet, burst, free uint64
	last               uint64 // the counter at the previous read
	released           uint64 // the counter at the last release
}

// due takes the counter and the free heap not yet returned, and says
// whether to release now: the last period was quiet, and at least burst
// bytes were allocated since the last release or at least free bytes of
// the heap are free and resident.
func (r *idleRelease) due(allocs, free uint64) bool {
	period := allocs - r.last
	r.last = allocs
	if period > r.quiet || (allocs-r.released < r.burst && free < r.free) {
		return false
	}
	r.released = allocs
	return true
}

// releaseIdle runs until ctx ends, returning the heap's free pages to the
// OS whenever the daemon goes quiet after a burst. Two GCs: the buffers a
// burst left in sync.Pools (the compressors of a pull's layers, several
// MiB) survive the first in the pools' victim caches and are freed by the
// second, which debug.FreeOSMemory runs before it releases every free
// span.
func releaseIdle(ctx context.Context) {
	r := idleRelease{quiet: releaseQuiet, burst: releaseBurst, free: releaseFree}
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/memory/classes/heap/released:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	t := time.NewTicker(releaseEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if r.due(sample[0].Value.Uint64(), sample[2].Value.Uint64()) {
			before := sample[1].Value.Uint64()
			runtime.GC()
			debug.FreeOSMemory()
			metrics.Read(sample)
			log.G(ctx).Debug("returned free heap to the OS", "bytes", int64(sample[1].Value.Uint64())-int64(before))
		}
	}
}
