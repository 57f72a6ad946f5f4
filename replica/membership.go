package replica

import (
	"sync"

	"github.com/appnode/appnode/wire"
)

// SetMembers tells the Store which incarnations are alive (self included or
// not). Called by the node on every membership change.
func (s *Store) SetMembers(members []wire.NodeID) {
	s.mu.Lock()
	tombstoned, zombies := s.view.Observe(members)
	s.viewChangedLocked(tombstoned)
	s.mu.Unlock()
	s.noticeZombies(zombies)
	s.kickRepair()
}

// viewChangedLocked acts on a change of the view: routes to owners no
// longer alive are forgotten, and replications waiting on a keeper that
// was just tombstoned give up now rather than wait out their timeout.
func (s *Store) viewChangedLocked(tombstoned []wire.NodeID) {
	for p, owner := range s.routes {
		if !s.view.IsAlive(owner) {
			delete(s.routes, p)
		}
	}
	if len(tombstoned) == 0 {
		return
	}
	// The replications are looked for a table shard at a time by a
	// goroutine, not here under the lock held over every primary (60 ms
	// at a third of a million): one that starts meanwhile finds the
	// tombstone itself (see replicate).
	s.spawn(func() {
		for _, id := range tombstoned {
			s.abandonReplications(id)
		}
	})
}

// orphansLikely is orphansLikelyLocked for the repair loop.
func (s *Store) orphansLikely() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.orphansLikelyLocked()
}

// orphansLikelyLocked says whether some copy here may be orphaned: its
// owner is not alive, or is this node (a promotion not finished).
func (s *Store) orphansLikelyLocked() bool {
	for owner := range s.copyOwners {
		if owner == s.view.Self() || !s.isAliveLocked(owner) {
			return true
		}
	}
	return false
}

// confirmPending says whether a loss of members awaits confirm.
func (s *Store) confirmPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view.ConfirmWanted()
}

// confirm decides quorum after a change that lost members (or while the
// node is in a minority): it pings every live peer, and the view counts
// the members of the cluster that answered. It runs on the repair loop.
func (s *Store) confirm() {
	s.mu.Lock()
	gen, peers, wanted := s.view.ConfirmRound()
	s.mu.Unlock()
	if !wanted {
		return
	}
	answered := make([]bool, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.callPeer(s.ctx, peer, &wire.Ping{})
			answered[i] = err == nil
		}()
	}
	wg.Wait()
	var reached []wire.NodeID
	for i, peer := range peers {
		if answered[i] {
			reached = append(reached, peer)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	change, tombstoned := s.view.Confirmed(gen, reached)
	s.viewChangedLocked(tombstoned)
	alive, cluster := s.view.Size()
	switch change {
	case QuorumLost:
		s.emit(Warning, "lost the majority: this node reaches %d of the %d members it last agreed on; rewards are refused until the cluster heals", 1+len(reached), cluster)
	case QuorumRegained:
		s.emit(Info, "majority regained: serving again with %d live members", alive)
	}
}

// abandonReplications cuts short the replications in flight to keeper.
func (s *Store) abandonReplications(keeper wire.NodeID) {
	for i := range tableShards {
		s.mu.Lock()
		for _, p := range s.primaries.shard(i) {
			p.mu.Lock()
			if p.act != nil && p.st.keeper == keeper {
				p.act.keeperFailed()
			}
			p.mu.Unlock()
		}
		s.mu.Unlock()
	}
}

// Fenced reports whether id was declared failed: its messages are refused
// and it must come back as a new incarnation.
func (s *Store) Fenced(id wire.NodeID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view.Fenced(id)
}

func (s *Store) isAliveLocked(id wire.NodeID) bool { return s.view.IsAlive(id) }

// membersLocked returns the live members, self included, sorted by name.
func (s *Store) membersLocked() []wire.NodeID { return s.view.Members() }

func (s *Store) checkServingLocked() error {
	if err := s.view.Serving(); err != nil {
		return err
	}
	if s.leaving {
		return wire.Errorf(wire.CodeBusy, "this node is leaving the cluster")
	}
	return nil
}
