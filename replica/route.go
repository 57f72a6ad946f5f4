package replica

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/appnode/appnode/wire"
)

// maxAttempts bounds how often one reward is re-routed (owner moved, player
// being activated elsewhere) before the caller gets an error.
const maxAttempts = 8

// Reward adds points to player, wherever its primary runs, and returns the
// new total. pointsText is the points as typed: an integer, or any other
// term, on which the primary crashes (deliberately) and is restarted.
func (s *Store) Reward(ctx context.Context, player, pointsText string) (int64, error) {
	if err := ValidatePlayer(player); err != nil {
		return 0, err
	}
	n, notInt, err := ParsePoints(pointsText)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", player, err)
	}
	return s.reward(ctx, &wire.Reward{Player: player, Points: n, NotInt: notInt})
}

// RewardInt is Reward for callers that already hold an integer.
func (s *Store) RewardInt(ctx context.Context, player string, points int64) (int64, error) {
	if err := ValidatePlayer(player); err != nil {
		return 0, err
	}
	return s.reward(ctx, &wire.Reward{Player: player, Points: points})
}

// RewardOnce is Reward for a client that names its request (wire.ClientReqID):
// a re-send with the same id, to this node or any other, is answered with
// the total it produced instead of being applied again, for as long as the
// player remembers it (see dedupLen). pointsText is as for Reward.
func (s *Store) RewardOnce(ctx context.Context, player, pointsText string, id wire.ReqID) (int64, error) {
	if err := ValidatePlayer(player); err != nil {
		return 0, err
	}
	if !id.FromClient() {
		return 0, wire.Errorf(wire.CodeBadRequest, "%s: a client's request id must come from wire.ClientReqID", player)
	}
	n, notInt, err := ParsePoints(pointsText)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", player, err)
	}
	return s.reward(ctx, &wire.Reward{Player: player, Points: n, NotInt: notInt, ID: id})
}

func (s *Store) reward(ctx context.Context, req *wire.Reward) (int64, error) {
	r, err := s.rewardAt(ctx, s.withID(req), true)
	return r.Total, err
}

// withID gives req this node's next request id, unless a client named it.
func (s *Store) withID(req *wire.Reward) *wire.Reward {
	if req.ID.IsZero() {
		req.ID = wire.ReqID{Origin: s.Self().Boot, Seq: s.reqSeq.Add(1)}
	}
	return req
}

// rewardAt sends req to the player's primary, re-routing as the player
// moves, and returns what it answered. With create false, a player that
// no node holds is not created: the answer is CodeNotFound (see Read).
func (s *Store) rewardAt(ctx context.Context, req *wire.Reward, create bool) (RewardResult, error) {
	// maybe records that an attempt may have been applied (its link broke
	// mid-call). Re-sending is still safe, but if no later attempt gets an
	// answer the caller must hear "unknown", never "not applied".
	maybe := false
	fail := func(err error) (RewardResult, error) {
		if maybe {
			return RewardResult{}, wire.Errorf(wire.CodeUnknown, "%s: an attempt was cut off mid-call and the retries did not settle it, so the reward may or may not be applied: %v", req.Player, err)
		}
		return RewardResult{}, err
	}
	var last error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return fail(fmt.Errorf("%s: %w (last error: %v)", req.Player, err, last))
			}
		}
		p, owner, err := s.route(ctx, req.Player, create)
		if err == nil {
			var r RewardResult
			r, err = s.send(ctx, p, owner, req)
			if err == nil {
				return r, nil
			}
			s.forgetRoute(req.Player, owner)
			if errors.Is(err, wire.ErrLinkLost) {
				maybe = true
			}
		}
		if code, _ := wire.CodeOf(err); create && code == wire.CodeNotFound {
			// It met a read's activation of the player (which does not
			// create): the next attempt creates it.
			last = err
			continue
		}
		if !wire.ShouldResend(err) {
			return fail(err)
		}
		last = err
	}
	// An attempt that reached a primary which then stepped down may have
	// been applied by its keeper, and the new owner holds it: after many
	// attempts only a re-send with the same id can tell.
	return RewardResult{}, wire.Errorf(wire.CodeUnknown, "%s: the player kept moving, gave up after %d attempts, so the reward may or may not be applied: %v", req.Player, maxAttempts, last)
}

func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(1<<min(attempt, 6)) * time.Millisecond
	d += rand.N(d) // jitter, so racing activations stop colliding
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send gives req to p, the player's primary on this node, or else (p nil)
// to its owner elsewhere.
func (s *Store) send(ctx context.Context, p *primary, owner wire.NodeID, req *wire.Reward) (RewardResult, error) {
	if p != nil {
		total, err := p.call(ctx, req)
		return RewardResult{Total: total, Owner: owner, Keeper: p.snapshot().keeper}, err
	}
	s.count.forwards.Add(1)
	var began time.Time
	if s.cfg.Observer != nil {
		began = time.Now()
	}
	rep, err := s.call(ctx, owner, req)
	if s.cfg.Observer != nil {
		s.cfg.Observer.Forwarded(time.Since(began), err)
	}
	if err != nil {
		if errors.Is(err, wire.ErrGone) {
			s.declareDead(owner, "it refused the connection")
		}
		return RewardResult{}, err
	}
	rr, ok := rep.(*wire.RewardReply)
	if !ok {
		return RewardResult{}, fmt.Errorf("%s: owner %s answered a reward with %s", req.Player, owner.Name, rep.Kind())
	}
	if rr.Owner.IsZero() {
		rr.Owner = owner // an older node names neither
	}
	return RewardResult{Total: rr.Total, Owner: rr.Owner, Keeper: rr.Keeper}, nil
}

// maxRoutes bounds the route cache. A miss costs one round of Where
// questions, so the cache only needs to cover the players that are active
// now; past the bound an arbitrary entry makes room.
const maxRoutes = 16384

func (s *Store) learnRouteLocked(player string, owner wire.NodeID) {
	if _, ok := s.routes[player]; !ok && len(s.routes) >= maxRoutes {
		for p := range s.routes {
			delete(s.routes, p)
			break
		}
	}
	s.routes[player] = owner
}

func (s *Store) forgetRoute(player string, owner wire.NodeID) {
	s.mu.Lock()
	if s.routes[player] == owner {
		delete(s.routes, player)
	}
	s.mu.Unlock()
}

// route finds where a reward for player goes: its primary if it runs
// here, else its owner, activating the player if it has none. One look
// under the lock serves the common cases (a primary here, a known route),
// which is what nearly every reward meets.
func (s *Store) route(ctx context.Context, player string, create bool) (*primary, wire.NodeID, error) {
	s.mu.Lock()
	if err := s.checkServingLocked(); err != nil {
		s.mu.Unlock()
		return nil, wire.NodeID{}, err
	}
	if p := s.primaries.get(player); p != nil {
		self := s.self
		s.mu.Unlock()
		return p, self, nil
	}
	if r, ok := s.routes[player]; ok && s.isAliveLocked(r) {
		s.mu.Unlock()
		return nil, r, nil
	}
	s.mu.Unlock()
	var find func(context.Context) (wire.NodeID, error)
	if !create {
		find = func(ctx context.Context) (wire.NodeID, error) { return s.restore(ctx, player, restoreOnly) }
	}
	owner, err := s.activate(ctx, player, find)
	if err != nil {
		return nil, owner, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if owner != s.self {
		return nil, owner, nil
	}
	if p := s.primaries.get(player); p != nil {
		return p, owner, nil
	}
	// Activated here, then stopped before the reward reached it.
	return nil, owner, notOwner(player)
}

// activate runs one activation of player at a time on this node; callers
// that arrive during it share its result.
func (s *Store) activate(ctx context.Context, player string, fn func(context.Context) (wire.NodeID, error)) (wire.NodeID, error) {
	if fn == nil {
		fn = func(ctx context.Context) (wire.NodeID, error) { return s.findOrCreate(ctx, player) }
	}
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
	if f.err == nil && !f.owner.IsZero() && f.owner != s.self {
		s.learnRouteLocked(player, f.owner)
	}
	s.mu.Unlock()
	close(f.done)
	return f.owner, f.err
}

// findOrCreate implements the rules of SPEC.md for a player with no known
// live primary: forward to a live primary if there is one; else restore
// from the freshest keeper copy, wherever it is (this node's own included);
// else create the player here.
//
// A copy is trusted only after every live peer was asked: a node that was
// cut off may hold a copy that a newer one elsewhere has superseded, and
// promoting it would bring back an old total.
func (s *Store) findOrCreate(ctx context.Context, player string) (wire.NodeID, error) {
	return s.restore(ctx, player, restoreOrCreate)
}

// restoreMode says what restore may do besides finding a live primary.
type restoreMode uint8

const (
	restoreOrCreate restoreMode = iota // findOrCreate
	restoreOnly                        // claim or promote a copy, but a player no node holds is CodeNotFound (Read)
	restoreRepair                      // only promote this node's own copy if it is the freshest (repair)
)

// restore is findOrCreate; with restoreRepair it acts only when this node
// holds the freshest copy of an orphaned player (the repair loop's case),
// and never claims elsewhere or creates; with restoreOnly it does what
// findOrCreate does except create.
func (s *Store) restore(ctx context.Context, player string, mode restoreMode) (wire.NodeID, error) {
	repairOnly := mode == restoreRepair
	s.mu.Lock()
	if s.primaries.get(player) != nil {
		defer s.mu.Unlock()
		return s.self, nil
	}
	self := s.self
	var local *whereResult
	if c := s.copies.get(player); c != nil {
		// Even with a live owner recorded, ask: the owner may have lost
		// its primary (a failed restart), and only the peers can say.
		local = &whereResult{from: self, reply: &wire.WhereReply{Role: wire.RoleKeeper, Owner: c.owner, Epoch: c.epoch, Seq: c.seq}}
	}
	peers := s.peersLocked()
	s.mu.Unlock()
	if repairOnly && local == nil {
		return wire.NodeID{}, nil
	}

	replies, err := s.whereAll(ctx, player, peers)
	if err != nil {
		return wire.NodeID{}, err
	}
	best := local
	for i := range replies {
		r := &replies[i]
		switch r.reply.Role {
		case wire.RolePrimary:
			return r.from, nil
		case wire.RoleKeeper:
			if fresher(r, best) {
				best = r
			}
		}
	}
	switch {
	case best == nil:
		if repairOnly {
			return wire.NodeID{}, nil
		}
		if mode == restoreOnly {
			return wire.NodeID{}, wire.Errorf(wire.CodeNotFound, "%s: no node holds this player (never rewarded)", player)
		}
		return s.create(ctx, player)
	case best == local:
		return s.promoteCopy(ctx, player, "")
	}
	if local != nil {
		// A fresher copy exists elsewhere: this one is obsolete.
		s.mu.Lock()
		if c := s.copies.get(player); c != nil && c.epoch == local.reply.Epoch && c.seq == local.reply.Seq {
			s.dropCopyLocked(player)
		}
		s.mu.Unlock()
	}
	if repairOnly {
		return wire.NodeID{}, nil
	}
	return s.claim(ctx, player, best.from)
}

// fresher orders keeper copies: a higher epoch is a later owner; within an
// epoch, a higher sequence number is a later update. Ties go to the lower
// node name, so that every node picks the same copy.
func fresher(a, b *whereResult) bool {
	if b == nil {
		return true
	}
	if a.reply.Epoch != b.reply.Epoch {
		return a.reply.Epoch > b.reply.Epoch
	}
	if a.reply.Seq != b.reply.Seq {
		return a.reply.Seq > b.reply.Seq
	}
	return a.from.Name < b.from.Name
}

type whereResult struct {
	from  wire.NodeID
	reply *wire.WhereReply
}

// whereAll asks every peer what it holds for player. Any peer that cannot
// answer makes the whole question fail: it might hold the only copy, and
// concluding "new player" without it would lose its total.
func (s *Store) whereAll(ctx context.Context, player string, peers []wire.NodeID) ([]whereResult, error) {
	out := make([]whereResult, len(peers))
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := s.call(ctx, peer, &wire.Where{Player: player})
			if err != nil {
				errs[i] = err
				return
			}
			wr, ok := rep.(*wire.WhereReply)
			if !ok {
				errs[i] = fmt.Errorf("answered where with %s", rep.Kind())
				return
			}
			out[i] = whereResult{from: peer, reply: wr}
		}()
	}
	wg.Wait()
	res := out[:0]
	for i, err := range errs {
		if err == nil {
			res = append(res, out[i])
			continue
		}
		if errors.Is(err, wire.ErrGone) {
			// Gone for certain: it holds nothing any more.
			s.declareDead(peers[i], "it refused the connection")
			continue
		}
		if code, ok := wire.CodeOf(err); ok && code == wire.CodeBusy {
			return nil, err
		}
		if errors.Is(err, wire.ErrLinkLost) {
			// The peer was just disconnected (declared down, most often):
			// asking again is harmless and will likely get an answer.
			return nil, wire.Errorf(wire.CodeBusy, "%s: lost the link to %s while asking about this player; retrying", player, peers[i].Name)
		}
		return nil, wire.Errorf(wire.CodeUnavailable, "%s: cannot tell whether %s holds this player (%v); retry when it answers or is declared down", player, peers[i].Name, err)
	}
	return res, nil
}

// claim asks keeper to make this node the owner.
func (s *Store) claim(ctx context.Context, player string, keeper wire.NodeID) (wire.NodeID, error) {
	self := s.Self()
	rep, err := s.call(ctx, keeper, &wire.Claim{Player: player, Claimant: self})
	if err != nil {
		if errors.Is(err, wire.ErrGone) {
			s.declareDead(keeper, "it refused the connection")
			return wire.NodeID{}, wire.Errorf(wire.CodeBusy, "%s: its keeper %s just went down; retrying", player, keeper.Name)
		}
		return wire.NodeID{}, fmt.Errorf("%s: claim at keeper %s: %w", player, keeper.Name, err)
	}
	cr, ok := rep.(*wire.ClaimReply)
	if !ok {
		return wire.NodeID{}, fmt.Errorf("%s: keeper %s answered a claim with %s", player, keeper.Name, rep.Kind())
	}
	if !cr.Granted {
		if cr.Owner.IsZero() || cr.Owner == self {
			return wire.NodeID{}, wire.Errorf(wire.CodeBusy, "%s: keeper %s did not grant the claim", player, keeper.Name)
		}
		return cr.Owner, nil
	}
	s.mu.Lock()
	s.startPrimaryLocked(player, state{epoch: cr.Epoch, seq: cr.Seq, total: cr.Total, keeper: keeper}, cr.Recent)
	s.mu.Unlock()
	s.count.failovers.Add(1)
	s.emit(Info, "%s restored from its keeper on %s (total %d); its primary now runs here", player, keeper.Name, cr.Total)
	return self, nil
}

// create makes a brand new player owned by this node. The arbiter (first in
// placement order) serialises racing creators; it becomes the keeper unless
// it is this node, which then places the keeper itself.
func (s *Store) create(ctx context.Context, player string) (wire.NodeID, error) {
	s.mu.Lock()
	members := s.membersLocked()
	self := s.self
	s.mu.Unlock()
	if len(members) < 2 {
		return wire.NodeID{}, tooFewNodes(player)
	}
	arbiter := placementOrder(player, members)[0]
	if arbiter.Name == self.Name {
		st := state{epoch: 1}
		keeper, err := s.adoptSomewhere(ctx, player, st, nil)
		if err != nil {
			return wire.NodeID{}, err
		}
		st.keeper = keeper
		s.mu.Lock()
		s.startPrimaryLocked(player, st, nil)
		s.mu.Unlock()
		s.count.creates.Add(1)
		s.emit(Info, "%s is a new player: primary here, keeper on %s", player, keeper.Name)
		return self, nil
	}
	rep, err := s.call(ctx, arbiter, &wire.Create{Player: player, Claimant: self})
	if err != nil {
		if errors.Is(err, wire.ErrGone) {
			s.declareDead(arbiter, "it refused the connection")
			return wire.NodeID{}, wire.Errorf(wire.CodeBusy, "%s: %s went down while creating it; retrying", player, arbiter.Name)
		}
		return wire.NodeID{}, fmt.Errorf("%s: create at %s: %w", player, arbiter.Name, err)
	}
	cr, ok := rep.(*wire.ClaimReply)
	if !ok {
		return wire.NodeID{}, fmt.Errorf("%s: %s answered a create with %s", player, arbiter.Name, rep.Kind())
	}
	if !cr.Granted {
		if cr.Owner.IsZero() || cr.Owner == self {
			return wire.NodeID{}, wire.Errorf(wire.CodeBusy, "%s: %s did not grant the creation", player, arbiter.Name)
		}
		return cr.Owner, nil
	}
	s.mu.Lock()
	s.startPrimaryLocked(player, state{epoch: cr.Epoch, seq: cr.Seq, total: cr.Total, keeper: arbiter}, nil)
	s.mu.Unlock()
	s.count.creates.Add(1)
	s.emit(Info, "%s is a new player: primary here, keeper on %s", player, arbiter.Name)
	return self, nil
}

func tooFewNodes(player string) error {
	return wire.Errorf(wire.CodeTooFewNodes, "%s: fewer than two live nodes, so no keeper can hold a copy; connect another node and retry (nothing was changed)", player)
}

// promoteCopy turns this node's keeper copy into the primary ("the keeper
// is on X itself" in SPEC.md): fence the old owner by taking the copy under
// a new epoch, give the state to a new keeper elsewhere, then start the
// primary and drop the local copy. exclude names a node that must not
// become the keeper (one that is leaving).
func (s *Store) promoteCopy(ctx context.Context, player, exclude string) (wire.NodeID, error) {
	s.mu.Lock()
	if err := s.checkServingLocked(); err != nil {
		s.mu.Unlock()
		return wire.NodeID{}, err
	}
	c := s.copies.get(player)
	if c == nil {
		s.mu.Unlock()
		return wire.NodeID{}, wire.Errorf(wire.CodeBusy, "%s: its keeper copy moved away; retrying", player)
	}
	old := c.owner
	if old != s.self {
		s.setCopyOwnerLocked(c, s.self)
		c.epoch++
	}
	st := state{epoch: c.epoch, seq: c.seq, total: c.total}
	recent := c.recent.list()
	self := s.self
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

// adoptSomewhere makes a live node other than this one (and exclude) the
// keeper of player with state st, trying candidates in placement order.
func (s *Store) adoptSomewhere(ctx context.Context, player string, st state, recent []wire.Applied, exclude ...string) (wire.NodeID, error) {
	s.mu.Lock()
	members := s.membersLocked()
	self := s.self
	s.mu.Unlock()
	skip := append([]string{self.Name}, exclude...)
	var last error
	// A candidate that is busy activating the player itself (it got a
	// request for it and is asking around, this node included) is done
	// in milliseconds: a few short rounds let it finish rather than fail
	// a handoff or a keeper placement for a moment's overlap.
	for round := range adoptRounds {
		if round > 0 {
			if err := backoff(ctx, round); err != nil {
				break
			}
		}
		busy := false
		for _, cand := range placementOrder(player, members) {
			if contains(skip, cand.Name) {
				continue
			}
			_, err := s.call(ctx, cand, &wire.Adopt{Player: player, Owner: self, Epoch: st.epoch, Seq: st.seq, Total: st.total, Recent: recent})
			if err == nil {
				return cand, nil
			}
			last = err
			if errors.Is(err, wire.ErrGone) {
				s.declareDead(cand, "it refused the connection")
				continue
			}
			code, ok := wire.CodeOf(err)
			if ok && code == wire.CodeFenced {
				// A newer owner exists: this node must not become the owner.
				return wire.NodeID{}, wire.Errorf(wire.CodeBusy, "%s: %s holds a newer copy: %v", player, cand.Name, err)
			}
			if !ok || (code != wire.CodeBusy && code != wire.CodeNoQuorum) {
				// The candidate may hold the copy after all; trying another
				// could leave two copies that later claim the player twice.
				return wire.NodeID{}, wire.Errorf(wire.CodeUnavailable, "%s: %s did not confirm it holds the keeper copy (%v); retry", player, cand.Name, err)
			}
			busy = busy || code == wire.CodeBusy
		}
		if !busy {
			break
		}
	}
	if last == nil {
		return wire.NodeID{}, tooFewNodes(player)
	}
	return wire.NodeID{}, fmt.Errorf("%s: no live node accepted its keeper copy: %w", player, last)
}

// adoptRounds bounds how often adoptSomewhere goes round busy candidates.
const adoptRounds = 4

// checkStillOwner asks every live peer about player before this node, its
// owner at epoch, re-creates a lost keeper: a primary that was cut off may
// have been superseded through its old keeper, and a fresh node that knows
// nothing would accept it as the owner. Another primary, or a copy from a
// later epoch or for another owner, means this one must step down.
func (s *Store) checkStillOwner(ctx context.Context, player string, epoch uint64) error {
	s.mu.Lock()
	peers := s.peersLocked()
	self := s.self
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
			if r.reply.Epoch > epoch || r.reply.Owner != self {
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
