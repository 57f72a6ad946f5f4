package replica_test

import (
	"slices"
	"testing"

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

func threeNodes(t *testing.T) replica.View {
	t.Helper()
	v := replica.NewView(ids("a")[0])
	v.Observe(ids("a", "b", "c"))
	if err := v.Serving(); err != nil {
		t.Fatalf("growth is taken at once, but the view refuses: %v", err)
	}
	if alive, cluster := v.Size(); alive != 3 || cluster != 3 {
		t.Fatalf("size = %d alive, %d in the cluster; want 3, 3", alive, cluster)
	}
	return v
}

func TestViewLossWaitsForConfirmThenShrinks(t *testing.T) {
	v := threeNodes(t)
	v.Observe(ids("a", "b"))
	if c := code(v.Serving()); c != wire.CodeBusy {
		t.Fatalf("after losing c, Serving code = %v; want busy while confirming", c)
	}
	gen, peers, wanted := v.ConfirmRound()
	if !wanted || !slices.Equal(peers, ids("b")) {
		t.Fatalf("ConfirmRound = %v, %v; want a round asking b", peers, wanted)
	}
	change, dead := v.Confirmed(gen, ids("b"))
	if change != replica.QuorumSame || !slices.Equal(dead, ids("c")) {
		t.Fatalf("Confirmed = %v, tombstoned %v; want no change of quorum and c tombstoned", change, dead)
	}
	if err := v.Serving(); err != nil {
		t.Fatalf("2 of 3 reached, but the view refuses: %v", err)
	}
	if _, cluster := v.Size(); cluster != 2 {
		t.Fatalf("the cluster did not shrink to 2: %d", cluster)
	}
	if !v.Fenced(ids("c")[0]) {
		t.Fatalf("c's incarnation is not fenced after the majority dropped it")
	}
	// A second failure, detected after the first shrank the cluster,
	// keeps a two-node cluster's survivor... refusing: 1 of 2 is no
	// majority.
	v.Observe(ids("a"))
	gen, _, _ = v.ConfirmRound()
	if change, _ := v.Confirmed(gen, nil); change != replica.QuorumLost {
		t.Fatalf("alone out of 2: change = %v, want QuorumLost", change)
	}
	if c := code(v.Serving()); c != wire.CodeNoQuorum {
		t.Fatalf("alone out of 2: Serving code = %v, want no quorum", c)
	}
}

func TestViewMinorityRefusesUntilHealed(t *testing.T) {
	v := threeNodes(t)
	v.Observe(ids("a"))
	gen, _, _ := v.ConfirmRound()
	if change, dead := v.Confirmed(gen, nil); change != replica.QuorumLost || len(dead) != 0 {
		t.Fatalf("cut off alone: %v, tombstoned %v; want QuorumLost and no verdicts", change, dead)
	}
	if c := code(v.Serving()); c != wire.CodeNoQuorum {
		t.Fatalf("Serving code = %v, want no quorum", c)
	}
	if _, _, wanted := v.ConfirmRound(); !wanted {
		t.Fatalf("a minority node must keep trying to confirm")
	}
	v.Observe(ids("a", "b", "c"))
	gen, _, _ = v.ConfirmRound()
	if change, _ := v.Confirmed(gen, ids("b", "c")); change != replica.QuorumRegained {
		t.Fatalf("healed: change = %v, want QuorumRegained", change)
	}
	if err := v.Serving(); err != nil {
		t.Fatalf("healed, but refuses: %v", err)
	}
}

func TestViewStaleRoundIsIgnored(t *testing.T) {
	v := threeNodes(t)
	v.Observe(ids("a", "b"))
	gen, _, _ := v.ConfirmRound()
	v.Observe(ids("a")) // the view moves on while the round is out
	if change, dead := v.Confirmed(gen, ids("b")); change != replica.QuorumSame || len(dead) != 0 {
		t.Fatalf("a stale round decided: %v, tombstoned %v", change, dead)
	}
	if v.Serving() == nil {
		t.Fatalf("a stale round made the node serve")
	}
}

func TestViewRestartAndLateNews(t *testing.T) {
	v := threeNodes(t)
	b2 := wire.NodeID{Name: "b", Boot: 2}
	dead, _ := v.Observe([]wire.NodeID{ids("a")[0], b2, ids("c")[0]})
	if !slices.Equal(dead, ids("b")) || !v.Fenced(ids("b")[0]) {
		t.Fatalf("b came back with a new boot: tombstoned %v; want b's old boot", dead)
	}
	if !v.IsAlive(b2) || v.Serving() != nil {
		t.Fatalf("the new b is not alive, or the view refuses")
	}
	// News of the old boot arriving late changes nothing, and a
	// tombstoned incarnation reported alive is a zombie to be told.
	dead, zombies := v.Observe(ids("a", "b", "c"))
	if len(dead) != 0 || !slices.Equal(zombies, ids("b")) {
		t.Fatalf("late news of b's old boot: tombstoned %v, zombies %v; want none and b", dead, zombies)
	}
}

func TestViewPeerDeadLeavesTheClusterAtOnce(t *testing.T) {
	v := replica.NewView(ids("a")[0])
	v.Observe(ids("a", "b"))
	if dead := v.PeerDead(ids("b")[0]); !slices.Equal(dead, ids("b")) {
		t.Fatalf("PeerDead(b) tombstoned %v", dead)
	}
	if dead := v.PeerDead(ids("b")[0]); len(dead) != 0 {
		t.Fatalf("PeerDead(b) twice tombstoned %v again", dead)
	}
	// Proof of death shrinks the cluster without a confirm round, so a
	// node whose only peer was killed can grow again.
	if _, cluster := v.Size(); cluster != 1 {
		t.Fatalf("cluster = %d, want 1", cluster)
	}
	v.Observe(ids("a", "c"))
	if err := v.Serving(); err != nil {
		t.Fatalf("grown again to 2, but refuses: %v", err)
	}
}
