package replica

import (
	"math/rand/v2"
	"testing"

	"github.com/appnode/appnode/wire"
)

func TestDedupRemembersTheLastDedupLen(t *testing.T) {
	var d dedup
	id := func(i int) wire.ReqID { return wire.ReqID{Origin: 7, Seq: uint64(i)} }
	for i := 1; i <= 1000; i++ {
		d.add(wire.Applied{ID: id(i), Total: int64(i * 10)}, int64(i))
		if total, ok := d.find(id(i)); !ok || total != int64(i*10) {
			t.Fatalf("just added %d: find = %d, %v", i, total, ok)
		}
	}
	for i := 1000 - dedupLen + 1; i <= 1000; i++ {
		if total, ok := d.find(id(i)); !ok || total != int64(i*10) {
			t.Fatalf("entry %d of the last %d: find = %d, %v", i, dedupLen, total, ok)
		}
	}
	if _, ok := d.find(id(1000 - dedupLen)); ok {
		t.Fatalf("entry %d should have been forgotten", 1000-dedupLen)
	}
	l := d.list()
	if len(l) != dedupLen || l[0].ID != id(1000-dedupLen+1) || l[len(l)-1].ID != id(1000) {
		t.Fatalf("list: %d entries from %v to %v", len(l), l[0].ID, l[len(l)-1].ID)
	}
	if back := newDedup(d.record(1000), 1000); len(back.list()) != dedupLen {
		t.Fatalf("rebuilt from its list: %d entries", len(back.list()))
	}
	var empty dedup
	if empty.list() != nil {
		t.Fatal("an empty dedup lists something")
	}
}

// The record knows since when it is complete: after it forgot an entry,
// only what was applied after the entry that followed it; and that
// survives the trip to a new keeper or owner, counted from its arrival.
func TestDedupKnowsSinceWhenItIsComplete(t *testing.T) {
	var d dedup
	id := func(i int) wire.ReqID { return wire.ReqID{Origin: 7, Seq: uint64(i)} }
	for i := 1; i <= dedupLen; i++ {
		d.add(wire.Applied{ID: id(i), Total: int64(i)}, int64(100*i))
	}
	if !d.covers(-1 << 62) {
		t.Fatal("a record that forgot nothing does not cover everything")
	}
	d.add(wire.Applied{ID: id(dedupLen + 1), Total: 0}, int64(100*(dedupLen+1)))
	// Entry 1 is forgotten; entry 2 was applied at 200, which is when
	// entry 1 went into the ring.
	if _, ok := d.find(id(1)); ok {
		t.Fatal("entry 1 is still there")
	}
	if d.covers(200) || d.covers(150) || !d.covers(201) {
		t.Fatalf("covers(150, 200, 201) = %v %v %v, want false false true", d.covers(150), d.covers(200), d.covers(201))
	}
	r := d.record(1000)
	if r.age != 800 || len(r.recent) != dedupLen {
		t.Fatalf("record at 1000: age %d, %d entries; want 800, %d", r.age, len(r.recent), dedupLen)
	}
	// Received at 5000 on another clock: complete since 4200 there.
	back := newDedup(r, 5000)
	if back.covers(4200) || !back.covers(4201) {
		t.Fatalf("received record: covers(4200, 4201) = %v %v", back.covers(4200), back.covers(4201))
	}
	// One more on the way: the oldest kept (entry 2, followed at 300) goes.
	if w := d.recordWith(wire.Applied{ID: id(9999)}, 1000); w.age != 700 || len(w.recent) != dedupLen || w.recent[0].ID != id(3) {
		t.Fatalf("recordWith: age %d, %d entries from %v", w.age, len(w.recent), w.recent[0].ID)
	}
}

// Clients name their requests at random (wire.ClientReqID), so any two
// may share a tag byte: find still tells every remembered id from every
// other.
func TestDedupFindsRandomIDs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var d dedup
	var ids []wire.ReqID
	for i := range 3 * dedupLen {
		id := wire.ReqID{Origin: rng.Uint64(), Seq: rng.Uint64()}
		ids = append(ids, id)
		d.add(wire.Applied{ID: id, Total: int64(i)}, int64(i+1))
	}
	for i, id := range ids {
		total, ok := d.find(id)
		remembered := i >= len(ids)-dedupLen
		if ok != remembered || (ok && total != int64(i)) {
			t.Fatalf("id %d of %d: find = %d, %v; want remembered %v", i, len(ids), total, ok, remembered)
		}
	}
	for range 10000 {
		if _, ok := d.find(wire.ReqID{Origin: rng.Uint64(), Seq: rng.Uint64()}); ok {
			t.Fatal("found an id never added")
		}
	}
}

// BenchmarkDedupFindNew is the lookup every reward makes: a new request,
// in a busy player's full record, among a thousand players' records.
func BenchmarkDedupFindNew(b *testing.B) {
	ds := make([]dedup, 1000)
	for j := range ds {
		for i := range dedupLen {
			ds[j].add(wire.Applied{ID: wire.ReqID{Origin: 7, Seq: uint64(j*dedupLen + i + 1)}, Total: int64(i)}, int64(i+1))
		}
	}
	i := 0
	for b.Loop() {
		if _, ok := ds[i%len(ds)].find(wire.ReqID{Origin: 7, Seq: 1 << 40}); ok {
			b.Fatal("found a new request")
		}
		i++
	}
}
