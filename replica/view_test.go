package replica_test

import (
	"slices"
	"testing"

	"github.com/appnode/appnode/quorum"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
)

// The quorum rules, step by step, with no network and no clock: the view
// is a value, and a test is a transcript of news and what the view made of
// it.

func ids(names ...string) []wire.NodeID {
	out := make([]wire.NodeID, len(names))
	for i, n := range names {
		out[i] = wire.NodeID{Name: n, Boot: 1}
	}
	return out
}

func rosterOf(epoch uint64, names ...string) wire.Roster {
	return wire.Roster{Cluster: 1, Epoch: epoch, Members: ids(names...)}
}

func threeNodes(t *testing.T) replica.View {
	t.Helper()
	v := replica.NewView(ids("a")[0], rosterOf(1, "a"))
	_, newcomers, _ := v.Observe(ids("a", "b", "c"))
	if !slices.Equal(newcomers, ids("b", "c")) {
		t.Fatalf("newcomers = %v, want b and c: only the roster admits them", newcomers)
	}
	if _, members := v.Size(); members != 1 {
		t.Fatalf("the failure detector grew the roster to %d", members)
	}
	v.Learn(rosterOf(2, "a", "b", "c"))
	if err := v.Serving(); err != nil {
		t.Fatalf("all three members reachable, but the view refuses: %v", err)
	}
	return v
}

func TestViewLossWaitsForConfirmAndShrinksNothing(t *testing.T) {
	v := threeNodes(t)
	suspects, _, _ := v.Observe(ids("a", "b"))
	if !slices.Equal(suspects, ids("c")) {
		t.Fatalf("suspects = %v, want c", suspects)
	}
	if c := code(v.Serving()); c != wire.CodeBusy {
		t.Fatalf("after losing c, Serving code = %v; want busy while confirming", c)
	}
	peers, wanted := v.ConfirmRound()
	if !wanted || !slices.Equal(peers, ids("b")) {
		t.Fatalf("ConfirmRound = %v, %v; want a round asking b", peers, wanted)
	}
	if change := v.Confirmed(ids("b")); change != replica.QuorumSame {
		t.Fatalf("Confirmed = %v; want no change of quorum", change)
	}
	if err := v.Serving(); err != nil {
		t.Fatalf("2 of 3 reached, but the view refuses: %v", err)
	}
	// Losing sight of c decides nothing about it: only the roster does.
	if _, members := v.Size(); members != 3 || v.Fenced(ids("c")[0]) || !v.IsMember(ids("c")[0]) {
		t.Fatalf("the view removed c on its own")
	}
	removed := v.Learn(rosterOf(3, "a", "b"))
	if !slices.Equal(removed, ids("c")) || !v.IsMember(ids("b")[0]) || v.IsMember(ids("c")[0]) {
		t.Fatalf("Learn of the roster without c: removed %v", removed)
	}
}

func TestViewMinorityRefusesUntilHealed(t *testing.T) {
	v := threeNodes(t)
	v.Observe(ids("a"))
	v.ConfirmRound()
	if change := v.Confirmed(nil); change != replica.QuorumLost {
		t.Fatalf("cut off alone: %v, want QuorumLost", change)
	}
	if c := code(v.Serving()); c != wire.CodeNoQuorum {
		t.Fatalf("Serving code = %v, want no quorum", c)
	}
	if _, wanted := v.ConfirmRound(); !wanted {
		t.Fatalf("a minority node must keep trying to confirm")
	}
	v.Observe(ids("a", "b", "c"))
	if err := v.Serving(); err != nil {
		t.Fatalf("healed, every member reachable, but refuses: %v", err)
	}
}

// A member flapping while a round is out does not throw the round away.
func TestViewRoundSurvivesFlapping(t *testing.T) {
	v := threeNodes(t)
	v.Observe(ids("a", "b"))
	v.ConfirmRound()
	v.Observe(ids("a", "c"))
	v.Observe(ids("a"))
	if change := v.Confirmed(ids("b")); change == replica.QuorumLost {
		t.Fatalf("b answered the round, but the flapping made the node give up its majority")
	}
	if err := v.Serving(); err != nil {
		t.Fatalf("2 of 3 answered, but refuses: %v", err)
	}
}

// A round sent while members were missing, which none answered, does not
// undo their return meanwhile: with every member reachable the node
// serves. (Before, the late round made a node that saw the whole roster
// refuse until the next round.)
func TestViewLateFailedRoundAfterEveryoneCameBack(t *testing.T) {
	v := threeNodes(t)
	v.Observe(ids("a"))
	if _, wanted := v.ConfirmRound(); !wanted {
		t.Fatalf("no round wanted after losing b and c")
	}
	v.Observe(ids("a", "b", "c"))
	if change := v.Confirmed(nil); change != replica.QuorumSame {
		t.Fatalf("the late round changed quorum: %v", change)
	}
	if err := v.Serving(); err != nil {
		t.Fatalf("every member reachable, but refuses after a late round: %v", err)
	}
}

func TestViewFencedAndZombies(t *testing.T) {
	v := threeNodes(t)
	b := ids("b")[0]
	r := quorum.Apply(v.Roster(), quorum.Change{Remove: []wire.NodeID{b}})
	v.Learn(r)
	if !v.Fenced(b) {
		t.Fatalf("b removed by the roster is not fenced")
	}
	// b comes back from a pause, reported alive: a zombie to be told.
	_, newcomers, zombies := v.Observe(ids("a", "b", "c"))
	if !slices.Equal(zombies, ids("b")) || len(newcomers) != 0 {
		t.Fatalf("zombies %v, newcomers %v; want b a zombie, no newcomer", zombies, newcomers)
	}
	// Its next incarnation is a newcomer, to be admitted by the roster.
	b2 := wire.NodeID{Name: "b", Boot: 2}
	_, newcomers, _ = v.Observe([]wire.NodeID{ids("a")[0], b2, ids("c")[0]})
	if !slices.Equal(newcomers, []wire.NodeID{b2}) {
		t.Fatalf("newcomers = %v, want b's new incarnation", newcomers)
	}
}

func TestViewServesOnlyAsAMember(t *testing.T) {
	a2 := wire.NodeID{Name: "a", Boot: 2}
	v := replica.NewView(a2, rosterOf(5, "a", "b", "c")) // restarted: the roster has a's old boot
	if c := code(v.Serving()); c != wire.CodeNoQuorum {
		t.Fatalf("a new incarnation not yet admitted serves (code %v)", c)
	}
	v.Observe([]wire.NodeID{a2, ids("b")[0], ids("c")[0]})
	v.Learn(quorum.Apply(v.Roster(), quorum.Change{Admit: []wire.NodeID{a2}}))
	if err := v.Serving(); err != nil {
		t.Fatalf("admitted, but refuses: %v", err)
	}
}
