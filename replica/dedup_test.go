package replica

import (
	"testing"

	"github.com/appnode/appnode/wire"
)

func TestDedupRemembersTheLastDedupLen(t *testing.T) {
	var d dedup
	id := func(i int) wire.ReqID { return wire.ReqID{Origin: 7, Seq: uint64(i)} }
	for i := 1; i <= 1000; i++ {
		d.add(wire.Applied{ID: id(i), Total: int64(i * 10)})
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
	if back := newDedup(l); len(back.list()) != dedupLen {
		t.Fatalf("rebuilt from its list: %d entries", len(back.list()))
	}
	var empty dedup
	if empty.list() != nil {
		t.Fatal("an empty dedup lists something")
	}
}
