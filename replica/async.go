package replica

import (
	"fmt"
	"time"

	"github.com/appnode/appnode/wire"
)

// AsyncNetwork is a Network that can also send a message with no goroutine
// waiting for the reply (the transport's CallAsync). A Store whose Network
// is one serves RewardAsync.
type AsyncNetwork interface {
	Network
	// CallAsync sends m to `to` and returns, without waiting for a dial;
	// done gets what Call would return, once, on a goroutine that must
	// not be held, or on the caller's before CallAsync returns if m could
	// not be sent. timeout bounds the wait; cancel gives up earlier with
	// err.
	CallAsync(to wire.NodeID, m wire.Msg, timeout time.Duration, done func(wire.Msg, error)) (cancel func(err error))
}

// RewardAsync serves a plain reward (see RewardInt) with no goroutine
// parked on its replies, when it can: at player's idle primary here, it
// answers through done once the keeper acknowledges, on the goroutine
// that reads the keeper's answer, as a plain forwarder answers when its
// backup does; at a node that knows the player's owner elsewhere, it
// forwards the reward and answers on the goroutine that reads the owner's
// reply. Under load this is most of a node's rewards, and a parked
// goroutine per reward (woken by the reply, then handing its answer to
// the connection's writer) cost a third of a loaded node's CPU.
//
// It reports false, having done nothing, when the reward needs the usual
// path (RewardInt): a player not known here, a primary busy with another
// reward, a keeper that is no member (the usual path places another), a
// node not serving, a total that would overflow. A forwarded reward that
// fails, and a local one that gets anything but an Ack from its keeper,
// go on by the usual path, which sends the same request again: the owner
// answers a re-send it applied from its record, and a keeper takes only
// one of two updates that build on the same state (if it took the first,
// its answer to the second says so, wire.KeeperState, and the reward is
// answered as applied).
func (s *Store) RewardAsync(player string, points int64, done func(total int64, err error)) bool {
	return s.rewardAsync(&wire.Reward{Player: player, Points: points}, false, done)
}

// RewardOnceAsync is RewardAsync for a reward its client named (see
// RewardOnce). A re-send of one the player applied already is left to the
// usual path, which answers it from the player's record; so is one that
// arrives while the first is still being applied (the primary is busy).
func (s *Store) RewardOnceAsync(player string, points int64, id wire.ReqID, done func(total int64, err error)) bool {
	if !id.FromClient() {
		return false
	}
	return s.rewardAsync(&wire.Reward{Player: player, Points: points, ID: id}, true, done)
}

// rewardAsync is RewardAsync for req; named says its id came from its
// client, so the primary's record must be looked in first.
func (s *Store) rewardAsync(req *wire.Reward, named bool, done func(total int64, err error)) bool {
	an, ok := s.cfg.Net.(AsyncNetwork)
	if !ok {
		return false
	}
	s.mu.Lock()
	if s.checkServingLocked() != nil {
		s.mu.Unlock()
		return false
	}
	if p := s.primaries.get(req.Player); p != nil {
		b, ok := p.beginAsyncLocked(req, named)
		s.mu.Unlock()
		if ok {
			s.replicateAsync(an, p, b, s.withID(req), func(total int64, _ wire.NodeID, err error) { done(total, err) })
		}
		return ok
	}
	owner, routed := s.routes[req.Player]
	routed = routed && owner != s.view.Self() && s.isMemberLocked(owner)
	s.mu.Unlock()
	if routed {
		s.forwardAsync(an, owner, s.withID(req), done)
	}
	return routed
}

// HandleAsync serves a reward another node forwarded here (see Handle) as
// RewardAsync serves one at its primary, answering through reply. It
// reports false, having done nothing, for anything Handle must serve: any
// other message, a re-send, a reward the primary applied already or is
// busy for, a sender that is no member.
func (s *Store) HandleAsync(from wire.NodeID, m wire.Msg, reply func(wire.Msg, error)) bool {
	req, ok := m.(*wire.Reward)
	if !ok || req.NotInt != "" || req.Age != 0 || req.ID.IsZero() || ValidatePlayer(req.Player) != nil {
		return false
	}
	an, ok := s.cfg.Net.(AsyncNetwork)
	if !ok {
		return false
	}
	s.mu.Lock()
	p := s.primaries.get(req.Player)
	if p == nil || s.view.Fenced(from) || !s.view.IsMember(from) || s.checkServingLocked() != nil {
		s.mu.Unlock()
		return false
	}
	b, ok := p.beginAsyncLocked(req, true)
	s.mu.Unlock()
	if !ok {
		return false
	}
	self := s.Self()
	s.replicateAsync(an, p, b, req, func(total int64, keeper wire.NodeID, err error) {
		if err != nil {
			reply(nil, err)
			return
		}
		reply(&wire.RewardReply{Total: total, Owner: self, Keeper: keeper}, nil)
	})
	return true
}

// asyncBegun is what beginAsyncLocked hands the caller that took a
// primary's activity: the state to build on, the new total, the activity.
type asyncBegun struct {
	st   state
	next int64
	a    *activity
}

// replicateAsync sends req's update to p's keeper, b having taken p's
// activity for it, and answers done on the goroutine that reads the
// keeper's ack, or, if anything else comes, by the usual path.
func (s *Store) replicateAsync(an AsyncNetwork, p *primary, b asyncBegun, req *wire.Reward, done func(total int64, keeper wire.NodeID, err error)) {
	st, next, a := b.st, b.next, b.a
	arrived := s.now()
	var began time.Time
	if s.cfg.Observer != nil {
		began = time.Now()
	}
	prev := st.seq
	st.seq++
	keeper := st.keeper
	player := req.Player
	answered := false // under p.mu: the callback has run
	cancel := an.CallAsync(keeper, p.update(st, prev, next, req.ID), s.cfg.CallTimeout, func(rep wire.Msg, err error) {
		if s.cfg.Observer != nil {
			s.cfg.Observer.Replicated(time.Since(began), err)
		}
		p.mu.Lock()
		answered = true
		a.inflight = nil
		p.mu.Unlock()
		if _, ack := rep.(*wire.Ack); !ack || err != nil {
			// The usual path serves the reward as a second attempt. An
			// update that got no answer may have been applied by the
			// keeper: the usual path learns that from the keeper when it
			// can ask, and if it is refused first, the caller hears
			// "unknown", as after any attempt cut off mid-call.
			tried := &attempts{first: arrived}
			if err != nil {
				tried.failed(err, true, false)
			}
			c := &rewardCall{ctx: s.ctx, req: req, arrived: arrived, replied: make(chan struct{})}
			p.finishAsync(c, func(total int64, err error) {
				if err != nil {
					err = tried.give(player, err)
				}
				done(total, p.snapshot().keeper, err)
			})
			return
		}
		p.acked(st, next, req.ID)
		done(next, keeper, nil)
		p.handOn()
	})
	// Should the roster remove the keeper meanwhile, the update is given
	// up at once (abandonReplications), as a waiting one would be. Not
	// once the answer came: the usual path may have its own update out.
	// The cancel runs the callback, which takes p.mu, and inflight is
	// called with p.mu held: it cancels from a goroutine of its own. If
	// the Store is closing, the update's timeout ends it.
	p.mu.Lock()
	if !answered {
		a.inflight = func() {
			s.spawn(func() {
				cancel(fmt.Errorf("%s: keeper %s was declared failed during the update", player, keeper.Name))
			})
		}
	}
	p.mu.Unlock()
}

// forwardAsync sends req to owner, which the route cache names as the
// player's, and answers done with its reply on the goroutine that reads
// it. If the owner does not answer with a total, the usual path takes the
// reward over from there (rewardFrom), as a second attempt: it finds the
// owner again and re-sends the same request.
func (s *Store) forwardAsync(an AsyncNetwork, owner wire.NodeID, req *wire.Reward, done func(int64, error)) {
	began := s.forwarding()
	first := s.now()
	an.CallAsync(owner, req, s.cfg.CallTimeout, func(rep wire.Msg, err error) {
		r, err := s.forwarded(owner, req, began, rep, err)
		if err == nil {
			done(r.Total, nil)
			return
		}
		s.forgetRoute(req.Player, owner)
		a := &attempts{first: first}
		if !a.failed(err, true, true) {
			done(0, a.give(req.Player, err))
			return
		}
		// This goroutine reads replies for other calls too: the attempts
		// that follow, which wait, go on one of the Store's.
		if !s.spawn(func() {
			r, err := s.rewardFrom(s.ctx, req, true, a)
			done(r.Total, err)
		}) {
			done(0, a.give(req.Player, err)) // the Store is closing
		}
	})
}

// beginAsyncLocked takes the primary's activity for req, if the primary
// is idle, its keeper a member, the total would not overflow and (seen)
// req is not in the record of those applied: the actor is then the
// caller's until it ends the activity, as a worker's would be. Called
// with s.mu held (the lock order allows p.mu under it).
func (p *primary) beginAsyncLocked(req *wire.Reward, seen bool) (asyncBegun, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || p.act != nil || !p.s.isMemberLocked(p.st.keeper) {
		return asyncBegun{}, false
	}
	if seen {
		// Idle, so no actor writes the record now; the last one to
		// finish did so before it let go of the activity, under p.mu.
		if _, applied := p.applied.find(req.ID); applied {
			return asyncBegun{}, false
		}
	}
	next, ok := addPoints(p.st.total, req.Points)
	if !ok {
		return asyncBegun{}, false
	}
	p.act = &activity{running: make(chan struct{})}
	return asyncBegun{st: p.st, next: next, a: p.act}, true
}

// finishAsync serves c, a reward RewardAsync began, the usual way (apply,
// under the supervisor) on a goroutine of the Store, answers done, then
// serves what queued meanwhile. The primary's activity is still the one
// RewardAsync took.
func (p *primary) finishAsync(c *rewardCall, done func(int64, error)) {
	ok := p.s.spawn(func() {
		if p.handle(c) {
			p.s.removePrimary(p)
			p.mu.Lock()
			p.stopped = true
			p.mu.Unlock()
		}
		done(c.total, c.err)
		p.serve()
	})
	if !ok {
		done(0, notOwner(p.player)) // the Store is closing
		p.mu.Lock()
		p.endActivityLocked()
	}
}
