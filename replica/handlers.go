package replica

import (
	"context"
	"errors"
	"fmt"

	"github.com/appnode/appnode/wire"
)

// Handle serves one message from peer `from`. Every message naming a player
// is validated first: a peer's bytes are as untrusted as a person's typing.
func (s *Store) Handle(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
	if player := playerOf(m); player != "" || needsPlayer(m) {
		if err := ValidatePlayer(player); err != nil {
			return nil, err
		}
	}
	if s.Fenced(from) {
		return nil, wire.Errorf(wire.CodeDeclaredDead, "%s (boot %x) was declared failed by the cluster; it must rejoin as a new incarnation", from.Name, from.Boot)
	}
	// No deadline is added here: every call a handler makes to a peer is
	// bounded by CallTimeout (Store.call), and the reward path waits only
	// on its primary, which is bounded the same way.
	switch m := m.(type) {
	case *wire.Ping:
		return &wire.Ack{}, nil
	case *wire.DeclaredDead:
		if m.Target == s.Self() {
			s.declaredDead(m.Target)
		}
		return &wire.Ack{}, nil
	case *wire.Reward:
		return s.handleReward(ctx, m)
	case *wire.Where:
		return s.handleWhere(m)
	case *wire.Create:
		return s.handleCreate(from, m)
	case *wire.Claim:
		return s.handleClaim(ctx, from, m)
	case *wire.Replicate:
		return s.handleReplicate(from, m)
	case *wire.Adopt:
		return s.handleAdopt(from, m)
	case *wire.Handoff:
		return s.handleHandoff(ctx, from, m)
	case *wire.KeeperGone:
		return s.handleKeeperGone(from, m)
	}
	return nil, wire.Errorf(wire.CodeBadRequest, "unexpected %s message", m.Kind())
}

// NonBlocking reports whether Handle serves m without waiting on anyone
// (only this Store's lock), so that a transport may run it on its read
// loop instead of a goroutine of its own: on the reward path that is every
// keeper's Replicate.
func NonBlocking(m wire.Msg) bool {
	switch m.(type) {
	case *wire.Ping, *wire.Where, *wire.Create, *wire.Replicate, *wire.Adopt, *wire.DeclaredDead:
		return true
	}
	return false
}

func playerOf(m wire.Msg) string {
	switch m := m.(type) {
	case *wire.Reward:
		return m.Player
	case *wire.Where:
		return m.Player
	case *wire.Create:
		return m.Player
	case *wire.Claim:
		return m.Player
	case *wire.Replicate:
		return m.Player
	case *wire.Adopt:
		return m.Player
	case *wire.Handoff:
		return m.Player
	case *wire.KeeperGone:
		return m.Player
	}
	return ""
}

func needsPlayer(m wire.Msg) bool {
	switch m.(type) {
	case *wire.Ping, *wire.Ack, *wire.DeclaredDead:
		return false
	}
	return true
}

// handleReward serves a reward forwarded by another node. Only the owner
// applies it; anyone else says so and the sender re-routes.
func (s *Store) handleReward(ctx context.Context, m *wire.Reward) (wire.Msg, error) {
	s.mu.Lock()
	p := s.primaries.get(m.Player)
	err := s.checkServingLocked()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, notOwner(m.Player)
	}
	total, err := p.call(ctx, m)
	if err != nil {
		return nil, err
	}
	return &wire.RewardReply{Total: total, Owner: s.Self(), Keeper: p.snapshot().keeper}, nil
}

func (s *Store) handleWhere(m *wire.Where) (wire.Msg, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flights[m.Player] != nil {
		return nil, wire.Errorf(wire.CodeBusy, "%s is being activated on %s", m.Player, s.self.Name)
	}
	if p := s.primaries.get(m.Player); p != nil {
		st := p.snapshot()
		return &wire.WhereReply{Role: wire.RolePrimary, Owner: s.self, Keeper: st.keeper, Epoch: st.epoch, Seq: st.seq, OwnerAlive: true}, nil
	}
	if c := s.copies.get(m.Player); c != nil {
		return &wire.WhereReply{Role: wire.RoleKeeper, Owner: c.owner, Keeper: s.self, Epoch: c.epoch, Seq: c.seq, OwnerAlive: s.isAliveLocked(c.owner)}, nil
	}
	return &wire.WhereReply{Role: wire.RoleNone}, nil
}

// handleCreate serves the arbiter's side of creating a new player.
func (s *Store) handleCreate(from wire.NodeID, m *wire.Create) (wire.Msg, error) {
	if m.Claimant != from {
		return nil, wire.Errorf(wire.CodeBadRequest, "create for %s names claimant %s but comes from %s", m.Player, m.Claimant.Name, from.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkServingLocked(); err != nil {
		return nil, err
	}
	if s.flights[m.Player] != nil {
		return nil, wire.Errorf(wire.CodeBusy, "%s is being activated on %s", m.Player, s.self.Name)
	}
	if s.primaries.get(m.Player) != nil {
		return &wire.ClaimReply{Owner: s.self}, nil
	}
	if c := s.copies.get(m.Player); c != nil {
		if s.isAliveLocked(c.owner) {
			return &wire.ClaimReply{Owner: c.owner}, nil
		}
		// It exists, orphaned: the creator must claim it, not create it.
		return nil, wire.Errorf(wire.CodeBusy, "%s already exists on %s with no live owner; claim it", m.Player, s.self.Name)
	}
	if !s.isAliveLocked(from) {
		return nil, wire.Errorf(wire.CodeBusy, "%s is not a live member in %s's view yet", from.Name, s.self.Name)
	}
	// Only the arbiter in this node's own view may decide; a disagreement
	// about membership settles within a gossip round.
	if first := placementOrder(m.Player, s.membersLocked())[0]; first.Name != s.self.Name {
		return nil, wire.Errorf(wire.CodeBusy, "%s is not %s's arbiter in its view (that is %s); membership is still settling", s.self.Name, m.Player, first.Name)
	}
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
		self := s.self
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return &wire.ClaimReply{Owner: self}, nil
	}
	owner, epoch := c.owner, c.epoch
	needCheck := owner != from && owner != s.self && s.isAliveLocked(owner)
	s.mu.Unlock()

	if needCheck {
		rep, err := s.call(ctx, owner, &wire.Where{Player: m.Player})
		switch {
		case errors.Is(err, wire.ErrGone):
			s.declareDead(owner, "it refused the connection")
		case err != nil:
			return nil, wire.Errorf(wire.CodeUnavailable, "%s: its owner %s did not answer (%v); it is not declared down, so the claim waits", m.Player, owner.Name, err)
		default:
			if wr, ok := rep.(*wire.WhereReply); ok && wr.Role == wire.RolePrimary {
				return &wire.ClaimReply{Owner: owner}, nil
			}
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
	s.setCopyOwnerLocked(c, from)
	c.epoch++
	return &wire.ClaimReply{Granted: true, Owner: from, Epoch: c.epoch, Seq: c.seq, Total: c.total, Recent: c.recent.list()}, nil
}

// claimableLocked returns the copy to claim, nil with no error when this
// node is itself the player's primary, or an error.
func (s *Store) claimableLocked(player string) (*keeperCopy, error) {
	if err := s.checkServingLocked(); err != nil {
		return nil, err
	}
	if s.flights[player] != nil {
		return nil, wire.Errorf(wire.CodeBusy, "%s is being activated on %s", player, s.self.Name)
	}
	if s.primaries.get(player) != nil {
		return nil, nil
	}
	c := s.copies.get(player)
	if c == nil {
		return nil, wire.Errorf(wire.CodeNoCopy, "%s holds no copy of %s", s.self.Name, player)
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
		return nil, wire.Errorf(wire.CodeNoCopy, "%s holds no copy of %s", s.self.Name, m.Player)
	}
	if c.owner != from || c.epoch != m.Epoch {
		return nil, wire.Errorf(wire.CodeFenced, "%s: %s (epoch %d) was superseded by %s (epoch %d)", m.Player, from.Name, m.Epoch, c.owner.Name, c.epoch)
	}
	if !s.quorate {
		return nil, s.checkServingLocked()
	}
	if m.Seq <= c.seq {
		return nil, wire.Errorf(wire.CodeBadRequest, "%s: stale update %d, copy is at %d", m.Player, m.Seq, c.seq)
	}
	c.seq, c.total = m.Seq, m.Total
	c.recent.add(wire.Applied{ID: m.ID, Total: m.Total})
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
	if err := s.checkServingLocked(); err != nil {
		return nil, err
	}
	if s.flights[m.Player] != nil {
		return nil, wire.Errorf(wire.CodeBusy, "%s is being activated on %s", m.Player, s.self.Name)
	}
	if p := s.primaries.get(m.Player); p != nil {
		st := p.snapshot()
		if m.Epoch <= st.epoch {
			return nil, wire.Errorf(wire.CodeFenced, "%s: %s is its owner at epoch %d", m.Player, s.self.Name, st.epoch)
		}
		return nil, wire.Errorf(wire.CodeBusy, "%s: %s still runs a primary for it", m.Player, s.self.Name)
	}
	if c := s.copies.get(m.Player); c != nil {
		sameOwner := c.owner == from && m.Epoch == c.epoch
		if !sameOwner && m.Epoch <= c.epoch {
			return nil, wire.Errorf(wire.CodeFenced, "%s: %s holds a copy for %s at epoch %d", m.Player, s.self.Name, c.owner.Name, c.epoch)
		}
		if sameOwner && m.Seq < c.seq {
			return nil, wire.Errorf(wire.CodeBadRequest, "%s: adopt at %d is older than the copy at %d", m.Player, m.Seq, c.seq)
		}
	}
	s.putCopyLocked(m.Player, &keeperCopy{owner: from, epoch: m.Epoch, seq: m.Seq, total: m.Total, recent: newDedup(m.Recent)})
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
	self := s.self
	s.mu.Unlock()
	if movedOn {
		return &wire.Ack{}, nil
	}
	if !ok {
		return nil, wire.Errorf(wire.CodeFenced, "%s: %s is not its keeper for %s at epoch %d", m.Player, self.Name, from.Name, m.Epoch)
	}
	_, err := s.activate(ctx, m.Player, func(ctx context.Context) (wire.NodeID, error) {
		return s.promoteCopy(ctx, m.Player, from.Name)
	})
	if err != nil {
		return nil, fmt.Errorf("take over %s from %s: %w", m.Player, from.Name, err)
	}
	return &wire.Ack{}, nil
}

// handleKeeperGone serves a leaving keeper: place the copy elsewhere.
func (s *Store) handleKeeperGone(from wire.NodeID, m *wire.KeeperGone) (wire.Msg, error) {
	s.mu.Lock()
	p := s.primaries.get(m.Player)
	s.mu.Unlock()
	if p == nil {
		return nil, notOwner(m.Player)
	}
	mv := &moveKeeperCall{from: from, done: make(chan struct{})}
	if err := p.send(mv); err != nil {
		return nil, err
	}
	<-mv.done
	if mv.err != nil {
		return nil, mv.err
	}
	return &wire.Ack{}, nil
}
