package replica

import (
	"context"
	"sync"

	"github.com/appnode/appnode/quorum"
	"github.com/appnode/appnode/wire"
)

// SetMembers tells the Store which incarnations the failure detector
// reports reachable (self included or not). Called by the node on every
// membership change. It decides nothing about who is dead: members it
// does not report become suspects, which the roster loop turns into
// proposals; a node it reports that is not a member asks to be admitted
// itself (JoinAsk).
func (s *Store) SetMembers(reachable []wire.NodeID) {
	s.mu.Lock()
	suspects, _, zombies := s.view.Observe(reachable)
	for _, id := range suspects {
		s.suspects[id] = true
	}
	s.viewChangedLocked(nil)
	s.mu.Unlock()
	s.noticeZombies(zombies)
	s.kickRepair()
	s.kickRoster()
}

// viewChangedLocked acts on a change of the view: routes to owners no
// longer members are forgotten, and replications waiting on a keeper the
// roster just removed give up now rather than wait out their timeout.
func (s *Store) viewChangedLocked(removed []wire.NodeID) {
	for p, owner := range s.routes {
		if !s.view.IsMember(owner) {
			delete(s.routes, p)
		}
	}
	if len(removed) == 0 {
		return
	}
	// The replications are looked for a table shard at a time by a
	// goroutine, not here under the lock held over every primary (60 ms
	// at a third of a million): one that starts meanwhile finds the
	// keeper fenced itself (see replicate).
	s.spawn(func() {
		for _, id := range removed {
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
		if owner == s.view.Self() || !s.isMemberLocked(owner) {
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

// confirm decides quorum after a member was lost (or while the node is in
// a minority): it pings every reachable member, and the view counts those
// that answer. A majority answers the round; it does not wait for a slow
// peer past that. It runs on the repair loop.
func (s *Store) confirm() {
	s.mu.Lock()
	peers, wanted := s.view.ConfirmRound()
	need := quorum.Majority(s.view.Roster()) - 1 // this node counts itself
	s.mu.Unlock()
	if !wanted {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
	defer cancel()
	answers := make(chan wire.NodeID, len(peers))
	var wg sync.WaitGroup
	for _, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.callPeer(ctx, peer, &wire.Ping{}); err == nil {
				answers <- peer
			}
		}()
	}
	go func() { wg.Wait(); close(answers) }()
	var reached []wire.NodeID
	for peer := range answers {
		reached = append(reached, peer)
		if len(reached) >= need {
			cancel() // enough: the others need not be waited for
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	change := s.view.Confirmed(reached)
	reachable, members := s.view.Size()
	switch change {
	case QuorumLost:
		s.emit(Warning, "lost the majority: this node reaches %d of the %d members of the cluster; rewards are refused until the cluster heals", 1+len(reached), members)
	case QuorumRegained:
		s.emit(Info, "majority regained: serving again with %d of %d members reachable", reachable, members)
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

// isMemberLocked says whether id is a member of the roster at this
// incarnation; a player whose owner or keeper is not may be taken over.
func (s *Store) isMemberLocked(id wire.NodeID) bool { return s.view.IsMember(id) }

// membersLocked returns the roster's members, sorted by name.
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
