package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/appnode/appnode/wire"
)

// flight is one activation of a player on this node; concurrent requests
// for the same player wait for it instead of racing it.
type flight struct {
	done  chan struct{}
	owner wire.NodeID
	err   error
}

// activate runs one activation of player at a time on this node; callers
// that arrive during it share its result.
func (s *Store) activate(ctx context.Context, player string, fn func(context.Context) (wire.NodeID, error)) (wire.NodeID, error) {
	s.mu.Lock()
	if f := s.flights[player]; f != nil {
		s.mu.Unlock()
		select {
		case <-f.done:
			return f.owner, f.err
		case <-ctx.Done():
			return wire.NodeID{}, fmt.Errorf("%s: waiting for its activation: %w", player, ctx.Err())
		}
	}
	f := &flight{done: make(chan struct{})}
	s.flights[player] = f
	s.mu.Unlock()

	f.owner, f.err = fn(ctx)

	s.mu.Lock()
	delete(s.flights, player)
	if f.err == nil && !f.owner.IsZero() && f.owner != s.view.Self() {
		s.learnRouteLocked(player, f.owner)
	}
	s.mu.Unlock()
	close(f.done)
	return f.owner, f.err
}

// find is what a node does for a player with no known live primary:
// forward to a live primary if there is one; else restore from the
// freshest keeper copy, wherever it is (this node's own included: the
// primary then stays here, where the load balancer sent the player); else,
// with create, create the player here, with a keeper on another node, and
// without (a read), answer CodeNotFound.
func (s *Store) find(ctx context.Context, player string, create bool) (wire.NodeID, error) {
	l, err := s.locate(ctx, player)
	if l.found || err != nil {
		return l.owner, err
	}
	if l.absent {
		if !create {
			return wire.NodeID{}, wire.Errorf(wire.CodeNotFound, "%s: no node holds this player (never rewarded)", player)
		}
		owner, err := s.create(ctx, player, true)
		if !errors.Is(err, errAskAll) {
			return owner, err
		}
	}
	f, err := s.survey(ctx, player, false, l.empty...)
	switch {
	case err != nil || f.primaryAt != nil:
		return f.owner(), err
	case f.best == nil && create:
		return s.create(ctx, player, false)
	case f.best == nil:
		return wire.NodeID{}, wire.Errorf(wire.CodeNotFound, "%s: no node holds this player (never rewarded)", player)
	case f.best == f.local:
		return s.promoteCopy(ctx, player, "", false)
	}
	return s.claim(ctx, player, f.best.from)
}

// takeOverOrphan is the repair loop's half of find: it acts only
// when this node holds the freshest copy of a player with no live primary,
// and then promotes it here. It never claims elsewhere and never creates.
func (s *Store) takeOverOrphan(ctx context.Context, player string) (wire.NodeID, error) {
	if s.holdsCurrentCopy(player) {
		return s.promoteCopy(ctx, player, "", true)
	}
	f, err := s.survey(ctx, player, true)
	switch {
	case err != nil || f.primaryAt != nil:
		return f.owner(), err
	case f.best != nil && f.best == f.local:
		return s.promoteCopy(ctx, player, "", false)
	}
	return wire.NodeID{}, nil
}

// holdsCurrentCopy says whether this node holds the current copy
// (keeperCopy.current) of a player whose owner the roster removed.
func (s *Store) holdsCurrentCopy(player string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.currentOrphanLocked(s.copies.get(player)) && s.primaries.get(player) == nil
}

// currentOrphanLocked says whether c is the current copy of an owner that
// the roster removed: the copy to take over without asking anyone. An owner
// that is a member may have claimed the player back through this copy since
// it was looked at (it is current again once the owner replicates), so
// its liveness is checked with the copy, under the same lock as the
// promotion that follows.
func (s *Store) currentOrphanLocked(c *keeperCopy) bool {
	return c != nil && c.current && !s.isMemberLocked(c.owner)
}

// locate is the short way to a player's primary, in a few messages
// however large the cluster. Its keeper knows the owner, and sits first or
// second in the player's placement order: placement puts it there, and
// removing a member only moves it up the order (a node that joined since
// may have pushed it down, and then locate finds nothing). So this node
// asks its own copy, or else those two nodes in turn, who the owner is,
// and then asks the owner. Only a primary that answers for itself is
// trusted, as survey trusts one.
//
// An owner that is gone leaves the player to its keeper's copy: if it is
// the owner's current copy (keeperCopy.current), no other can be fresher,
// and it is promoted here if this node holds it, else claimed from its
// keeper, without asking anyone else. Anything else (no copy on those
// nodes, an owner that runs no primary, a node that does not answer) is
// left to survey, which asks every member and alone may decide to claim
// any other copy or create the player: found is false and err nil.
func (s *Store) locate(ctx context.Context, player string) (located, error) {
	s.mu.Lock()
	self := s.view.Self()
	if s.primaries.get(player) != nil {
		s.mu.Unlock()
		return located{owner: self, found: true}, nil
	}
	var l located
	var owner wire.NodeID
	var epoch uint64
	c := s.copies.get(player)
	current := false
	if c != nil {
		owner, epoch, current = c.owner, c.epoch, c.current
	}
	members := s.membersLocked()
	s.mu.Unlock()
	keeper := self
	if c == nil {
		var wr *wire.WhereReply
		var at wire.NodeID
		var err error
		wr, at, l.empty, err = s.askSlots(ctx, player, members)
		switch {
		case err != nil:
			return l, err
		case wr == nil:
			return l, nil
		case wr.Absent:
			l.absent = true
			return l, nil
		case wr.Role == wire.RolePrimary:
			return located{owner: at, found: true}, nil
		}
		owner, epoch, keeper, current = wr.Owner, wr.Epoch, at, wr.Current
		if !wr.OwnerAlive {
			owner = wire.NodeID{}
		}
	}
	s.mu.Lock()
	gone := owner.IsZero() || owner == self || !s.isMemberLocked(owner)
	s.mu.Unlock()
	switch {
	case gone && !current:
		return l, nil
	case gone && keeper == self:
		o, err := s.promoteCopy(ctx, player, "", true)
		return located{owner: o, found: err == nil}, err
	case gone:
		o, err := s.claim(ctx, player, keeper)
		return located{owner: o, found: err == nil}, err
	}
	wr, err := s.askWhere(ctx, owner, player)
	if err != nil || wr.Role != wire.RolePrimary || wr.Epoch < epoch {
		return l, nil
	}
	return located{owner: owner, found: true}, nil
}

// located is what locate found: the owner, if found; else whether the
// arbiter vouched that no member holds a copy (absent), and the members
// that answered they hold nothing, which survey need not ask again.
type located struct {
	owner  wire.NodeID
	found  bool
	absent bool
	empty  []wire.NodeID
}

// askSlots asks the first two members in player's placement order, other
// than this node, in turn, and returns the first answer that names a
// primary or a keeper copy, or the arbiter's (the first) that vouches no
// member holds one (WhereReply.Absent), and who gave it; nil if neither
// holds the player or one does not answer. The arbiter may name where a
// copy is kept instead (WhereReply.Hint: the keeper of a player the
// cluster grew around), which is asked before the second. empty lists
// those that hold nothing. A node busy activating the player (a keeper
// taking it over, most often) is done in a moment: its busy answer is the
// error, to retry on, as survey would fail on it too.
func (s *Store) askSlots(ctx context.Context, player string, members []wire.NodeID) (wr *wire.WhereReply, at wire.NodeID, empty []wire.NodeID, err error) {
	self := s.Self()
	order := placementOrder(player, members)
	queue := slices.Clone(order[:min(2, len(order))])
	for len(queue) > 0 {
		cand := queue[0]
		queue = queue[1:]
		if cand == self {
			s.mu.Lock()
			wr = &wire.WhereReply{Absent: s.vouchAbsentLocked(player)}
			wr.Hint, _ = s.keeperHintLocked(player)
			s.mu.Unlock()
		} else {
			wr, err = s.askWhere(ctx, cand, player)
			if code, _ := wire.CodeOf(err); code == wire.CodeBusy {
				return nil, wire.NodeID{}, empty, err
			}
			if err != nil {
				return nil, wire.NodeID{}, empty, nil
			}
		}
		if wr.Role == wire.RolePrimary || wr.Role == wire.RoleKeeper || wr.Absent {
			return wr, cand, empty, nil
		}
		if cand != self {
			empty = append(empty, cand)
		}
		// A hint goes ahead of the second slot, once.
		h := wr.Hint
		if h.IsZero() || h == self || slices.Contains(empty, h) || slices.Contains(queue, h) {
			continue
		}
		s.mu.Lock()
		member := s.isMemberLocked(h)
		s.mu.Unlock()
		if member {
			queue = append([]wire.NodeID{h}, queue...)
		}
	}
	return nil, wire.NodeID{}, empty, nil
}

// findings is what survey learnt of a player from every live member.
type findings struct {
	primaryAt *whereResult // a live primary, if any: nothing else matters then
	local     *whereResult // this node's own copy, if any
	best      *whereResult // the freshest copy anywhere, local included
}

func (f findings) owner() wire.NodeID {
	if f.primaryAt != nil {
		return f.primaryAt.from
	}
	return wire.NodeID{}
}

// survey asks every live peer what it holds for player. A copy is trusted
// only after every live peer was asked: a node that was cut off may hold a
// copy that a newer one elsewhere has superseded, and promoting it would
// bring back an old total. A local copy that a fresher one supersedes is
// dropped. With onlyIfHeld, a node holding no copy asks no one. asked
// lists peers that answered they hold nothing since this activation
// began (locate asked them), which need not be asked again.
func (s *Store) survey(ctx context.Context, player string, onlyIfHeld bool, asked ...wire.NodeID) (findings, error) {
	var f findings
	s.mu.Lock()
	if s.primaries.get(player) != nil {
		f.primaryAt = &whereResult{from: s.view.Self()}
		s.mu.Unlock()
		return f, nil
	}
	if c := s.copies.get(player); c != nil {
		// Even with a live owner recorded, ask: the owner may have lost
		// its primary (a failed restart), and only the peers can say.
		f.local = &whereResult{from: s.view.Self(), reply: &wire.WhereReply{Role: wire.RoleKeeper, Owner: c.owner, Epoch: c.epoch, Seq: c.seq, Placement: c.placement}}
	}
	peers := s.peersLocked()
	s.mu.Unlock()
	if onlyIfHeld && f.local == nil {
		return f, nil
	}
	if len(asked) > 0 {
		peers = slices.DeleteFunc(slices.Clone(peers), func(p wire.NodeID) bool { return slices.Contains(asked, p) })
	}

	replies, err := s.whereAll(ctx, player, peers)
	if err != nil {
		return f, err
	}
	f.best = f.local
	for i := range replies {
		r := &replies[i]
		switch r.reply.Role {
		case wire.RolePrimary:
			f.primaryAt = r
			return f, nil
		case wire.RoleKeeper:
			if fresher(r, f.best) {
				f.best = r
			}
		}
	}
	if f.local != nil && f.best != f.local {
		// A fresher copy exists elsewhere: this one is obsolete.
		s.mu.Lock()
		if c := s.copies.get(player); c != nil && c.epoch == f.local.reply.Epoch && c.seq == f.local.reply.Seq {
			s.dropCopyLocked(player)
		}
		s.mu.Unlock()
	}
	return f, nil
}

// fresher orders keeper copies: a higher epoch is a later owner; within an
// epoch, a later placement is the owner's later keeper, and the other a
// copy an Adopt with a lost reply left behind, which may even hold an
// update more (one the owner never applied: wire.Adopt.Placement); within
// a placement, a higher sequence number is a later update. An owner moves
// its keeper only away from one that is gone, empty or leaving, and none
// of those takes a player over, so the owner's current copy
// (keeperCopy.current) is the freshest of those that can.
//
// Of two equal copies, the one held by the node it names as owner wins: that node was promoting
// its copy and gave the other away (an Adopt whose reply may have been
// lost), and it finishes the promotion; dropping its copy instead would
// leave one copy naming an owner that runs no primary. Other ties go to
// the lower node name, so that every node picks the same copy.
func fresher(a, b *whereResult) bool {
	if b == nil {
		return true
	}
	if a.reply.Epoch != b.reply.Epoch {
		return a.reply.Epoch > b.reply.Epoch
	}
	if a.reply.Placement != b.reply.Placement {
		return a.reply.Placement > b.reply.Placement
	}
	if a.reply.Seq != b.reply.Seq {
		return a.reply.Seq > b.reply.Seq
	}
	aOwns, bOwns := a.from == a.reply.Owner, b.from == b.reply.Owner
	if aOwns != bOwns {
		return aOwns
	}
	return a.from.Name < b.from.Name
}

// checkOwnerRuns is repair's check of a copy whose owner is unconfirmed
// (see Store.unconfirmed): it asks the owner. A primary there at the
// copy's epoch confirms it. An owner that runs none, is not activating
// the player (it would answer busy) and is not finishing a promotion of
// its own copy never will: the copy is an orphan with a live owner, and is
// taken over like one. It returns an error while the answer is not in.
func (s *Store) checkOwnerRuns(ctx context.Context, player string) error {
	s.mu.Lock()
	c := s.copies.get(player)
	_, unconfirmed := s.unconfirmed[player]
	if c == nil || !unconfirmed || c.owner == s.view.Self() {
		s.mu.Unlock()
		return nil
	}
	owner, epoch := c.owner, c.epoch
	s.mu.Unlock()
	wr, err := s.askWhere(ctx, owner, player)
	if err != nil {
		if unreachable(err) {
			s.suspectPeer(owner, "it refused the connection")
		}
		return err
	}
	switch {
	case wr.Role == wire.RolePrimary && wr.Epoch >= epoch:
		s.mu.Lock()
		if cur := s.copies.get(player); cur == c && c.owner == owner && c.epoch == epoch {
			switch {
			case wr.Epoch == epoch && wr.Placement >= c.placement && wr.Keeper == s.view.Self():
				c.placement = wr.Placement // as a Replicate would (handleReplicate)
				c.current = true
				s.confirmOwnerLocked(player)
			case wr.Epoch == epoch && wr.Placement > c.placement && wr.Keeper != s.view.Self():
				// The owner has placed its keeper elsewhere since: this
				// copy is what an Adopt with a lost reply left behind.
				s.dropCopyLocked(player)
			default:
				s.confirmOwnerLocked(player)
			}
		}
		s.mu.Unlock()
		return nil
	case wr.Role == wire.RolePrimary:
		return fmt.Errorf("%s: %s runs its primary at epoch %d, before this copy's %d (a restart under way)", player, owner.Name, wr.Epoch, epoch)
	case wr.Role == wire.RoleKeeper && wr.Owner == owner:
		return fmt.Errorf("%s: %s is finishing its promotion", player, owner.Name)
	}
	now, err := s.activate(ctx, player, func(ctx context.Context) (wire.NodeID, error) {
		return s.takeOverOrphan(ctx, player)
	})
	if err != nil || now.IsZero() || now == owner || now == s.Self() {
		return err
	}
	// A primary elsewhere: if it is from a later epoch, this copy is a
	// leftover (an Adopt whose reply was lost, before another node took
	// the player) that nothing needs, and repair stops asking about it.
	// One from an earlier epoch is a superseded primary that has not
	// heard yet: this copy stays in question.
	if wr, err := s.askWhere(ctx, now, player); err == nil && wr.Role == wire.RolePrimary && wr.Epoch > epoch {
		s.mu.Lock()
		if cur := s.copies.get(player); cur == c && c.owner == owner && c.epoch == epoch {
			s.confirmOwnerLocked(player)
		}
		s.mu.Unlock()
	}
	return nil
}

// claim asks keeper to make this node the owner.
func (s *Store) claim(ctx context.Context, player string, keeper wire.NodeID) (wire.NodeID, error) {
	self := s.Self()
	cr, owner, err := s.askToOwn(ctx, player, keeper, &wire.Claim{Player: player, Claimant: self}, "its keeper "+keeper.Name)
	if cr == nil {
		return owner, err
	}
	s.mu.Lock()
	s.startPrimaryLocked(player, state{epoch: cr.Epoch, seq: cr.Seq, total: cr.Total, keeper: keeper}, record{cr.Recent, cr.Since})
	s.mu.Unlock()
	s.count.failovers.Add(1)
	s.emit(Info, "%s restored from its keeper on %s (total %d); its primary now runs here", player, keeper.Name, cr.Total)
	return self, nil
}

// create makes a brand new player owned by this node. The arbiter (first in
// placement order) serialises racing creators; it becomes the keeper unless
// it is this node, which then places the keeper itself. With fast, no one
// was asked whether the player exists: the arbiter's directory must vouch
// that it does not, or create fails with errAskAll.
func (s *Store) create(ctx context.Context, player string, fast bool) (wire.NodeID, error) {
	s.mu.Lock()
	members := s.membersLocked()
	self := s.view.Self()
	epoch := s.view.Roster().Epoch
	arbiter := arbiterOf(player, members)
	if arbiter.Name == self.Name {
		if fast && !s.vouchAbsentLocked(player) {
			s.mu.Unlock()
			return wire.NodeID{}, errAskAll
		}
		// Listed before it exists: a creation that fails half way
		// leaves an entry, which costs a later creation a survey only.
		s.recordPlayerLocked(player)
	}
	s.mu.Unlock()
	if len(members) < 2 {
		return wire.NodeID{}, tooFewNodes(player)
	}
	if arbiter.Name == self.Name {
		st := state{epoch: 1, placement: 1}
		keeper, err := s.adoptSomewhere(ctx, player, st, record{})
		if err != nil {
			return wire.NodeID{}, err
		}
		st.keeper = keeper
		s.mu.Lock()
		s.startPrimaryLocked(player, st, record{})
		s.mu.Unlock()
		s.count.creates.Add(1)
		s.emit(Info, "%s is a new player: primary here, keeper on %s", player, keeper.Name)
		return self, nil
	}
	cr, owner, err := s.askToOwn(ctx, player, arbiter, &wire.Create{Player: player, Claimant: self, Fast: fast, Epoch: epoch}, arbiter.Name+", which arbitrates its creation,")
	if cr == nil {
		return owner, err
	}
	s.mu.Lock()
	s.startPrimaryLocked(player, state{epoch: cr.Epoch, seq: cr.Seq, total: cr.Total, keeper: arbiter}, record{})
	s.mu.Unlock()
	s.count.creates.Add(1)
	s.emit(Info, "%s is a new player: primary here, keeper on %s", player, arbiter.Name)
	return self, nil
}

// askToOwn sends m (a Claim or a Create) to peer, which either grants this
// node the player (cr, with the state to start from) or names its owner to
// forward to (owner); anything else is err. who names peer in the errors.
func (s *Store) askToOwn(ctx context.Context, player string, peer wire.NodeID, m wire.Msg, who string) (cr *wire.ClaimReply, owner wire.NodeID, err error) {
	rep, err := s.callPeer(ctx, peer, m)
	if err != nil {
		if unreachable(err) {
			s.suspectPeer(peer, "it refused the connection")
			return nil, wire.NodeID{}, wire.Errorf(wire.CodeBusy, "%s: %s does not answer; waiting for the cluster to agree whether it is down", player, who)
		}
		return nil, wire.NodeID{}, fmt.Errorf("%s: %s at %s: %w", player, m.Kind(), peer.Name, err)
	}
	cr, ok := rep.(*wire.ClaimReply)
	if !ok {
		return nil, wire.NodeID{}, fmt.Errorf("%s: %s answered a %s with %s", player, peer.Name, m.Kind(), rep.Kind())
	}
	if cr.AskAll {
		return nil, wire.NodeID{}, errAskAll
	}
	if !cr.Granted {
		if cr.Owner.IsZero() || cr.Owner == s.Self() {
			return nil, wire.NodeID{}, wire.Errorf(wire.CodeBusy, "%s: %s did not grant the %s", player, who, m.Kind())
		}
		return nil, cr.Owner, nil
	}
	return cr, wire.NodeID{}, nil
}

// errAskAll is a fast creation the arbiter could not vouch for: every
// member must be asked first.
var errAskAll = errors.New("the arbiter cannot vouch that the player is new")

func tooFewNodes(player string) error {
	return wire.Errorf(wire.CodeTooFewNodes, "%s: fewer than two live nodes, so no keeper can hold a copy; connect another node and retry (nothing was changed)", player)
}

// promoteCopy turns this node's keeper copy into the primary (a request
// for a player whose keeper is this node: the primary stays where the
// load balancer sent the player): fence the old owner by taking the copy under
// a new epoch, give the state to a new keeper elsewhere, then start the
// primary and drop the local copy. exclude names a node that must not
// become the keeper (one that is leaving). With onlyCurrent, it promotes
// only the current copy of an owner the roster removed
// (currentOrphanLocked), which no one asked every member about.
func (s *Store) promoteCopy(ctx context.Context, player, exclude string, onlyCurrent bool) (wire.NodeID, error) {
	s.mu.Lock()
	if err := s.checkServingLocked(); err != nil {
		s.mu.Unlock()
		return wire.NodeID{}, err
	}
	c := s.copies.get(player)
	if c == nil || (onlyCurrent && !s.currentOrphanLocked(c)) {
		s.mu.Unlock()
		return wire.NodeID{}, wire.Errorf(wire.CodeBusy, "%s: its keeper copy moved away; retrying", player)
	}
	old := c.owner
	if old != s.view.Self() {
		s.setCopyOwnerLocked(player, c, s.view.Self())
		c.epoch++
		c.placement = 0
	}
	// Each attempt to place the keeper is numbered, failed ones included:
	// a retry of the promotion must supersede what an attempt whose reply
	// was lost left behind.
	c.placement++
	st := state{epoch: c.epoch, seq: c.seq, total: c.total, placement: c.placement}
	recent := c.recent.record(s.now())
	self := s.view.Self()
	s.mu.Unlock()

	keeper, err := s.adoptSomewhere(ctx, player, st, recent, exclude)
	if err != nil {
		// The copy now names this node its owner with no primary here:
		// repair finishes the promotion once a keeper can be placed.
		s.kickRepair()
		return wire.NodeID{}, err
	}
	st.keeper = keeper
	s.mu.Lock()
	if cur := s.copies.get(player); cur == c {
		s.dropCopyLocked(player)
	}
	s.startPrimaryLocked(player, st, recent)
	s.mu.Unlock()
	s.count.failovers.Add(1)
	if old == self {
		s.emit(Info, "%s restored from the keeper copy on this node (total %d); new keeper on %s", player, st.total, keeper.Name)
	} else {
		s.emit(Info, "%s restored from the keeper copy on this node after %s left or failed (total %d); new keeper on %s", player, old.Name, st.total, keeper.Name)
	}
	return self, nil
}

// errSuperseded marks a keeper placement that a candidate refused because
// it owns the player, or keeps it for another owner, at a later epoch.
var errSuperseded = errors.New("another node owns the player now")

// adoptSomewhere makes a live node other than this one (and exclude) the
// keeper of player with state st, trying candidates in placement order.
func (s *Store) adoptSomewhere(ctx context.Context, player string, st state, recent record, exclude ...string) (wire.NodeID, error) {
	s.mu.Lock()
	members := s.membersLocked()
	self := s.view.Self()
	s.mu.Unlock()
	skip := append([]string{self.Name}, exclude...)
	var keeper wire.NodeID
	var last, stop error
	s.whileBusy(ctx, func() (busy bool) {
		for _, cand := range placementOrder(player, members) {
			if contains(skip, cand.Name) {
				continue
			}
			_, err := s.callPeer(ctx, cand, &wire.Adopt{Player: player, Owner: self, Epoch: st.epoch, Seq: st.seq, Total: st.total, Recent: recent.recent, Since: recent.age, Placement: st.placement})
			if err == nil {
				keeper = cand
				return false
			}
			last = err
			if unreachable(err) {
				// Never delivered: another candidate may take it.
				s.suspectPeer(cand, "it refused the connection")
				continue
			}
			code, ok := wire.CodeOf(err)
			if ok && code == wire.CodeFenced {
				// A newer owner exists: this node must not become the owner.
				stop = fmt.Errorf("%w: %w", wire.Errorf(wire.CodeBusy, "%s: %s holds a newer copy: %v", player, cand.Name, err), errSuperseded)
				return false
			}
			if !ok || (code != wire.CodeBusy && code != wire.CodeNoQuorum) {
				// The candidate may hold the copy after all; trying another
				// could leave two copies that later claim the player twice.
				stop = wire.Errorf(wire.CodeUnavailable, "%s: %s did not confirm it holds the keeper copy (%v); retry", player, cand.Name, err)
				return false
			}
			busy = busy || code == wire.CodeBusy
		}
		return busy
	})
	switch {
	case !keeper.IsZero():
		return keeper, nil
	case stop != nil:
		return wire.NodeID{}, stop
	case last == nil:
		return wire.NodeID{}, tooFewNodes(player)
	}
	return wire.NodeID{}, fmt.Errorf("%s: no live node accepted its keeper copy: %w", player, last)
}

// whileBusy runs try, and again after a short backoff, up to busyRounds
// times in all, for as long as it reports that a peer was busy activating
// the player (it got a request for it and is asking around, this node
// included). That is over in milliseconds: a few short rounds let it
// finish, rather than fail a handoff, a keeper placement or an owner's
// check for a moment's overlap.
func (s *Store) whileBusy(ctx context.Context, try func() (busy bool)) {
	for round := range busyRounds {
		if round > 0 && s.backoff(ctx, round) != nil {
			return
		}
		if !try() {
			return
		}
	}
}

// busyRounds bounds whileBusy.
const busyRounds = 4

// checkStillOwner asks every live peer about player before this node, its
// owner at epoch, replaces a keeper that is still a member but lost its
// copy: that keeper may have passed the player to another owner under a
// roster this node has not learnt (one that removed this node), and a
// fresh node that knows nothing would accept it as the owner. Another
// primary, or a copy from a later epoch or for another owner, means this
// one must step down. (A keeper the roster removed cannot have: see
// ensureKeeper.)
//
// A peer busy activating the player (a repair pass looking at a leftover
// copy, say) is waited out (whileBusy).
func (s *Store) checkStillOwner(ctx context.Context, player string, epoch uint64) error {
	var err error
	s.whileBusy(ctx, func() bool {
		err = s.checkStillOwnerOnce(ctx, player, epoch)
		code, _ := wire.CodeOf(err)
		return err != nil && code == wire.CodeBusy
	})
	return err
}

func (s *Store) checkStillOwnerOnce(ctx context.Context, player string, epoch uint64) error {
	s.mu.Lock()
	peers := s.peersLocked()
	self := s.view.Self()
	s.mu.Unlock()
	replies, err := s.whereAll(ctx, player, peers)
	if err != nil {
		return err
	}
	for _, r := range replies {
		switch r.reply.Role {
		case wire.RolePrimary:
			return wire.Errorf(wire.CodeFenced, "%s: %s runs its primary at epoch %d", player, r.from.Name, r.reply.Epoch)
		case wire.RoleKeeper:
			// Every change of owner raises the epoch, so only a copy from
			// a later epoch (or, which cannot happen, from this one for
			// another owner) says that another node took over. One from
			// an earlier epoch for another owner is a leftover (an Adopt
			// whose reply was lost, a copy the player moved away from).
			if r.reply.Epoch > epoch || (r.reply.Epoch == epoch && r.reply.Owner != self) {
				return wire.Errorf(wire.CodeFenced, "%s: %s holds a copy for %s at epoch %d", player, r.from.Name, r.reply.Owner.Name, r.reply.Epoch)
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
