package replica

import (
	"container/heap"
	"sort"

	"github.com/appnode/appnode/wire"
)

// PrimariesPage returns the players whose primary runs here, sorted by
// name, the first limit of those after cursor ("" starts at the first),
// with their totals and keepers as the primaries hold them (not a
// linearizable read: use Read for that). next is the cursor of the next
// page, "" when this one is the last.
//
// It does not sort every player for every page: it walks the table a shard
// at a time (the lock is released between shards, as repair does) and
// keeps the limit smallest names after cursor in a bounded heap, so a page
// of a million players costs one pass and about limit*log(limit) of
// sorting, and holds up no reward for longer than one shard takes.
func (s *Store) PrimariesPage(cursor string, limit int) (page []wire.PageEntry, next string) {
	if limit <= 0 {
		return nil, ""
	}
	h := &nameHeap{}
	more := false // a name after cursor did not fit in the page
	for i := range tableShards {
		s.mu.Lock()
		for name := range s.primaries.shard(i) {
			if name <= cursor {
				continue
			}
			if h.Len() < limit {
				heap.Push(h, name)
				continue
			}
			more = true
			if name < (*h)[0] {
				(*h)[0] = name
				heap.Fix(h, 0)
			}
		}
		s.mu.Unlock()
	}
	names := []string(*h)
	sort.Strings(names)
	page = make([]wire.PageEntry, 0, len(names))
	s.mu.Lock()
	for _, name := range names {
		p := s.primaries.get(name)
		if p == nil {
			continue // moved away while the page was gathered
		}
		st := p.snapshot()
		page = append(page, wire.PageEntry{Player: name, Total: st.total, Keeper: st.keeper.Name})
	}
	s.mu.Unlock()
	if more && len(names) > 0 {
		next = names[len(names)-1]
	}
	return page, next
}

// nameHeap is a max-heap of names: its root is the largest of the page so
// far, the one a smaller name replaces.
type nameHeap []string

func (h nameHeap) Len() int           { return len(h) }
func (h nameHeap) Less(i, j int) bool { return h[i] > h[j] }
func (h nameHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nameHeap) Push(x any)        { *h = append(*h, x.(string)) }
func (h *nameHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
