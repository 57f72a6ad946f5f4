package replica

import (
	"context"
	"testing"

	"github.com/appnode/appnode/wire"
)

// A leaving owner's handoff that arrives after its keeper already took the
// player over (a reward reached the keeper while the owner was stopping its
// primaries) is acknowledged: the player lives on the keeper, from its
// copy. A keeper whose copy belongs to someone else still refuses.
func TestHandoffAfterKeeperTookOver(t *testing.T) {
	self := wire.NodeID{Name: "k", Boot: 1}
	owner := wire.NodeID{Name: "o", Boot: 2}
	other := wire.NodeID{Name: "x", Boot: 3}
	s := New(Config{Self: self, Net: NewMemNetwork().Attach("k", func() wire.NodeID { return self }, nil, nil, nil)})
	defer s.Close()
	s.SetMembers([]wire.NodeID{self, owner, other})

	s.mu.Lock()
	s.startPrimaryLocked("taken", state{epoch: 2, keeper: other}, nil)
	s.putCopyLocked("elsewhere", &keeperCopy{owner: other, epoch: 2})
	s.mu.Unlock()

	if _, err := s.Handle(context.Background(), owner, &wire.Handoff{Player: "taken", Epoch: 1}); err != nil {
		t.Fatalf("handoff of a player this keeper already took over: %v", err)
	}
	_, err := s.Handle(context.Background(), owner, &wire.Handoff{Player: "elsewhere", Epoch: 1})
	if code, _ := wire.CodeOf(err); code != wire.CodeFenced {
		t.Fatalf("handoff of a copy another owner holds: %v, want fenced", err)
	}
}
