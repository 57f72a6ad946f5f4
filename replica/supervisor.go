package replica

import (
	"context"
	"fmt"

	"github.com/appnode/appnode/wire"
)

// handle runs one message under the primary's supervisor: the deliberate
// crash on points that are not an integer is caught here and the primary
// restarted with its state restored from the keeper, as an OTP supervisor
// restarts a gen_server whose init reads the state keeper. It reports
// whether the primary must stop.
func (p *primary) handle(o op) (stop bool) {
	defer func() {
		if r := recover(); r != nil {
			stop = p.restart(o, r)
		}
	}()
	switch o := o.(type) {
	case *rewardCall:
		return p.apply(o)
	case *moveKeeperCall:
		o.err = p.moveKeeper(o.from)
		close(o.done)
	case checkKeeper:
		p.ensureKeeper()
	}
	return false
}

// restart is the supervisor's response to a crash while handling o.
func (p *primary) restart(o op, r any) (stop bool) {
	reason := fmt.Sprint(r)
	if nc, ok := r.(notIntegerCrash); ok {
		reason = nc.Error()
	}
	call, ok := o.(*rewardCall)
	if !ok {
		// Not the deliberate crash: a bug. Keep the player safe by
		// stopping; its keeper still holds the state.
		o.fail(wire.Errorf(wire.CodeInternal, "%s: primary failed: %s", p.player, reason))
		p.s.emit(Error, "primary of %s failed: %s; stopped, the next request restores it from its keeper", p.player, reason)
		return true
	}
	from, st, err := p.reloadFromKeeper()
	if err != nil {
		call.reply(0, wire.Errorf(wire.CodeCrashed, "%s: %s (primary crashed and could not be restarted: %v; the next request restores it)", p.player, reason, err))
		p.s.emit(Error, "primary of %s crashed: %s; restart failed: %v", p.player, reason, err)
		return true
	}
	call.reply(0, wire.Errorf(wire.CodeCrashed, "%s: %s (primary restarted, state restored from keeper on %s)", p.player, reason, from.Name))
	p.s.count.restarts.Add(1)
	p.s.emit(Error, "primary of %s crashed: %s; supervisor restarted it, state restored from keeper on %s (total %d)", p.player, reason, from.Name, st.total)
	return false
}

type notIntegerCrash struct{ player, term string }

func (e notIntegerCrash) Error() string {
	return fmt.Sprintf("points %q is not an integer", e.term)
}

// reloadFromKeeper reloads state after a crash by claiming the player again from its
// keeper (which grants it: the claimant is its recorded owner) under a new
// epoch, so nothing the crashed actor might have sent can land later.
func (p *primary) reloadFromKeeper() (wire.NodeID, state, error) {
	st := p.snapshot()
	ctx, cancel := context.WithTimeout(p.s.ctx, p.s.cfg.CallTimeout)
	defer cancel()
	rep, err := p.s.callPeer(ctx, st.keeper, &wire.Claim{Player: p.player, Claimant: p.s.Self()})
	if err != nil {
		return wire.NodeID{}, st, err
	}
	cr, ok := rep.(*wire.ClaimReply)
	if !ok || !cr.Granted {
		return wire.NodeID{}, st, fmt.Errorf("keeper %s did not return the state", st.keeper.Name)
	}
	next := state{epoch: cr.Epoch, seq: cr.Seq, total: cr.Total, keeper: st.keeper}
	p.set(next)
	p.applied = newDedup(record{cr.Recent, cr.Since}, p.s.now())
	return st.keeper, next, nil
}
