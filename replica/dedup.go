package replica

import "github.com/appnode/appnode/wire"

// dedupLen bounds how many applied rewards a player remembers, so that a
// reward re-sent after a broken link is answered, not applied a second
// time. A re-send follows its original within a failover (milliseconds to
// a second); it is recognised as long as fewer than dedupLen other rewards
// of the same player were applied in between, which covers a player
// rewarded hundreds of times a second.
const dedupLen = wire.MaxRecent

// dedup remembers recently applied requests. The primary's is owned by its
// actor; a keeper copy's is guarded by the Store's mutex. The newest entry
// is kept inline, because a player at rest (a million of them, say) has
// usually been rewarded since its last failover only a few times and one
// entry costs nothing more; older entries go to a ring allocated only for
// players that are busy.
type dedup struct {
	last wire.Applied
	ring *dedupRing
}

type dedupRing struct {
	entries []wire.Applied
	next    uint32 // where the next entry goes once the ring is full
}

func newDedup(recent []wire.Applied) dedup {
	var d dedup
	for _, a := range recent {
		d.add(a)
	}
	return d
}

func (d *dedup) add(a wire.Applied) {
	if a.ID.IsZero() {
		return
	}
	if d.last.ID.IsZero() {
		d.last = a
		return
	}
	if d.ring == nil {
		d.ring = &dedupRing{}
	}
	r := d.ring
	if len(r.entries) < dedupLen-1 {
		r.entries = append(r.entries, d.last)
	} else {
		r.entries[r.next] = d.last
		r.next = (r.next + 1) % (dedupLen - 1)
	}
	d.last = a
}

func (d *dedup) find(id wire.ReqID) (int64, bool) {
	if id.IsZero() {
		return 0, false
	}
	if d.last.ID == id {
		return d.last.Total, true
	}
	if d.ring == nil {
		return 0, false
	}
	for i := len(d.ring.entries) - 1; i >= 0; i-- {
		if d.ring.entries[i].ID == id {
			return d.ring.entries[i].Total, true
		}
	}
	return 0, false
}

// list returns the entries oldest first, in a new slice, for shipping to a
// new keeper or owner.
func (d *dedup) list() []wire.Applied {
	if d.last.ID.IsZero() {
		return nil
	}
	var out []wire.Applied
	if r := d.ring; r != nil {
		out = make([]wire.Applied, 0, len(r.entries)+1)
		out = append(out, r.entries[r.next:]...)
		out = append(out, r.entries[:r.next]...)
	}
	return append(out, d.last)
}
