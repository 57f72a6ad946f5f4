package node

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// compactTick is how often a node looks at its players and its
	// allocations; restTicks quiet ticks in a row (a second) make it at
	// rest, and one busy tick makes it busy again.
	compactTick = 100 * time.Millisecond
	restTicks   = 10
	// restAlloc is the most a node may allocate in a second and still
	// count as at rest: the gossip layer alone allocates about 1.5 MB/s
	// (a 64 KB buffer per UDP packet), a loaded node tens of MB/s.
	restAlloc = 8 << 20
	// restHeadroom is the least room a node at rest keeps above what it
	// uses, besides a sixteenth of it; and restSpacing is the least time
	// between two collections it makes room for at the allocation rate
	// just seen. A collection marks the whole live heap (tens of ms with
	// a million players), so one every ten seconds or so costs about 1%
	// of a core, and saves a hundred bytes per player.
	restHeadroom = 4 << 20
	restSpacing  = 10 * time.Second
)

// compactWhenIdle keeps a node at rest near the memory it needs. Go keeps
// up to GOGC (100%) of headroom above the live heap, and a node at rest
// still allocates (gossip), so without this a node holding a million
// players would sit at about twice the memory they take. When the number
// of players held has not changed for a second and little was
// allocated, the node is at rest: it hands its headroom back to the OS
// once (a forced collection, a few ms, never during a burst) and sets a
// soft memory limit a little above what it then uses, so that the gossip's
// garbage is collected before it grows the heap again. The limit is lifted
// as soon as the node is busy again, so load runs with Go's usual pacing.
// A limit set by the operator (GOMEMLIMIT) is left alone.
func (n *Node) compactWhenIdle() {
	defer n.wg.Done()
	t := time.NewTicker(compactTick)
	defer t.Stop()
	manageLimit := debug.SetMemoryLimit(-1) == math.MaxInt64
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocated := func() uint64 {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return sample[0].Value.Uint64()
	}
	var (
		base      uint64 // memory in use after the last compaction
		limited   bool   // the at-rest limit is set
		quiet     int    // ticks in a row with a steady count and little allocation
		quietSum  uint64 // bytes allocated during them
		lastCount = -1
		lastAlloc = allocated()
	)
	for {
		select {
		case <-n.ctx.Done():
			if limited {
				debug.SetMemoryLimit(math.MaxInt64)
			}
			return
		case <-t.C:
		}
		p, c := n.store.Counts()
		count := p + c
		alloc := allocated()
		delta := alloc - lastAlloc
		lastAlloc = alloc
		if count != lastCount || delta >= restAlloc/restTicks {
			// Busy: lift the limit at once (a failover promoting
			// thousands of copies must not run against it).
			lastCount, quiet, quietSum = count, 0, 0
			if limited {
				debug.SetMemoryLimit(math.MaxInt64)
				limited = false
			}
			continue
		}
		quiet++
		quietSum += delta
		if quiet < restTicks {
			continue
		}
		rate := quietSum // over one second
		quiet, quietSum = 0, 0
		if !limited {
			if used := inUse(); base == 0 || used > base+base/4 {
				debug.FreeOSMemory()
				base = inUse()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				n.logf("node: at rest, returned idle memory to the OS; live heap %d MiB for %d players held", ms.HeapAlloc>>20, count)
			}
		}
		if manageLimit {
			room := max(base/16+restHeadroom, rate*uint64(restSpacing/time.Second))
			debug.SetMemoryLimit(int64(base + room))
			limited = true
		}
	}
}

// inUse is the memory the Go runtime holds from the OS, as its soft
// memory limit counts it.
func inUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Sys - ms.HeapReleased
}
