package replica

import (
	"context"
	"fmt"
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
	return s.rewardFrom(ctx, req, create, &attempts{first: s.now()})
}

// attempts is what the attempts at one reward so far have shown.
type attempts struct {
	n     int   // made so far
	first int64 // when the first was sent, on the Store's clock
	// maybe records that an attempt may have been applied (its link
	// broke mid-call, it timed out). Re-sending is still safe, but if no
	// later attempt gets an answer the caller must hear "unknown", never
	// "not applied".
	maybe bool
	last  error
}

// failed takes the error of attempt number a.n (sent: the reward went
// out, rather than the search for its owner failing) and says whether
// another attempt may follow; if not, the caller's error is a.give(err).
func (a *attempts) failed(err error, sent, create bool) bool {
	a.n++
	if sent && wire.OutcomeOf(err) == wire.OutcomeUnknown {
		a.maybe = true
	}
	a.last = err
	if code, _ := wire.CodeOf(err); create && code == wire.CodeNotFound {
		// It met a read's activation of the player (which does not
		// create): the next attempt creates it.
		return true
	}
	return wire.ShouldResend(err)
}

// give is the error for a caller whose attempts ended with err.
func (a *attempts) give(player string, err error) error {
	if a.maybe {
		return wire.Errorf(wire.CodeUnknown, "%s: an attempt was cut off mid-call and the retries did not settle it, so the reward may or may not be applied: %v", player, err)
	}
	return err
}

// rewardFrom is rewardAt after the attempts a (none, or one RewardAsync
// forwarded).
func (s *Store) rewardFrom(ctx context.Context, req *wire.Reward, create bool, a *attempts) (RewardResult, error) {
	for a.n < maxAttempts {
		if a.n > 0 {
			if err := s.backoff(ctx, a.n); err != nil {
				return RewardResult{}, a.give(req.Player, fmt.Errorf("%s: %w (last error: %v)", req.Player, err, a.last))
			}
		}
		p, owner, err := s.route(ctx, req.Player, create)
		sent := err == nil
		if sent {
			// Each attempt is a message of its own: an earlier one whose
			// answer never came may still wait in a mailbox. A re-send
			// after such an attempt says how long ago the request was
			// first sent (see wire.Reward.Age); after attempts that were
			// all answered "not applied", it is a first send again.
			try := *req
			if a.maybe {
				try.Age = max(s.now()-a.first, 1)
			}
			var r RewardResult
			r, err = s.send(ctx, p, owner, &try)
			if err == nil {
				return r, nil
			}
			s.forgetRoute(req.Player, owner)
		}
		if !a.failed(err, sent, create) {
			return RewardResult{}, a.give(req.Player, err)
		}
	}
	// An attempt that reached a primary which then stepped down may have
	// been applied by its keeper, and the new owner holds it: after many
	// attempts only a re-send with the same id can tell.
	return RewardResult{}, wire.Errorf(wire.CodeUnknown, "%s: the player kept moving, gave up after %d attempts, so the reward may or may not be applied: %v", req.Player, maxAttempts, a.last)
}

// backoff waits before attempt number attempt: exponentially longer, with
// jitter so that racing activations stop colliding.
func (s *Store) backoff(ctx context.Context, attempt int) error {
	t := s.cfg.Clock.NewTimer(s.backoffDelay(attempt))
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoffDelay is how long backoff waits before attempt.
func (s *Store) backoffDelay(attempt int) time.Duration {
	d := time.Duration(1<<min(attempt, 6)) * time.Millisecond
	return d + s.rand.duration(d)
}

// send gives req to p, the player's primary on this node, or else (p nil)
// to its owner elsewhere.
func (s *Store) send(ctx context.Context, p *primary, owner wire.NodeID, req *wire.Reward) (RewardResult, error) {
	if p != nil {
		total, err := p.ask(ctx, req)
		return RewardResult{Total: total, Owner: owner, Keeper: p.snapshot().keeper}, err
	}
	began := s.forwarding()
	rep, err := s.callPeer(ctx, owner, req)
	return s.forwarded(owner, req, began, rep, err)
}

// forwarding counts a reward forwarded to its owner elsewhere and returns
// when it left, for the Observer (zero without one).
func (s *Store) forwarding() time.Time {
	s.count.forwards.Add(1)
	if s.cfg.Observer == nil {
		return time.Time{}
	}
	return time.Now()
}

// forwarded reads owner's answer to req, sent at began (see forwarding).
// It does not wait: RewardAsync calls it on the goroutine that reads the
// answer.
func (s *Store) forwarded(owner wire.NodeID, req *wire.Reward, began time.Time, rep wire.Msg, err error) (RewardResult, error) {
	if s.cfg.Observer != nil {
		s.cfg.Observer.Forwarded(time.Since(began), err)
	}
	if err != nil {
		if unreachable(err) {
			s.suspectPeer(owner, "it refused the connection")
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
		self := s.view.Self()
		s.mu.Unlock()
		return p, self, nil
	}
	if r, ok := s.routes[player]; ok && s.isMemberLocked(r) {
		s.mu.Unlock()
		return nil, r, nil
	}
	s.mu.Unlock()
	owner, err := s.activate(ctx, player, func(ctx context.Context) (wire.NodeID, error) { return s.find(ctx, player, create) })
	if err != nil {
		return nil, owner, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if owner != s.view.Self() {
		return nil, owner, nil
	}
	if p := s.primaries.get(player); p != nil {
		return p, owner, nil
	}
	// Activated here, then stopped before the reward reached it.
	return nil, owner, notOwner(player)
}

// Where reports the owner and keeper of player, asking the cluster if this
// node holds neither. A zero owner means the player is unknown.
func (s *Store) Where(ctx context.Context, player string) (owner, keeper wire.NodeID, err error) {
	if err := ValidatePlayer(player); err != nil {
		return owner, keeper, err
	}
	s.mu.Lock()
	if p := s.primaries.get(player); p != nil {
		st := p.snapshot()
		s.mu.Unlock()
		return s.Self(), st.keeper, nil
	}
	if c := s.copies.get(player); c != nil {
		defer s.mu.Unlock()
		return c.owner, s.view.Self(), nil
	}
	peers := s.peersLocked()
	s.mu.Unlock()
	replies, err := s.whereAll(ctx, player, peers)
	if err != nil {
		return owner, keeper, err
	}
	for _, r := range replies {
		switch r.reply.Role {
		case wire.RolePrimary:
			return r.from, r.reply.Keeper, nil
		case wire.RoleKeeper:
			owner, keeper = r.reply.Owner, r.from
		}
	}
	return owner, keeper, nil
}
