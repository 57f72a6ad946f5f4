package replica

import (
	"context"
	"fmt"

	"github.com/appnode/appnode/quorum"
	"github.com/appnode/appnode/wire"
)

// LeaveReport says what a graceful exit handed off.
type LeaveReport struct {
	Primaries, PrimariesFailed int
	Copies, CopiesFailed       int
	RosterErr                  error // why this node could not take itself off the roster, if it could not
}

// Leave hands everything this node holds to others before it exits, so no
// player drops below two copies: each primary is taken over by its keeper
// (which places a new keeper elsewhere), and each keeper copy is re-placed
// by its owner. After Leave the Store refuses new work; Close it next.
func (s *Store) Leave(ctx context.Context) LeaveReport {
	s.mu.Lock()
	s.leaving = true
	prims := s.primaryList()
	type held struct {
		player string
		c      keeperCopy
	}
	var copies []held
	for player, c := range s.copies.all() {
		copies = append(copies, held{player, *c})
	}
	s.mu.Unlock()

	var r LeaveReport
	for _, p := range prims {
		// Stop first: rewards queued behind are answered "not owner" and
		// re-routed by their senders to the new owner.
		p.stopAndWait()
		s.removePrimary(p)
		st := p.snapshot()
		r.Primaries++
		if _, err := s.callPeer(ctx, st.keeper, &wire.Handoff{Player: p.player, Epoch: st.epoch}); err != nil {
			r.PrimariesFailed++
			s.emit(Warning, "could not hand %s to its keeper on %s: %v (the keeper takes it over when this node is gone)", p.player, st.keeper.Name, err)
		}
	}
	for _, h := range copies {
		r.Copies++
		if _, err := s.callPeer(ctx, h.c.owner, &wire.KeeperGone{Player: h.player, Epoch: h.c.epoch}); err != nil {
			r.CopiesFailed++
			s.emit(Warning, "could not move the keeper copy of %s away (owner %s): %v", h.player, h.c.owner.Name, err)
			continue
		}
		s.mu.Lock()
		if c := s.copies.get(h.player); c != nil && c.epoch == h.c.epoch && c.owner == h.c.owner {
			s.dropCopyLocked(h.player)
		}
		s.mu.Unlock()
	}
	// Last, leave the roster while this node can still vote: a cluster
	// of two left by one is then a cluster of one that can grow again.
	if err := s.propose(ctx, quorum.Change{Remove: []wire.NodeID{s.Self()}}); err != nil {
		r.RosterErr = err
		s.emit(Warning, "could not leave the cluster's roster: %v (the others remove this node once they agree it is down)", err)
	}
	return r
}

func (r LeaveReport) String() string {
	return fmt.Sprintf("handed off %d of %d primaries and %d of %d keeper copies",
		r.Primaries-r.PrimariesFailed, r.Primaries, r.Copies-r.CopiesFailed, r.Copies)
}
