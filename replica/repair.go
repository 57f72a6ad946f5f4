package replica

import (
	"context"
	"sync"
	"time"

	"github.com/appnode/appnode/wire"
)

// repairConcurrency bounds the activations one repair pass runs at once, so
// that a node taking over thousands of players does not open thousands of
// calls together.
const repairConcurrency = 16

// repairInterval is how often repair looks for work: it re-runs to finish
// what failed the first time (a peer that was briefly busy), and checks
// the copies' owners by their counts (cheap). A full pass walks every
// player, about 100 ms of work for a node holding a third of a million
// (BenchmarkRepairPass), so without a reason it runs only every
// fullScanEvery intervals, as a backstop. It never holds the Store's lock
// for more than one table shard's worth of that.
//
// While passes keep finding work they cannot finish (a cluster too small
// to place keepers, say), each waits twice as long as the last, up to
// maxRepairWait intervals: a membership change, which is what usually
// unblocks them, runs a pass at once anyway.
const (
	repairInterval = time.Second
	fullScanEvery  = 300
	maxRepairWait  = 16
)

// repairLoop restores redundancy after membership changes: primaries whose
// keeper died get a new one, and keeper copies whose owner died are promoted
// here, so no player stays with a single copy until someone asks for it.
func (s *Store) repairLoop() {
	t := s.cfg.Clock.NewTicker(repairInterval)
	defer t.Stop()
	pending := true // the last pass found work, or none ran yet
	wait := 1       // intervals between passes while work is pending
	idle := 0       // intervals since the last pass
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
			wait = 1
		case <-t.C():
			idle++
			due := idle >= fullScanEvery || s.confirmPending()
			if pending {
				due = due || idle >= wait
			} else {
				due = due || s.orphansLikely() || s.ownersUnconfirmed()
			}
			if !due {
				continue
			}
		}
		idle = 0
		s.confirm()
		was := pending
		pending = s.repair()
		if pending && was {
			wait = min(2*wait, maxRepairWait)
		} else {
			wait = 1
		}
	}
}

// takeOverIfOrphan takes over player, which the pass listed as an orphan,
// unless it was claimed since (a request for it reached another node
// first): then there is nothing to take over.
func (s *Store) takeOverIfOrphan(ctx context.Context, player string) error {
	_, err := s.activate(ctx, player, func(ctx context.Context) (wire.NodeID, error) {
		s.mu.Lock()
		orphan := s.orphanLocked(player, s.copies.get(player))
		s.mu.Unlock()
		if !orphan {
			return wire.NodeID{}, nil
		}
		return s.takeOverOrphan(ctx, player)
	})
	return err
}

// orphanLocked says whether c, this node's copy of player, is an orphan:
// its owner is no member, or it is this node, which runs no primary (a
// copy whose promotion failed half way, which repair finishes).
func (s *Store) orphanLocked(player string, c *keeperCopy) bool {
	return c != nil && (!s.isMemberLocked(c.owner) || (c.owner == s.view.Self() && s.primaries.get(player) == nil))
}

// repair runs one pass. It reports whether it found work (done or not):
// the next interval then runs another pass, to finish what failed.
//
// The pass walks the players a table shard at a time and releases the
// Store's lock in between, so a node holding many players keeps serving
// rewards while it runs. A player never changes shard (the shard is a
// hash of its name); one added or removed during the pass is seen by the
// next.
func (s *Store) repair() (found bool) {
	s.count.repairs.Add(1)
	var orphans []string
	var unconfirmed []string
	for i := range tableShards {
		s.mu.Lock()
		if !s.view.Quorate() || s.leaving {
			s.mu.Unlock()
			return true
		}
		if i == 0 {
			for player := range s.unconfirmed {
				if c := s.copies.get(player); c != nil && s.flights[player] == nil && s.isMemberLocked(c.owner) {
					unconfirmed = append(unconfirmed, player)
				}
			}
		}
		if s.orphansLikelyLocked() {
			for player, c := range s.copies.shard(i) {
				// A copy owned by this node itself is one whose promotion
				// failed half way (no keeper could be placed then): finish
				// it.
				if s.orphanLocked(player, c) && s.flights[player] == nil {
					orphans = append(orphans, player)
				}
			}
		}
		for _, p := range s.primaries.shard(i) {
			if !s.isMemberLocked(p.snapshot().keeper) {
				found = true
				_ = p.send(checkKeeper{}) // fails only if p is stopping
			}
		}
		s.mu.Unlock()
	}
	if len(orphans) == 0 && len(unconfirmed) == 0 {
		return found
	}
	sem := make(chan struct{}, repairConcurrency)
	var wg sync.WaitGroup
	run := func(player string, fn func(ctx context.Context) error) bool {
		select {
		case sem <- struct{}{}:
		case <-s.ctx.Done():
			return false
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(s.ctx, 2*s.cfg.CallTimeout)
			defer cancel()
			if err := fn(ctx); err != nil {
				s.logf("replica: could not repair %s yet: %v", player, err)
			}
		}()
		return true
	}
	for _, player := range orphans {
		if !run(player, func(ctx context.Context) error { return s.takeOverIfOrphan(ctx, player) }) {
			break
		}
	}
	for _, player := range unconfirmed {
		if !run(player, func(ctx context.Context) error { return s.checkOwnerRuns(ctx, player) }) {
			break
		}
	}
	wg.Wait()
	return true
}

// ownersUnconfirmed says whether some copy here names an owner not yet
// confirmed to run the primary (see Store.unconfirmed).
func (s *Store) ownersUnconfirmed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unconfirmed) > 0
}
