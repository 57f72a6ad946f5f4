package replica

import (
	"sync/atomic"
	"time"
)

// Observer receives timings from the reward path, for metrics. Its methods
// are called on the path itself, so they must be quick and must not block.
type Observer interface {
	// Replicated reports one Replicate round trip to a keeper; err is its
	// error, if any.
	Replicated(d time.Duration, err error)
	// Forwarded reports one reward forwarded to its owner on another node.
	Forwarded(d time.Duration, err error)
}

// Stats counts what a Store did since it started, and what it holds now.
type Stats struct {
	Forwards  uint64 // rewards sent on to an owner elsewhere
	Creates   uint64 // players created with this node as owner
	Failovers uint64 // players this node took over from another owner (claimed or promoted)
	Restarts  uint64 // primaries restarted by the supervisor after a crash
	StepDowns uint64 // primaries that stepped down, superseded by a newer owner
	Dismissed uint64 // suspicions most of the roster dismissed: it still reached the suspect
	Repairs   uint64 // repair passes run (each walks the players, or stops at once in a minority)
	Primaries int    // primaries running here
	Copies    int    // keeper copies held here
	// Directory is how many players this node lists as their arbiter;
	// DirectoryComplete, whether every member's list is in (it may then
	// vouch that a player is new: directory.go).
	Directory         int
	DirectoryComplete bool
	Members           int  // live members in this node's view, itself included
	Cluster           int  // the membership quorum is counted against
	Quorate           bool // this node may serve
}

// counters are the Store's running totals for Stats.
type counters struct {
	forwards, creates, failovers, restarts, stepDowns, repairs, dismissed atomic.Uint64
}

// Stats returns the counters so far and what the Store holds now.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{
		Primaries: s.primaries.len(),
		Copies:    s.copies.len(),
		Quorate:   s.view.Serving() == nil,

		Directory:         len(s.dir.listed),
		DirectoryComplete: s.directoryCompleteLocked(),
	}
	st.Members, st.Cluster = s.view.Size()
	s.mu.Unlock()
	st.Forwards = s.count.forwards.Load()
	st.Creates = s.count.creates.Load()
	st.Failovers = s.count.failovers.Load()
	st.Restarts = s.count.restarts.Load()
	st.StepDowns = s.count.stepDowns.Load()
	st.Repairs = s.count.repairs.Load()
	st.Dismissed = s.count.dismissed.Load()
	return st
}

// Unprotected counts the players held here that have no second copy on a
// live node: primaries whose keeper is not alive, and keeper copies whose
// owner is not alive. It walks every player a table shard at a time, so it
// is for a metrics scrape, not for the reward path.
func (s *Store) Unprotected() int {
	n := 0
	for i := range tableShards {
		s.mu.Lock()
		for _, p := range s.primaries.shard(i) {
			if !s.isMemberLocked(p.snapshot().keeper) {
				n++
			}
		}
		for player, c := range s.copies.shard(i) {
			if !s.isMemberLocked(c.owner) || (c.owner == s.view.Self() && s.primaries.get(player) == nil) {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Serving returns nil if this node may serve rewards now, else why not (no
// majority, confirming one, leaving), as an error with a code a client can
// act on. It is what a load balancer's readiness check asks.
func (s *Store) Serving() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkServingLocked()
}
