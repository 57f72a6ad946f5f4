package replica

import (
	"context"
	"fmt"

	"github.com/appnode/appnode/wire"
)

// keeperCopy is the backup of a player owned by another node.
type keeperCopy struct {
	owner     wire.NodeID
	epoch     uint64
	seq       uint64
	placement uint64 // wire.Adopt.Placement
	total     int64
	recent    dedup
	// current says the owner showed this is its keeper copy: it sent a
	// Replicate at this epoch and placement, or answered repair's question
	// naming them. Every change of owner then goes through this copy, so
	// if the owner fails, no other copy can be fresher and this node takes
	// the player over without asking every member (takeOverOrphan).
	current bool
}

// putCopyLocked stores c as the copy of player. Its owner is unconfirmed
// (see Store.unconfirmed) until the owner shows it runs the primary.
func (s *Store) putCopyLocked(player string, c *keeperCopy) {
	if old := s.copies.get(player); old != nil {
		s.uncountCopyLocked(old.owner)
	}
	s.copies.put(player, c)
	s.copyOwners[c.owner]++
	s.unconfirmOwnerLocked(player, c.owner)
}

func (s *Store) dropCopyLocked(player string) {
	if c := s.copies.get(player); c != nil {
		s.uncountCopyLocked(c.owner)
		s.copies.del(player)
		s.confirmOwnerLocked(player)
	}
}

// setCopyOwnerLocked changes the owner of c, the copy of player held in
// s.copies.
func (s *Store) setCopyOwnerLocked(player string, c *keeperCopy, owner wire.NodeID) {
	s.uncountCopyLocked(c.owner)
	c.owner = owner
	c.current = false
	s.copyOwners[owner]++
	s.unconfirmOwnerLocked(player, owner)
}

// unconfirmOwnerLocked records that the copy of player names owner on the
// word of a message whose reply may have been lost (a claim's grant, an
// Adopt), so that repair checks that the owner runs the primary. A copy
// this node owns itself is repair's already (a promotion half done).
func (s *Store) unconfirmOwnerLocked(player string, owner wire.NodeID) {
	if owner == s.view.Self() {
		s.confirmOwnerLocked(player)
		return
	}
	s.unconfirmed[player] = struct{}{}
}

func (s *Store) confirmOwnerLocked(player string) {
	if len(s.unconfirmed) > 0 {
		delete(s.unconfirmed, player)
	}
}

func (s *Store) uncountCopyLocked(owner wire.NodeID) {
	if s.copyOwners[owner]--; s.copyOwners[owner] <= 0 {
		delete(s.copyOwners, owner)
	}
}

// mayChangeLocked says why this node may not change what it holds for
// player now, at a peer's request (a creation, a claim, an adoption): it
// does not serve, or it is activating the player itself (a moment's
// overlap: the peer retries).
func (s *Store) mayChangeLocked(player string) error {
	if err := s.checkServingLocked(); err != nil {
		return err
	}
	if s.flights[player] != nil {
		return wire.Errorf(wire.CodeBusy, "%s is being activated on %s", player, s.view.Self().Name)
	}
	return nil
}

// handleCreate serves the arbiter's side of creating a new player.
func (s *Store) handleCreate(from wire.NodeID, m *wire.Create) (wire.Msg, error) {
	if m.Claimant != from {
		return nil, wire.Errorf(wire.CodeBadRequest, "create for %s names claimant %s but comes from %s", m.Player, m.Claimant.Name, from.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mayChangeLocked(m.Player); err != nil {
		return nil, err
	}
	if s.primaries.get(m.Player) != nil {
		return &wire.ClaimReply{Owner: s.view.Self()}, nil
	}
	if c := s.copies.get(m.Player); c != nil {
		if s.isMemberLocked(c.owner) {
			return &wire.ClaimReply{Owner: c.owner}, nil
		}
		// It exists, orphaned: the creator must claim it, not create it.
		return nil, wire.Errorf(wire.CodeBusy, "%s already exists on %s with no live owner; claim it", m.Player, s.view.Self().Name)
	}
	if !s.isMemberLocked(from) {
		return nil, wire.Errorf(wire.CodeBusy, "%s is not a live member in %s's view yet", from.Name, s.view.Self().Name)
	}
	// Only the arbiter in this node's own view may decide; a disagreement
	// about membership settles within a gossip round.
	if first := arbiterOf(m.Player, s.membersLocked()); first.Name != s.view.Self().Name {
		return nil, wire.Errorf(wire.CodeBusy, "%s is not %s's arbiter in its view (that is %s); membership is still settling", s.view.Self().Name, m.Player, first.Name)
	}
	if m.Fast && (m.Epoch != s.view.Roster().Epoch || !s.vouchAbsentLocked(m.Player)) {
		return &wire.ClaimReply{AskAll: true}, nil
	}
	s.recordPlayerLocked(m.Player)
	s.putCopyLocked(m.Player, &keeperCopy{owner: from, epoch: 1})
	return &wire.ClaimReply{Granted: true, Epoch: 1}, nil
}

// handleClaim serves a keeper's side of a claim. It grants ownership only
// when the recorded owner is dead, or is the claimant itself restarting a
// crashed primary. A recorded owner that looks alive is asked directly,
// since the failure detector may not have caught up with a crash yet.
func (s *Store) handleClaim(ctx context.Context, from wire.NodeID, m *wire.Claim) (wire.Msg, error) {
	if m.Claimant != from {
		return nil, wire.Errorf(wire.CodeBadRequest, "claim for %s names claimant %s but comes from %s", m.Player, m.Claimant.Name, from.Name)
	}
	s.mu.Lock()
	c, err := s.claimableLocked(m.Player)
	if err != nil || c == nil {
		self := s.view.Self()
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return &wire.ClaimReply{Owner: self}, nil
	}
	owner, epoch := c.owner, c.epoch
	needCheck := owner != from && owner != s.view.Self() && s.isMemberLocked(owner)
	s.mu.Unlock()

	if needCheck {
		wr, err := s.askWhere(ctx, owner, m.Player)
		switch {
		case unreachable(err):
			s.suspectPeer(owner, "it refused the connection")
			return nil, wire.Errorf(wire.CodeBusy, "%s: its owner %s does not answer; the claim waits until the cluster agrees whether it is down", m.Player, owner.Name)
		case err != nil:
			return nil, wire.Errorf(wire.CodeUnavailable, "%s: its owner %s did not answer (%v); it is not declared down, so the claim waits", m.Player, owner.Name, err)
		case wr.Role == wire.RolePrimary:
			return &wire.ClaimReply{Owner: owner}, nil
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	c, err = s.claimableLocked(m.Player)
	if err != nil {
		return nil, err
	}
	if c == nil || c.owner != owner || c.epoch != epoch {
		return nil, wire.Errorf(wire.CodeBusy, "%s changed hands during the claim; retry", m.Player)
	}
	s.setCopyOwnerLocked(m.Player, c, from)
	c.epoch++
	c.placement = 0
	return &wire.ClaimReply{Granted: true, Owner: from, Epoch: c.epoch, Seq: c.seq, Total: c.total, Recent: c.recent.list(), Since: c.recent.record(s.now()).age}, nil
}

// claimableLocked returns the copy to claim, nil with no error when this
// node is itself the player's primary, or an error.
func (s *Store) claimableLocked(player string) (*keeperCopy, error) {
	if err := s.mayChangeLocked(player); err != nil {
		return nil, err
	}
	if s.primaries.get(player) != nil {
		return nil, nil
	}
	c := s.copies.get(player)
	if c == nil {
		return nil, wire.Errorf(wire.CodeNoCopy, "%s holds no copy of %s", s.view.Self().Name, player)
	}
	return c, nil
}

// handleReplicate applies an owner's update to the keeper copy. The checks
// are the fence: only the recorded owner, at the recorded epoch, forward.
func (s *Store) handleReplicate(from wire.NodeID, m *wire.Replicate) (wire.Msg, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.copies.get(m.Player)
	if c == nil {
		return nil, wire.Errorf(wire.CodeNoCopy, "%s holds no copy of %s", s.view.Self().Name, m.Player)
	}
	if c.owner != from || c.epoch != m.Epoch {
		return nil, wire.Errorf(wire.CodeFenced, "%s: %s (epoch %d) was superseded by %s (epoch %d)", m.Player, from.Name, m.Epoch, c.owner.Name, c.epoch)
	}
	if !s.view.Quorate() {
		return nil, s.checkServingLocked()
	}
	if m.Placement >= c.placement {
		// The owner replicates to its keeper only. A later placement
		// number is an attempt to move the keeper that failed (this
		// node is leaving): the owner stayed here, and the copy goes on
		// under that number, ahead of what the attempt left elsewhere.
		c.placement = m.Placement
		c.current = true
	}
	if m.Prev != c.seq {
		// The update was computed from another state than the copy's:
		// most often an earlier update reached this copy but its ack was
		// lost. Applying this one would overwrite that update while the
		// copy still remembers its request as applied.
		return &wire.KeeperState{Seq: c.seq, Total: c.total, Last: c.recent.last}, nil
	}
	if m.Seq <= c.seq {
		return nil, wire.Errorf(wire.CodeBadRequest, "%s: stale update %d, copy is at %d", m.Player, m.Seq, c.seq)
	}
	c.seq, c.total = m.Seq, m.Total
	c.recent.add(wire.Applied{ID: m.ID, Total: m.Total}, s.now())
	s.confirmOwnerLocked(m.Player) // only a primary replicates
	return &wire.Ack{}, nil
}

// handleAdopt makes this node a keeper. A copy already here is replaced
// only by its own owner or by a newer epoch (which only a keeper's grant
// can have produced).
func (s *Store) handleAdopt(from wire.NodeID, m *wire.Adopt) (wire.Msg, error) {
	if m.Owner != from {
		return nil, wire.Errorf(wire.CodeBadRequest, "adopt for %s names owner %s but comes from %s", m.Player, m.Owner.Name, from.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mayChangeLocked(m.Player); err != nil {
		return nil, err
	}
	if p := s.primaries.get(m.Player); p != nil {
		st := p.snapshot()
		if m.Epoch <= st.epoch {
			return nil, wire.Errorf(wire.CodeFenced, "%s: %s is its owner at epoch %d", m.Player, s.view.Self().Name, st.epoch)
		}
		return nil, wire.Errorf(wire.CodeBusy, "%s: %s still runs a primary for it", m.Player, s.view.Self().Name)
	}
	if c := s.copies.get(m.Player); c != nil {
		sameOwner := c.owner == from && m.Epoch == c.epoch
		if !sameOwner && m.Epoch <= c.epoch {
			return nil, wire.Errorf(wire.CodeFenced, "%s: %s holds a copy for %s at epoch %d", m.Player, s.view.Self().Name, c.owner.Name, c.epoch)
		}
		// The same owner's later placement replaces the copy whatever
		// its Seq: what an earlier attempt left here may hold an update
		// the owner never applied (wire.Adopt.Placement). An earlier
		// placement arriving late is refused.
		if sameOwner && (m.Placement < c.placement || (m.Placement == c.placement && m.Seq < c.seq)) {
			return nil, wire.Errorf(wire.CodeBadRequest, "%s: adopt at %d (placement %d) is older than the copy at %d (placement %d)", m.Player, m.Seq, m.Placement, c.seq, c.placement)
		}
	}
	s.putCopyLocked(m.Player, &keeperCopy{owner: from, epoch: m.Epoch, seq: m.Seq, placement: m.Placement, total: m.Total, recent: newDedup(record{m.Recent, m.Since}, s.now())})
	s.hintArbiterLocked(m.Player)
	return &wire.Ack{}, nil
}

// handleHandoff serves a leaving owner: this keeper becomes the owner.
func (s *Store) handleHandoff(ctx context.Context, from wire.NodeID, m *wire.Handoff) (wire.Msg, error) {
	s.mu.Lock()
	c := s.copies.get(m.Player)
	ok := c != nil && c.owner == from && c.epoch == m.Epoch
	// While the leaving owner stopped its primaries, a reward may have
	// moved the player on under a later epoch: promoted here, from this
	// copy, or claimed through this keeper by another node, which this
	// copy now backs. Either way two copies hold it, and the handoff is
	// done.
	p := s.primaries.get(m.Player)
	movedOn := (c == nil && p != nil && p.snapshot().epoch > m.Epoch) || (c != nil && c.epoch > m.Epoch)
	self := s.view.Self()
	s.mu.Unlock()
	if movedOn {
		return &wire.Ack{}, nil
	}
	if !ok {
		return nil, wire.Errorf(wire.CodeFenced, "%s: %s is not its keeper for %s at epoch %d", m.Player, self.Name, from.Name, m.Epoch)
	}
	_, err := s.activate(ctx, m.Player, func(ctx context.Context) (wire.NodeID, error) {
		return s.promoteCopy(ctx, m.Player, from.Name, false)
	})
	if err != nil {
		return nil, fmt.Errorf("take over %s from %s: %w", m.Player, from.Name, err)
	}
	return &wire.Ack{}, nil
}
