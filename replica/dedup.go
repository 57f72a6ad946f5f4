package replica

import "github.com/appnode/appnode/wire"

// dedupLen bounds how many applied rewards a player remembers, so that a
// reward re-sent after a broken link is answered, not applied a second
// time. A re-send follows its original within a failover (milliseconds to
// a second); it is recognised as long as fewer than dedupLen other rewards
// of the same player were applied in between, which covers a player
// rewarded hundreds of times a second.
const dedupLen = 256

// dedup is a ring of recently applied requests. The primary's is owned by
// its actor; a keeper copy's is guarded by the Store's mutex. It grows only
// as requests arrive, so an idle player costs a few words.
type dedup struct {
	ring []wire.Applied
	next uint32 // where the next entry goes once the ring is full
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
	if len(d.ring) < dedupLen {
		d.ring = append(d.ring, a)
		return
	}
	d.ring[d.next] = a
	d.next = (d.next + 1) % dedupLen
}

func (d *dedup) find(id wire.ReqID) (int64, bool) {
	if id.IsZero() {
		return 0, false
	}
	for i := len(d.ring) - 1; i >= 0; i-- {
		if d.ring[i].ID == id {
			return d.ring[i].Total, true
		}
	}
	return 0, false
}

// list returns the entries oldest first, in a new slice, for shipping to a
// new keeper or owner.
func (d *dedup) list() []wire.Applied {
	if len(d.ring) == 0 {
		return nil
	}
	out := make([]wire.Applied, 0, len(d.ring))
	out = append(out, d.ring[d.next:]...)
	return append(out, d.ring[:d.next]...)
}
