package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/appnode/appnode/wire"
)

// primary is the single live actor of one player, as an Erlang
// gen_server: messages go into its mailbox and one goroutine at a time
// handles them, in order. The goroutine exists only while the mailbox has
// work; an idle player is this struct and nothing else (Orleans and Akka
// call this passivation), so a node can hold a million players.
type primary struct {
	s      *Store
	player string

	mu      sync.Mutex // guards st, act and stopped
	st      state
	act     *activity // non-nil exactly while a worker serves the mailbox
	stopped bool

	applied dedup // touched only by the worker serving the mailbox
}

// activity is what a primary needs only while it has work: an idle player
// does not carry it (it would double the size of a million idle players).
type activity struct {
	mailbox  []op
	running  chan struct{}      // closed when the worker stops serving
	checking bool               // a checkKeeper is queued already
	inflight context.CancelFunc // cancels the replication under way, if any
	// keeperDead says inflight was cancelled because the cluster declared
	// the keeper failed (see Store.tombstoneLocked).
	keeperDead bool
}

// keeperFailed cancels the replication under way, if any, because its
// keeper was declared failed. Called with p.mu held.
func (a *activity) keeperFailed() {
	if a.inflight != nil {
		a.keeperDead = true
		a.inflight()
	}
}

type state struct {
	epoch  uint64
	seq    uint64 // numbers the states the keeper acknowledged: see replicate
	total  int64
	keeper wire.NodeID
	// placement counts the attempts to place a keeper in this epoch,
	// failed ones included (wire.Adopt.Placement).
	placement uint64
}

// op is a message in a primary's mailbox. fail answers it without handling
// it, when the primary stops first.
type op interface{ fail(err error) }

type rewardCall struct {
	ctx     context.Context
	req     *wire.Reward
	arrived int64 // when it reached this node (Store.now)
	total   int64
	err     error
	replied chan struct{}
}

func (c *rewardCall) reply(total int64, err error) {
	c.total, c.err = total, err
	close(c.replied)
}

func (c *rewardCall) fail(err error) { c.reply(0, err) }

// moveKeeperCall asks the primary to move its keeper off a leaving node.
type moveKeeperCall struct {
	from wire.NodeID
	err  error
	done chan struct{}
}

func (m *moveKeeperCall) fail(err error) {
	m.err = err
	close(m.done)
}

// checkKeeper asks the primary to re-create its keeper if the membership
// lost it.
type checkKeeper struct{}

func (checkKeeper) fail(error) {}

// maxMailbox bounds a primary's queue: beyond it a reward is refused (not
// applied) rather than queued without limit behind a slow keeper.
const maxMailbox = 1024

// startPrimaryLocked registers the primary of player with st and the
// rewards recently applied to it.
func (s *Store) startPrimaryLocked(player string, st state, recent record) *primary {
	p := &primary{s: s, player: player, st: st, applied: newDedup(recent, s.now())}
	s.primaries.put(player, p)
	delete(s.routes, player)
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

// send puts o in the mailbox, scheduling a worker to serve it if none does.
func (p *primary) send(o op) error {
	_, err := p.enqueue(o, false)
	return err
}

// enqueue puts o in the mailbox. If no worker serves the primary, then
// with runHere the caller must serve it (serveFirst) and enqueue reports
// true; without, a worker is scheduled.
func (p *primary) enqueue(o op, runHere bool) (serveHere bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false, notOwner(p.player)
	}
	a := p.act
	if a == nil {
		a = &activity{running: make(chan struct{})}
	} else if len(a.mailbox) >= maxMailbox {
		return false, wire.Errorf(wire.CodeBusy, "%s: %d rewards are already queued for this player (not applied)", p.player, len(a.mailbox))
	}
	if _, ok := o.(checkKeeper); ok {
		if a.checking {
			return false, nil
		}
		a.checking = true
	}
	a.mailbox = append(a.mailbox, o)
	if p.act != nil {
		return false, nil
	}
	if !runHere && !p.s.schedule(p) {
		// The Store is closing: no worker will serve o.
		a.mailbox = nil
		close(a.running)
		return false, notOwner(p.player)
	}
	p.act = a
	return runHere, nil
}

// workerIdle is how long a worker goroutine waits for another primary to
// serve before it exits. Workers are reused because a fresh goroutine's
// stack must grow through msgpack's encoder on every message, which
// costs more than the message itself.
const workerIdle = 5 * time.Second

// schedule hands a primary with mail to an idle worker, or to a new one.
// As in an actor system's dispatcher, a worker serves one primary at a
// time, so a primary's messages stay in order; since a primary blocks on
// its keeper's ack, workers are not capped: there are as many as there
// are players being served at once. It reports false when the Store is
// closing and no worker will serve p.
func (s *Store) schedule(p *primary) bool {
	select {
	case s.runq <- p:
		return true
	default:
		return s.spawn(func() { s.worker(p) })
	}
}

func (s *Store) worker(p *primary) {
	idle := s.cfg.Clock.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		p.serve()
		idle.Reset(workerIdle)
		select {
		case p = <-s.runq:
		case <-idle.C():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// ask hands a reward to the actor and waits for its answer (the mailbox
// side; callPeer is the network side). When the
// actor is idle the caller serves the reward itself, on its own goroutine:
// handing it to a worker and waiting to be woken would cost two goroutine
// switches per reward, more than the rest of the local work. The mailbox
// still admits one server at a time, so the actor's order is kept.
func (p *primary) ask(ctx context.Context, req *wire.Reward) (int64, error) {
	c := &rewardCall{ctx: ctx, req: req, arrived: p.s.now(), replied: make(chan struct{})}
	serveHere, err := p.enqueue(c, true)
	if err != nil {
		return 0, err
	}
	if serveHere {
		p.serveFirst()
		return c.total, c.err
	}
	// Queued behind others. A caller without a deadline (a client's
	// reward) still gets an answer in bounded time.
	var late <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := p.s.cfg.Clock.NewTimer(maxQueueWait)
		defer t.Stop()
		late = t.C()
	}
	select {
	case <-c.replied:
		return c.total, c.err
	case <-ctx.Done():
		return 0, fmt.Errorf("%s: no answer from the primary in time, the reward may or may not be applied: %w", p.player, ctx.Err())
	case <-late:
		return 0, wire.Errorf(wire.CodeUnknown, "%s: no answer from the primary within %v (many rewards queued for this player, or its keeper is slow); the reward may or may not be applied", p.player, maxQueueWait)
	}
}

// maxQueueWait bounds how long a caller without a deadline waits for a
// primary busy with other rewards.
const maxQueueWait = 10 * time.Second

func notOwner(player string) error {
	return wire.Errorf(wire.CodeNotOwner, "%s: primary is no longer on this node", player)
}

// stopAndWait ends the actor: what it is handling finishes, what is queued
// is answered "not owner" so that callers re-route it. Safe to call more
// than once, from any goroutine but the actor's own.
func (p *primary) stopAndWait() {
	p.mu.Lock()
	p.stopped = true
	var running chan struct{}
	if p.act != nil {
		running = p.act.running
	}
	p.mu.Unlock()
	if running != nil {
		<-running // the worker answers what is queued as it stops
	}
}

// serve handles the mailbox until it is empty or the primary stops.
func (p *primary) serve() {
	for p.serveOne() {
	}
}

// serveFirst handles the first message in the mailbox on the caller's
// goroutine (call put it there), then hands whatever arrived meanwhile to
// a worker, so the caller is not held up serving others.
func (p *primary) serveFirst() {
	if p.serveOne() {
		p.handOn()
	}
}

// handOn is the end of a caller's turn as the actor: what arrived
// meanwhile goes to a worker, or, with nothing queued, the activity ends.
func (p *primary) handOn() {
	p.mu.Lock()
	if len(p.act.mailbox) == 0 || p.stopped || p.s.ctx.Err() != nil || !p.s.schedule(p) {
		p.endActivityLocked()
		return
	}
	p.mu.Unlock()
}

// serveOne handles one message, or ends the activity if there is none or
// the primary stopped. It reports whether the activity goes on.
func (p *primary) serveOne() bool {
	p.mu.Lock()
	a := p.act
	if len(a.mailbox) == 0 || p.stopped || p.s.ctx.Err() != nil {
		p.endActivityLocked()
		return false
	}
	o := a.mailbox[0]
	a.mailbox[0] = nil
	a.mailbox = a.mailbox[1:]
	if _, ok := o.(checkKeeper); ok {
		a.checking = false
	}
	p.mu.Unlock()
	if p.handle(o) {
		p.s.removePrimary(p)
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
	}
	return true
}

// endActivityLocked ends the activity, answering what is still queued
// (the primary stopped) with "not owner" so that callers re-route. It is
// called with p.mu held and releases it.
func (p *primary) endActivityLocked() {
	a := p.act
	p.act = nil
	close(a.running)
	p.mu.Unlock()
	for _, o := range a.mailbox {
		o.fail(notOwner(p.player))
	}
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
	var err error
	for try := 0; ; try++ {
		if total, ok := p.applied.find(c.req.ID); ok {
			// A re-send of a reward already applied: answer it again.
			c.reply(total, nil)
			return false
		}
		if !p.remembersSince(c) {
			c.reply(0, wire.Errorf(wire.CodeUnknown, "%s: this reward was re-sent %v after it was first sent, and the player has applied too many rewards since to remember whether it was one of them; it may or may not have been applied", p.player, time.Duration(c.req.Age)))
			return false
		}
		next, ok := addPoints(st.total, c.req.Points)
		if !ok {
			c.reply(0, wire.Errorf(wire.CodeOverflow, "%s: adding %d to %d would overflow a 64-bit total; nothing changed", p.player, c.req.Points, st.total))
			return false
		}
		if err = p.replicate(c.ctx, next, c.req.ID); err == nil {
			c.reply(next, nil)
			return false
		}
		if err != errKeeperAhead {
			break
		}
		// The keeper held an update whose ack was lost, and this node
		// now does too: apply the reward again, on top of it (it may
		// be that update's re-send, answered above).
		if try+1 == maxKeeperAhead {
			err = wire.Errorf(wire.CodeBusy, "%s: the keeper kept holding updates this primary had not heard acknowledged (not applied)", p.player)
			break
		}
		st = p.snapshot()
	}
	var we *wire.Error
	if errors.As(err, &we) && we.Code == wire.CodeFenced {
		p.s.count.stepDowns.Add(1)
		p.s.emit(Warning, "primary of %s stepped down: %v", p.player, err)
		c.reply(0, notOwner(p.player))
		return true
	}
	c.reply(0, err)
	return false
}

// remembersSince says whether the record of applied requests reaches back
// to when the reward c was first sent, so that its absence proves c was
// never applied. A first attempt (Age zero) cannot have been applied
// before. A re-send was first sent Age before it left its entry node,
// which is at least Age before it arrived here, less its transit: that is
// taken to be under a call timeout (a call outlives its timeout only as
// bytes in a socket buffer), so the record must reach back that much
// further.
func (p *primary) remembersSince(c *rewardCall) bool {
	if c.req.Age <= 0 {
		return true
	}
	return p.applied.covers(c.arrived - c.req.Age - int64(p.s.cfg.CallTimeout))
}

// update is the Replicate that moves the keeper from state prev to st,
// whose total is total, for the request id.
func (p *primary) update(st state, prev uint64, total int64, id wire.ReqID) *wire.Replicate {
	return &wire.Replicate{Player: p.player, Epoch: st.epoch, Seq: st.seq, Total: total, ID: id, Prev: prev, Placement: st.placement}
}

// acked takes on st with total, the keeper having acknowledged the update
// for request id. Only the actor calls it.
func (p *primary) acked(st state, total int64, id wire.ReqID) {
	st.total = total
	p.set(st)
	p.applied.add(wire.Applied{ID: id, Total: total}, p.s.now())
}

// errKeeperAhead says that the keeper refused an update because it holds a
// later state than the primary knew (see replicate); the primary has taken
// that state and applies the reward again on top of it.
var errKeeperAhead = errors.New("the keeper holds a later state")

// maxKeeperAhead bounds how often one reward is applied again because its
// keeper was ahead; each time needs another update whose ack was lost.
const maxKeeperAhead = 3

// replicate makes the keeper hold total before the reward is acknowledged.
// The update names the state it builds on (Prev, the last one the keeper
// acknowledged), and the keeper applies it only on top of that state. An
// attempt whose ack was lost may still have been applied there: the next
// update then does not build on the keeper's copy, and the keeper answers
// with its state (wire.KeeperState) instead of letting it overwrite that
// attempt, whose request id the copy remembers and carries wherever it
// goes. The primary then takes that state (the attempt was applied) and
// returns errKeeperAhead.
func (p *primary) replicate(ctx context.Context, total int64, id wire.ReqID) error {
	st := p.snapshot()
	prev := st.seq
	st.seq++
	keeperDead, rep, err := p.sendToKeeper(ctx, st, prev, total, id)
	if err == nil {
		if ks, ok := rep.(*wire.KeeperState); ok {
			if ks.Seq != prev+1 {
				// Only the update after Prev can be held unacknowledged.
				return wire.Errorf(wire.CodeUnknown, "%s: keeper %s holds state %d, this primary %d: they diverged", p.player, st.keeper.Name, ks.Seq, prev)
			}
			st.total = ks.Total
			p.set(st)
			p.applied.add(ks.Last, p.s.now())
			return errKeeperAhead
		}
		p.acked(st, total, id)
		return nil
	}
	code, isWire := wire.CodeOf(err)
	switch {
	case keeperDead || (isWire && code == wire.CodeNoCopy):
		// The roster removed the keeper, or the keeper is a process that
		// dropped what it held (a paused keeper comes back with nothing):
		// no copy of this update can be claimed there.
		return p.replaceKeeper(ctx, st, total, id, keeperDead)
	case unreachable(err):
		// Never delivered, and no proof the keeper is dead (a firewall
		// refuses just the same): the cluster decides, and the reward is
		// sent again meanwhile.
		p.s.suspectPeer(st.keeper, "it refused the connection")
		return wire.Errorf(wire.CodeBusy, "%s: keeper %s does not answer; waiting for the cluster to agree whether it is down (not applied): %v", p.player, st.keeper.Name, err)
	case isWire && (code == wire.CodeFenced || code == wire.CodeNoQuorum || code == wire.CodeBusy):
		return err // refused, so not applied
	}
	return wire.Errorf(wire.CodeUnknown, "%s: keeper %s did not confirm the update, so it may or may not be applied: %v", p.player, st.keeper.Name, err)
}

// sendToKeeper sends one Replicate of st, built on the keeper's state
// prev. keeperDead says the call was cut short because the roster removed
// the keeper meanwhile (a paused keeper): waiting out the timeout would
// stall the player for nothing, since a removed keeper's copy can no
// longer be claimed by anyone.
func (p *primary) sendToKeeper(ctx context.Context, st state, prev uint64, total int64, id wire.ReqID) (keeperDead bool, rep wire.Msg, err error) {
	// One context carries both the call's deadline and that cancellation
	// (callPeer adds none when the deadline is already this close): a
	// context per layer was a tenth of a loaded node's CPU.
	cctx, cancel := context.WithTimeout(ctx, p.s.cfg.CallTimeout)
	defer cancel()
	p.mu.Lock()
	p.act.inflight = cancel
	p.act.keeperDead = false
	p.mu.Unlock()
	// Registered first, checked second: a removal learnt in between
	// finds the cancel function (it is set under s.mu before
	// abandonReplications looks at any primary).
	p.s.mu.Lock()
	if !p.s.view.IsMember(st.keeper) {
		p.mu.Lock()
		p.act.keeperFailed()
		p.mu.Unlock()
	}
	p.s.mu.Unlock()
	var began time.Time
	if p.s.cfg.Observer != nil {
		began = time.Now()
	}
	rep, err = p.s.callPeer(cctx, st.keeper, p.update(st, prev, total, id))
	if p.s.cfg.Observer != nil {
		p.s.cfg.Observer.Replicated(time.Since(began), err)
	}
	p.mu.Lock()
	p.act.inflight = nil
	keeperDead = p.act.keeperDead
	p.mu.Unlock()
	return keeperDead, rep, err
}

// replaceKeeper gives the new total to a new keeper after the old one was
// lost mid-update, unless the player moved on without this primary knowing
// (a keeper that became the owner, or a newer copy elsewhere).
func (p *primary) replaceKeeper(ctx context.Context, st state, total int64, id wire.ReqID, keeperDead bool) error {
	// A replication cut short because its keeper was removed may have
	// reached that keeper: if no new keeper can be placed, the caller
	// must hear "unknown", not "nothing changed".
	maybe := func(err error) error {
		if keeperDead {
			return wire.Errorf(wire.CodeUnknown, "%s: keeper %s was declared failed during the update and no new keeper took it, so it may or may not be applied: %v", p.player, st.keeper.Name, err)
		}
		return err
	}
	if !keeperDead {
		// The keeper is a member and lost its copy: it may have handed
		// the player to another owner before dropping it, if it holds a
		// roster that removed this node and this node has not learnt
		// that yet. Only the new owner, anywhere, can say.
		if err := p.s.checkStillOwner(ctx, p.player, st.epoch); err != nil {
			if code, _ := wire.CodeOf(err); code == wire.CodeFenced {
				return err // superseded: the re-send is answered by the new owner
			}
			return maybe(err)
		}
	}
	// A keeper the roster removed cannot have handed the player on
	// (ensureKeeper says why), so its replacement asks no one else. The
	// dead keeper's name is not excluded: a restarted process under
	// that name is a fine new keeper.
	st.total = total
	if err := p.placeKeeper(ctx, st, wire.Applied{ID: id, Total: total}); err != nil {
		return maybe(err)
	}
	return nil
}

// placeKeeper puts st on a new keeper, chosen by placement among the live
// members other than this node and those excluded, and records it. pending,
// if not zero, is the request that produced st.total: the new keeper learns
// it among those applied, and the primary records it only once a keeper
// holds it (a re-send is answered from that record).
func (p *primary) placeKeeper(ctx context.Context, st state, pending wire.Applied, exclude ...string) error {
	old := st.keeper
	// Numbered before it is sent, and counted even if it fails: a copy
	// that a lost reply leaves behind must lose to the keeper a later
	// attempt places (wire.Adopt.Placement).
	p.mu.Lock()
	p.st.placement++
	st.placement = p.st.placement
	p.mu.Unlock()
	recent := p.applied.recordWith(pending, p.s.now())
	keeper, err := p.s.adoptSomewhere(ctx, p.player, st, recent, exclude...)
	if err != nil {
		return err
	}
	st.keeper = keeper
	p.set(st)
	p.applied.add(pending, p.s.now())
	if old.IsZero() || old.Name == keeper.Name {
		return nil
	}
	p.s.emit(Info, "keeper of %s moved from %s to %s", p.player, old.Name, keeper.Name)
	return nil
}

// ensureKeeper re-creates the keeper if the roster removed it.
//
// It asks no one but the new keeper, so a lost keeper costs the same at
// any cluster size, because the old keeper cannot have handed the player
// to another owner. A copy is handed on (a claim granted, a copy
// promoted) only if its owner answers that it runs no primary, or under a
// roster that does not list the owner; and rosters are agreed one after
// another, never listing a removed incarnation again. This node holds
// roster R, which lists it and not the keeper. A roster under which the
// keeper could have handed the player on lists the keeper and not this
// node: it would come after this node's removal, which is after R, and
// before the keeper's, which is at or before R. There is none.
//
// What remains is the window every placement of a keeper has (a creation's,
// moveKeeper's): a roster after R that removed this node, not learnt here
// yet, under which a copy left behind by an earlier placement is claimed.
// Every member holding that roster refuses this node's messages (the
// Adopt included) and tells it it was declared failed; asking every member
// first, as this once did, did not close that window either (the claim
// may come just after the question), and cost a message per member.
func (p *primary) ensureKeeper() {
	st := p.snapshot()
	p.s.mu.Lock()
	alive := p.s.isMemberLocked(st.keeper)
	serving := p.s.view.Quorate()
	p.s.mu.Unlock()
	if alive || !serving {
		return
	}
	ctx, cancel := context.WithTimeout(p.s.ctx, 2*p.s.cfg.CallTimeout)
	defer cancel()
	if err := p.placeKeeper(ctx, st, wire.Applied{}); err != nil {
		if errors.Is(err, errSuperseded) {
			p.s.count.stepDowns.Add(1)
			p.s.emit(Warning, "primary of %s stepped down: %v", p.player, err)
			p.stepDown()
			return
		}
		p.s.emit(Warning, "%s has lost its keeper on %s and no new keeper could be placed yet: %v", p.player, st.keeper.Name, err)
	}
}

// stepDown unregisters the primary from inside its own goroutine; serve
// stops after the current message.
func (p *primary) stepDown() {
	p.s.removePrimary(p)
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
}

func (p *primary) moveKeeper(from wire.NodeID) error {
	st := p.snapshot()
	if st.keeper.Name != from.Name {
		return nil
	}
	ctx, cancel := context.WithTimeout(p.s.ctx, 2*p.s.cfg.CallTimeout)
	defer cancel()
	return p.placeKeeper(ctx, st, wire.Applied{}, from.Name)
}
