package replica

import (
	"context"

	"github.com/appnode/appnode/wire"
)

// Handle serves one message from peer `from`. Every message naming a player
// is validated first: a peer's bytes are as untrusted as a person's typing.
func (s *Store) Handle(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
	aboutPlayer := needsPlayer(m)
	if aboutPlayer {
		if err := ValidatePlayer(playerOf(m)); err != nil {
			return nil, err
		}
	}
	// One look under the lock: this is on every Replicate's path.
	s.mu.Lock()
	fenced, member, self, epoch := s.view.Fenced(from), s.view.IsMember(from), s.view.Self(), s.view.Roster().Epoch
	admitted := s.view.IsMember(self)
	s.mu.Unlock()
	if fenced {
		return nil, wire.Errorf(wire.CodeDeclaredDead, "%s (boot %x) was declared failed by the cluster; it must rejoin as a new incarnation", from.Name, from.Boot)
	}
	if aboutPlayer && !member {
		// Only members hold players: a node not (yet) admitted, or one
		// this node has not yet heard was admitted, waits for the roster.
		// In case this node is the one behind (it missed the news of an
		// admission), it asks the sender for its roster.
		s.catchUpFrom(from)
		return nil, wire.Errorf(wire.CodeBusy, "%s is not a member of the cluster as %s knows it (roster %d); retry once the roster has it", from.Name, self.Name, epoch)
	}
	if aboutPlayer && !admitted {
		// A member asks this node about a player, so its roster has this
		// node in it: the roster that admitted this node has not reached
		// it yet. It asks the sender for it, and the sender retries,
		// rather than hearing the refusal a client would ("not a member
		// yet"), which is final.
		s.catchUpFrom(from)
		return nil, wire.Errorf(wire.CodeBusy, "%s has not yet learned that the cluster admitted it (it knows roster %d); retry in a moment", self.Name, epoch)
	}
	// No deadline is added here: every call a handler makes to a peer is
	// bounded by CallTimeout (Store.call), and the reward path waits only
	// on its primary, which is bounded the same way.
	switch m := m.(type) {
	case *wire.Ping:
		return &wire.Ack{}, nil
	case *wire.DeclaredDead:
		if m.Target == s.Self() {
			s.fencedByCluster(m.Target)
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
	case *wire.Prepare:
		return s.votePrepare(m), nil
	case *wire.Accept:
		return s.voteAccept(m), nil
	case *wire.Decided:
		return s.handleDecided(m)
	case *wire.Reach:
		return s.handleReach(ctx, m)
	case *wire.JoinAsk:
		return s.handleJoinAsk(from, m)
	case *wire.Register:
		return s.handleRegister(from, m)
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

// needsPlayer says whether m is about a player (and must name a valid one).
func needsPlayer(m wire.Msg) bool {
	switch m.(type) {
	case *wire.Reward, *wire.Where, *wire.Create, *wire.Claim, *wire.Replicate, *wire.Adopt, *wire.Handoff, *wire.KeeperGone:
		return true
	}
	return false
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
	total, err := p.ask(ctx, m)
	if err != nil {
		return nil, err
	}
	return &wire.RewardReply{Total: total, Owner: s.Self(), Keeper: p.snapshot().keeper}, nil
}

func (s *Store) handleWhere(m *wire.Where) (wire.Msg, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flights[m.Player] != nil {
		return nil, wire.Errorf(wire.CodeBusy, "%s is being activated on %s", m.Player, s.view.Self().Name)
	}
	if p := s.primaries.get(m.Player); p != nil {
		st := p.snapshot()
		return &wire.WhereReply{Role: wire.RolePrimary, Owner: s.view.Self(), Keeper: st.keeper, Epoch: st.epoch, Seq: st.seq, Placement: st.placement, OwnerAlive: true}, nil
	}
	if c := s.copies.get(m.Player); c != nil {
		return &wire.WhereReply{Role: wire.RoleKeeper, Owner: c.owner, Keeper: s.view.Self(), Epoch: c.epoch, Seq: c.seq, Placement: c.placement, Current: c.current, OwnerAlive: s.isMemberLocked(c.owner)}, nil
	}
	hint, _ := s.keeperHintLocked(m.Player)
	return &wire.WhereReply{Role: wire.RoleNone, Absent: s.vouchAbsentLocked(m.Player), Hint: hint}, nil
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
