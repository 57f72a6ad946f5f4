package replica

import (
	"fmt"
	"testing"

	"github.com/appnode/appnode/wire"
)

// BenchmarkRepairPass is one repair pass over a node holding a third of a
// million-player cluster's copies (333k primaries, 333k keeper copies),
// all healthy: the time the pass holds the Store's lock, during which no
// reward on this node makes progress.
func BenchmarkRepairPass(b *testing.B) {
	const players = 333_000
	self := wire.NodeID{Name: "a", Boot: 1}
	peer := wire.NodeID{Name: "b", Boot: 2}
	s := New(Config{Self: self, Net: NewMemNetwork().Attach("a", func() wire.NodeID { return self }, nil, nil, nil)})
	defer s.Close()
	s.SetMembers([]wire.NodeID{self, peer, {Name: "c", Boot: 3}})
	s.mu.Lock()
	for i := range players {
		p := fmt.Sprintf("p%07d", i)
		s.startPrimaryLocked(p, state{epoch: 1, keeper: peer}, nil)
		s.copies[fmt.Sprintf("c%07d", i)] = &keeperCopy{owner: peer, epoch: 1}
	}
	s.mu.Unlock()
	for b.Loop() {
		if s.repair() {
			b.Fatal("a healthy node's repair pass found work")
		}
	}
}
