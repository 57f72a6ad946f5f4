package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/appnode/appnode/wire"
)

// primary is the single live actor of one player: a goroutine with a
// mailbox, as an Erlang gen_server. Only its goroutine changes its state;
// others read a snapshot under mu.
type primary struct {
	s       *Store
	player  string
	mailbox chan *rewardCall
	checkKp chan struct{}        // "is your keeper still alive?" from the repair loop
	moveKp  chan *moveKeeperCall // graceful moves of the keeper
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	mu sync.Mutex
	st state

	applied dedup // owned by the actor goroutine
}

type state struct {
	epoch  uint64
	seq    uint64 // counts replication attempts, not rewards: see replicate
	total  int64
	keeper wire.NodeID
	recent []wire.Applied // only to seed a primary or a new keeper; see dedup
}

type rewardCall struct {
	ctx     context.Context
	req     *wire.Reward
	total   int64
	err     error
	replied chan struct{}
}

type moveKeeperCall struct {
	from wire.NodeID // the keeper that is leaving
	err  error
	done chan struct{}
}

// crash is the deliberate failure of a primary on a request it cannot
// handle (points that are not an integer), caught by its supervisor.
type crash struct {
	call   *rewardCall
	reason string
}

const mailboxSize = 256

// startPrimaryLocked registers and starts the primary of player with st.
func (s *Store) startPrimaryLocked(player string, st state) *primary {
	p := &primary{
		s:       s,
		player:  player,
		mailbox: make(chan *rewardCall, mailboxSize),
		checkKp: make(chan struct{}, 1),
		moveKp:  make(chan *moveKeeperCall),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		st:      st,
		applied: newDedup(st.recent),
	}
	p.st.recent = nil
	s.primaries[player] = p
	delete(s.routes, player)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		p.supervise()
	}()
	return p
}

func (p *primary) snapshot() state {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

func (p *primary) set(st state) {
	p.mu.Lock()
	p.st = st
	p.mu.Unlock()
}

// call hands a reward to the actor and waits for its answer.
func (p *primary) call(ctx context.Context, req *wire.Reward) (int64, error) {
	c := &rewardCall{ctx: ctx, req: req, replied: make(chan struct{})}
	select {
	case p.mailbox <- c:
	case <-p.done:
		return 0, notOwner(p.player)
	case <-ctx.Done():
		return 0, wire.Errorf(wire.CodeUnavailable, "%s: the primary is overloaded: %v", p.player, ctx.Err())
	}
	select {
	case <-c.replied:
		return c.total, c.err
	case <-p.done:
		select {
		case <-c.replied:
			return c.total, c.err
		default:
			// The actor stopped before it took the call: never applied.
			return 0, notOwner(p.player)
		}
	case <-ctx.Done():
		return 0, fmt.Errorf("%s: no answer from the primary in time, the reward may or may not be applied: %w", p.player, ctx.Err())
	}
}

func (c *rewardCall) reply(total int64, err error) {
	c.total, c.err = total, err
	close(c.replied)
}

func notOwner(player string) error {
	return wire.Errorf(wire.CodeNotOwner, "%s: primary is no longer on this node", player)
}

// stopAndWait ends the actor; queued rewards are answered "not owner", so
// callers re-route them. Safe to call more than once and from any goroutine
// but the actor's own.
func (p *primary) stopAndWait() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}

// supervise is the primary's supervisor: it runs the actor, and when the
// actor crashes it restarts it with state restored from the keeper, as an
// OTP supervisor restarts a gen_server whose init reads the state keeper.
func (p *primary) supervise() {
	defer func() {
		close(p.done)
		p.drain()
	}()
	for {
		c, stopped := p.serve()
		if stopped {
			return
		}
		if c.call == nil {
			// Not the deliberate crash: a bug. Keep the player safe by
			// stopping; its keeper still holds the state.
			p.s.emit(Error, "primary of %s failed: %s; stopped, the next request restores it from its keeper", p.player, c.reason)
			p.s.removePrimary(p)
			return
		}
		from, st, err := p.restore()
		if err != nil {
			c.call.reply(0, wire.Errorf(wire.CodeCrashed, "%s: %s (primary crashed and could not be restarted: %v; the next request restores it)", p.player, c.reason, err))
			p.s.emit(Error, "primary of %s crashed: %s; restart failed: %v", p.player, c.reason, err)
			p.s.removePrimary(p)
			return
		}
		c.call.reply(0, wire.Errorf(wire.CodeCrashed, "%s: %s (primary restarted, state restored from keeper on %s)", p.player, c.reason, from.Name))
		p.s.emit(Error, "primary of %s crashed: %s; supervisor restarted it, state restored from keeper on %s (total %d)", p.player, c.reason, from.Name, st.total)
	}
}

// serve runs the actor until it is stopped, steps down, or crashes.
func (p *primary) serve() (c *crash, stopped bool) {
	var cur *rewardCall
	defer func() {
		if r := recover(); r != nil {
			reason := fmt.Sprint(r)
			if nc, ok := r.(notIntegerCrash); ok {
				reason = nc.Error()
			}
			c, stopped = &crash{call: cur, reason: reason}, false
		}
	}()
	for {
		select {
		case <-p.stop:
			return nil, true
		case <-p.s.ctx.Done():
			return nil, true
		case <-p.checkKp:
			p.ensureKeeper()
		case m := <-p.moveKp:
			m.err = p.moveKeeper(m.from)
			close(m.done)
		case call := <-p.mailbox:
			cur = call
			if p.apply(call) {
				p.s.removePrimary(p)
				return nil, true
			}
			cur = nil
		}
	}
}

type notIntegerCrash struct{ player, term string }

func (e notIntegerCrash) Error() string {
	return fmt.Sprintf("points %q is not an integer", e.term)
}

// apply runs one reward. It reports whether the primary must step down
// because a newer owner superseded it.
func (p *primary) apply(c *rewardCall) (stepDown bool) {
	if c.req.NotInt != "" {
		// The deliberate crash: the supervisor catches it.
		panic(notIntegerCrash{p.player, c.req.NotInt})
	}
	if err := c.ctx.Err(); err != nil {
		c.reply(0, fmt.Errorf("%s: the caller gave up before the reward was applied (not applied): %w", p.player, err))
		return false
	}
	st := p.snapshot()
	if total, ok := p.applied.find(c.req.ID); ok {
		// A re-send of a reward already applied: answer it again.
		c.reply(total, nil)
		return false
	}
	next, ok := addPoints(st.total, c.req.Points)
	if !ok {
		c.reply(0, wire.Errorf(wire.CodeOverflow, "%s: adding %d to %d would overflow a 64-bit total; nothing changed", p.player, c.req.Points, st.total))
		return false
	}
	if err := p.replicate(c.ctx, next, c.req.ID); err != nil {
		var we *wire.Error
		if errors.As(err, &we) && we.Code == wire.CodeFenced {
			p.s.emit(Warning, "primary of %s stepped down: %v", p.player, err)
			c.reply(0, notOwner(p.player))
			return true
		}
		c.reply(0, err)
		return false
	}
	c.reply(next, nil)
	return false
}

// replicate makes the keeper hold total before the reward is acknowledged.
// Every attempt takes a fresh sequence number, even one that failed: a
// keeper accepts only increasing numbers, so an attempt whose outcome is
// unknown can never be confused with a later one.
func (p *primary) replicate(ctx context.Context, total int64, id wire.ReqID) error {
	st := p.snapshot()
	st.seq++
	p.set(st)
	_, err := p.s.call(ctx, st.keeper, &wire.Replicate{Player: p.player, Epoch: st.epoch, Seq: st.seq, Total: total, ID: id})
	if err == nil {
		st.total = total
		p.set(st)
		p.applied.add(wire.Applied{ID: id, Total: total})
		return nil
	}
	code, isWire := wire.CodeOf(err)
	switch {
	case errors.Is(err, wire.ErrGone) || (isWire && code == wire.CodeNoCopy):
		// The keeper is gone for certain (or lost its copy): no other node
		// can hold this update, so give the new total to a new keeper.
		if errors.Is(err, wire.ErrGone) {
			p.s.declareDead(st.keeper, "it refused the connection")
		}
		// Its name is not excluded: a restarted process under that name
		// is a fine new keeper, and the dead one is no longer a member.
		st.total = total
		p.applied.add(wire.Applied{ID: id, Total: total})
		if err := p.placeKeeper(ctx, st); err != nil {
			return err
		}
		return nil
	case isWire && (code == wire.CodeFenced || code == wire.CodeNoQuorum):
		return err
	}
	return wire.Errorf(wire.CodeUnavailable, "%s: keeper %s did not confirm the update, so it may or may not be applied: %v", p.player, st.keeper.Name, err)
}

// placeKeeper puts st on a new keeper, chosen by placement among the live
// members other than this node and those excluded, and records it.
func (p *primary) placeKeeper(ctx context.Context, st state, exclude ...string) error {
	old := st.keeper
	st.recent = p.applied.list()
	keeper, err := p.s.adoptSomewhere(ctx, p.player, st, exclude...)
	if err != nil {
		return err
	}
	st.keeper = keeper
	st.recent = nil
	p.set(st)
	if old.IsZero() || old.Name == keeper.Name {
		return nil
	}
	p.s.emit(Info, "keeper of %s moved from %s to %s", p.player, old.Name, keeper.Name)
	return nil
}

// ensureKeeper re-creates the keeper if the membership lost it.
func (p *primary) ensureKeeper() {
	st := p.snapshot()
	p.s.mu.Lock()
	alive := p.s.isAliveLocked(st.keeper)
	serving := p.s.quorate
	p.s.mu.Unlock()
	if alive || !serving {
		return
	}
	ctx, cancel := context.WithTimeout(p.s.ctx, 2*p.s.cfg.CallTimeout)
	defer cancel()
	if err := p.placeKeeper(ctx, st); err != nil {
		p.s.emit(Warning, "%s has lost its keeper on %s and no new keeper could be placed yet: %v", p.player, st.keeper.Name, err)
	}
}

func (p *primary) moveKeeper(from wire.NodeID) error {
	st := p.snapshot()
	if st.keeper.Name != from.Name {
		return nil
	}
	ctx, cancel := context.WithTimeout(p.s.ctx, 2*p.s.cfg.CallTimeout)
	defer cancel()
	return p.placeKeeper(ctx, st, from.Name)
}

// restore reloads state after a crash by claiming the player again from its
// keeper (which grants it: the claimant is its recorded owner) under a new
// epoch, so nothing the crashed actor might have sent can land later.
func (p *primary) restore() (wire.NodeID, state, error) {
	st := p.snapshot()
	ctx, cancel := context.WithTimeout(p.s.ctx, p.s.cfg.CallTimeout)
	defer cancel()
	rep, err := p.s.call(ctx, st.keeper, &wire.Claim{Player: p.player, Claimant: p.s.Self()})
	if err != nil {
		return wire.NodeID{}, st, err
	}
	cr, ok := rep.(*wire.ClaimReply)
	if !ok || !cr.Granted {
		return wire.NodeID{}, st, fmt.Errorf("keeper %s did not return the state", st.keeper.Name)
	}
	next := state{epoch: cr.Epoch, seq: cr.Seq, total: cr.Total, keeper: st.keeper}
	p.set(next)
	p.applied = newDedup(cr.Recent)
	return st.keeper, next, nil
}

// drain answers every queued reward after the actor stopped.
func (p *primary) drain() {
	for {
		select {
		case c := <-p.mailbox:
			c.reply(0, notOwner(p.player))
		case m := <-p.moveKp:
			m.err = notOwner(p.player)
			close(m.done)
		default:
			return
		}
	}
}

// removePrimary unregisters p if it is still the registered primary.
func (s *Store) removePrimary(p *primary) {
	s.mu.Lock()
	if s.primaries[p.player] == p {
		delete(s.primaries, p.player)
	}
	s.mu.Unlock()
}
