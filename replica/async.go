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
	// CallAsync sends m to `to` and returns; done gets what Call would
	// return, once, on a goroutine that must not be held, or on the
	// caller's before CallAsync returns if m could not be sent. timeout
	// bounds the wait; cancel gives up earlier with err.
	CallAsync(to wire.NodeID, m wire.Msg, timeout time.Duration, done func(wire.Msg, error)) (cancel func(err error))
}

// RewardAsync applies a reward to player's primary on this node when the
// primary is idle, and answers through done once the keeper acknowledges,
// with no goroutine parked on that ack: the reply comes on the goroutine
// that reads the keeper's answer, as a plain forwarder answers when its
// backup does. Under load this is most of a node's rewards, and a parked
// goroutine per reward (woken by the ack, then handing its answer to the
// connection's writer) cost a third of a loaded node's CPU.
//
// It reports false, having done nothing, when the reward needs the usual
// path (Reward): no primary here, one busy with another reward, a keeper
// that is no member (the usual path places another), a node not serving,
// a total that would overflow. Anything but an Ack from the
// keeper hands the reward to the usual path too (finishAsync), which
// sends the same update again: the keeper takes only one of the two (each
// names the state it builds on), and if it took the first one, its
// answer to the second says so (wire.KeeperState) and the reward is
// answered as applied.
func (s *Store) RewardAsync(player string, points int64, done func(total int64, err error)) bool {
	an, ok := s.cfg.Net.(AsyncNetwork)
	if !ok {
		return false
	}
	s.mu.Lock()
	p := s.primaries.get(player)
	if p == nil || s.checkServingLocked() != nil {
		s.mu.Unlock()
		return false
	}
	st, next, a, ok := p.beginAsyncLocked(points)
	s.mu.Unlock()
	if !ok {
		return false
	}
	req := s.withID(&wire.Reward{Player: player, Points: points})
	c := &rewardCall{ctx: s.ctx, req: req, arrived: s.now(), replied: make(chan struct{})}
	var began time.Time
	if s.cfg.Observer != nil {
		began = time.Now()
	}
	prev := st.seq
	st.seq++
	keeper := st.keeper
	answered := false // under p.mu: the callback has run
	cancel := an.CallAsync(keeper, &wire.Replicate{Player: player, Epoch: st.epoch, Seq: st.seq, Total: next, ID: req.ID, Prev: prev, Placement: st.placement}, s.cfg.CallTimeout, func(rep wire.Msg, err error) {
		if s.cfg.Observer != nil {
			s.cfg.Observer.Replicated(time.Since(began), err)
		}
		p.mu.Lock()
		answered = true
		a.inflight = nil
		p.mu.Unlock()
		if _, ack := rep.(*wire.Ack); !ack || err != nil {
			p.finishAsync(c, done)
			return
		}
		st.total = next
		p.set(st)
		p.applied.add(wire.Applied{ID: req.ID, Total: next}, s.now())
		done(next, nil)
		p.mu.Lock()
		if len(a.mailbox) == 0 || p.stopped || s.ctx.Err() != nil || !s.schedule(p) {
			p.endActivityLocked()
			return
		}
		p.mu.Unlock()
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
	return true
}

// beginAsyncLocked takes the primary's activity for a reward of points,
// if the primary is idle, its keeper a member and the total would not
// overflow: the actor is then the caller's until it ends the activity, as
// a worker's would be. It returns the state to build on and the new
// total. Called with s.mu held (the lock order allows p.mu under it).
func (p *primary) beginAsyncLocked(points int64) (st state, next int64, a *activity, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || p.act != nil || !p.s.isMemberLocked(p.st.keeper) {
		return st, 0, nil, false
	}
	st = p.st
	if next, ok = addPoints(st.total, points); !ok {
		return st, 0, nil, false
	}
	a = &activity{running: make(chan struct{})}
	p.act = a
	return st, next, a, true
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
