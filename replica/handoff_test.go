package replica

import (
	"context"
	"testing"

	"github.com/appnode/appnode/wire"
)

// A leaving owner's handoff that arrives after the player moved on is
// acknowledged: a reward reached the keeper, or another node, while the
// owner was stopping its primaries, and the player now lives under a later
// epoch, here ("taken") or on a node this keeper backs ("claimed"). A
// keeper whose copy is not that owner's at that epoch or later still
// refuses.
func TestHandoffAfterThePlayerMovedOn(t *testing.T) {
	self := wire.NodeID{Name: "k", Boot: 1}
	owner := wire.NodeID{Name: "o", Boot: 2}
	other := wire.NodeID{Name: "x", Boot: 3}
	s, err := New(DefaultConfig(self, NewMemNetwork().Attach("k", func() wire.NodeID { return self }, nil, nil, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AdmitForTest(owner, other)
	s.SetMembers([]wire.NodeID{self, owner, other})

	s.mu.Lock()
	s.startPrimaryLocked("taken", state{epoch: 2, keeper: other}, record{})
	s.putCopyLocked("claimed", &keeperCopy{owner: other, epoch: 2})
	s.putCopyLocked("older", &keeperCopy{owner: other, epoch: 1})
	// Settled copies: repair has nothing to ask their owners (which this
	// test's network cannot reach, and would take for dead).
	s.confirmOwnerLocked("claimed")
	s.confirmOwnerLocked("older")
	s.mu.Unlock()

	for _, player := range []string{"taken", "claimed"} {
		if _, err := s.Handle(context.Background(), owner, &wire.Handoff{Player: player, Epoch: 1}); err != nil {
			t.Fatalf("handoff of %s, which moved on to epoch 2: %v", player, err)
		}
	}
	_, err = s.Handle(context.Background(), owner, &wire.Handoff{Player: "older", Epoch: 3})
	if code, _ := wire.CodeOf(err); code != wire.CodeFenced {
		t.Fatalf("handoff at epoch 3 of a copy another owner holds at epoch 1: %v, want fenced", err)
	}
	if c, _ := s.Counts(); c != 1 {
		t.Fatalf("%d primaries after the handoffs, want 1: an acknowledged handoff of a player that moved on promotes nothing", c)
	}
}
