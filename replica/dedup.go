package replica

import (
	"encoding/binary"

	"github.com/appnode/appnode/wire"
)

// dedupLen bounds how many applied rewards a player remembers, so that a
// reward re-sent after a broken link is answered, not applied a second
// time. A re-send follows its original within a failover (milliseconds to
// a second); it is recognised as long as fewer than dedupLen other rewards
// of the same player were applied in between, which covers a player
// rewarded hundreds of times a second.
//
// A busier player forgets sooner, so the record also knows since when it
// is complete (dedupRing.since): a re-send first sent before then may have
// been applied and forgotten, and the primary refuses it as "outcome
// unknown" rather than apply it again (primary.apply).
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
	entries []ringEntry
	// tags holds a byte of each entry's id (tagOf), at the same index:
	// nearly every lookup is of a new request, which is in no entry, and
	// scanning the tags eight at a time reads a few cache lines where the
	// entries take a hundred.
	tags []byte
	next uint32 // where the next entry goes once the ring is full
	// since is a time on the Store's clock (Store.now) after which every
	// request applied is in the record; zero while it holds every request
	// ever applied.
	since int64
}

// ringEntry is an applied request and when the next one was applied: it
// was itself applied no later, which is all that since needs.
type ringEntry struct {
	wire.Applied
	at int64
}

// record is a dedup as it travels (wire.Adopt.Recent and Since): its
// entries oldest first, and for how long before the moment it was taken it
// is complete (zero: since ever).
type record struct {
	recent []wire.Applied
	age    int64
}

func newDedup(r record, now int64) dedup {
	var d dedup
	if r.age != 0 {
		// Counted from now, not from when it was sent: later, so the
		// record claims less than it holds, never more.
		d.ring = &dedupRing{since: nonZero(now - r.age)}
	}
	for _, a := range r.recent {
		d.add(a, now)
	}
	return d
}

// nonZero keeps a time from reading as "since ever", moving it later.
func nonZero(t int64) int64 {
	if t == 0 {
		return 1
	}
	return t
}

// add records a, applied at now.
func (d *dedup) add(a wire.Applied, now int64) {
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
	e := ringEntry{Applied: d.last, at: now}
	if len(r.entries) < dedupLen-1 {
		r.entries = append(r.entries, e)
		r.tags = append(r.tags, tagOf(e.ID))
	} else {
		// The oldest entry is forgotten: the record is complete only
		// for what was applied after the entry that followed it.
		r.since = nonZero(max(r.since, r.entries[r.next].at))
		r.entries[r.next] = e
		r.tags[r.next] = tagOf(e.ID)
		r.next = (r.next + 1) % (dedupLen - 1)
	}
	d.last = a
}

// covers says whether every request applied after t is in the record.
func (d *dedup) covers(t int64) bool {
	return d.ring == nil || d.ring.since == 0 || t > d.ring.since
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
	r := d.ring
	tag := tagOf(id)
	match := func(i int) bool { return r.tags[i] == tag && r.entries[i].ID == id }
	i := 0
	// Eight tags at a time: a word with a zero byte where x^spread has
	// one has a tag equal to tag (the usual test for a zero byte; its
	// rare false alarms are settled by match).
	spread := uint64(tag) * 0x0101010101010101
	for ; i+8 <= len(r.tags); i += 8 {
		x := binary.LittleEndian.Uint64(r.tags[i:]) ^ spread
		if (x-0x0101010101010101)&^x&0x8080808080808080 == 0 {
			continue
		}
		for j := i; j < i+8; j++ {
			if match(j) {
				return r.entries[j].Total, true
			}
		}
	}
	for ; i < len(r.tags); i++ {
		if match(i) {
			return r.entries[i].Total, true
		}
	}
	return 0, false
}

// tagOf is a byte of id that differs between consecutive ids (a node's
// own are numbered in order) and between clients' (random).
func tagOf(id wire.ReqID) byte {
	return byte((id.Origin ^ id.Seq) * 0x9E3779B97F4A7C15 >> 56)
}

// list returns the entries oldest first, in a new slice.
func (d *dedup) list() []wire.Applied {
	if d.last.ID.IsZero() {
		return nil
	}
	var out []wire.Applied
	if r := d.ring; r != nil {
		out = make([]wire.Applied, 0, len(r.entries)+1)
		for _, e := range r.entries[r.next:] {
			out = append(out, e.Applied)
		}
		for _, e := range r.entries[:r.next] {
			out = append(out, e.Applied)
		}
	}
	return append(out, d.last)
}

// record returns the record to ship to a new keeper or owner at now.
func (d *dedup) record(now int64) record {
	return d.recordWith(wire.Applied{}, now)
}

// recordWith is record as it will be once extra is added: the newest
// dedupLen entries travel, as a copy's own ring keeps them.
func (d *dedup) recordWith(extra wire.Applied, now int64) record {
	r := record{recent: d.list()}
	var since int64
	if d.ring != nil {
		since = d.ring.since
	}
	if !extra.ID.IsZero() {
		r.recent = append(r.recent, extra)
		if n := len(r.recent); n > dedupLen {
			// Full: the oldest goes, as add would drop it.
			since = nonZero(max(since, d.ring.entries[d.ring.next].at))
			r.recent = r.recent[n-dedupLen:]
		}
	}
	if since != 0 {
		r.age = max(now-since, 1)
	}
	return r
}
