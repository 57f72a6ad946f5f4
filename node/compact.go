package node

import (
	"runtime"
	"runtime/debug"
	"time"
)

// compactInterval is how often a node looks at its heap; compactGrowth is
// how much the live heap must have grown since the last compaction.
const (
	compactInterval = 5 * time.Second
	compactGrowth   = 32 << 20
)

// compactWhenIdle hands memory back to the OS once a burst of new players
// is over. Go keeps up to GOGC (100%) of headroom above the live heap, so a
// node that just took on a million players would sit at about twice the
// memory it needs. When the number of players held has not changed for a
// whole interval and the live heap grew by compactGrowth since the last
// time, one forced collection returns the headroom (a few ms of work,
// after the burst, never during it).
func (n *Node) compactWhenIdle() {
	defer n.wg.Done()
	t := time.NewTicker(compactInterval)
	defer t.Stop()
	var compactedAt uint64 // live heap after the last compaction
	lastCount := -1
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		p, c := n.store.Counts()
		count := p + c
		steady := count == lastCount
		lastCount = count
		if !steady {
			continue
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc < compactedAt+compactGrowth {
			continue
		}
		debug.FreeOSMemory()
		runtime.ReadMemStats(&ms)
		compactedAt = ms.HeapAlloc
		n.logf("node: returned idle memory to the OS after a burst; live heap %d MiB for %d players held", ms.HeapAlloc>>20, count)
	}
}
