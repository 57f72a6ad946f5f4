package replica_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
)

// A node that joins becomes the arbiter of players that exist already, of
// which it holds no copy. It must not vouch that they are new before every
// member has listed its players to it, nor after, when it lists them: a
// reward reaches the existing player, never a second one. The rewards
// enter at another newcomer, n5, which knows no route and holds no copy,
// so it asks the arbiter first.
func TestJoiningArbiterNeverCreatesAPlayerTwice(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	const players = 40
	name := createOldPlayers(c, players)
	c.start("n4")
	c.start("n5")
	c.sync()
	c.waitRoster()
	members := c.node("n4").store.Roster().Members
	arbitrated := 0
	for i := range players {
		if replica.ArbiterOf(name(i), members).Name == "n4" {
			arbitrated++
		}
	}
	if arbitrated == 0 {
		t.Fatalf("n4 arbitrates none of the %d players: the test shows nothing", players)
	}
	// Half at once, while the lists may still be on their way; the rest
	// once n4 has heard from every member.
	for i := range players / 2 {
		c.mustReward("n5", name(i), 1, int64(i+2))
	}
	c.waitDirectories()
	for i := players / 2; i < players; i++ {
		c.mustReward("n5", name(i), 1, int64(i+2))
	}
	// And a player that is new is still created, at n4 and elsewhere.
	c.mustReward("n4", "fresh1", 3, 3)
	c.mustReward("n2", "fresh2", 4, 4)
	c.mustReward("n4", "fresh2", 1, 5)
}

// An arbiter vouches that a player is new only once every member of its
// roster has listed its players to it. Here the lists of the three nodes
// that hold every player cannot reach the newcomer n4: rewards entering
// at n5 must still find each existing player (by asking every member),
// and once the link heals, the retried lists complete n4's directory.
func TestArbiterWaitsForEveryMembersList(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	const players = 40
	name := createOldPlayers(c, players)
	isRegister := func(m wire.Msg) bool { _, ok := m.(*wire.Register); return ok }
	for _, from := range []string{"n1", "n2", "n3"} {
		c.net.SetFault(from, "n4", replica.LinkFault{RefuseIf: isRegister})
	}
	c.start("n4")
	c.start("n5")
	c.sync()
	c.waitRoster()
	for i := range players {
		c.mustReward("n5", name(i), 1, int64(i+2))
	}
	if c.node("n4").store.DirectoryComplete() {
		t.Fatalf("n4's directory is complete though no list of n1, n2 or n3 reached it")
	}
	c.net.Heal()
	c.waitDirectories()
	for i := range players {
		c.mustReward("n5", name(i), 1, int64(i+3))
	}
}

// A creation still under way when a new roster names another arbiter is
// listed to that arbiter: the creator lists its activations with its
// players. Here n1, the player's arbiter among n1 to n3, creates it, and
// its keeper placement is held while n4 and n5 join, n4 becomes the
// arbiter, and every list reaches n4. Once the creation ends, a reward
// entering at n5 (which holds no copy and knows no route) must find the
// player, not have n4 create it again.
func TestCreationUnderWayIsListedToTheNextArbiter(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	old := c.node("n1").store.Roster().Members
	player := ""
	for i := 0; player == ""; i++ {
		p := fmt.Sprintf("late%d", i)
		next := append(append([]wire.NodeID{}, old...), wire.NodeID{Name: "n4"}, wire.NodeID{Name: "n5"})
		if replica.ArbiterOf(p, old).Name == "n1" && replica.ArbiterOf(p, next).Name == "n4" {
			player = p
		}
	}
	isAdopt := func(m wire.Msg) bool { a, ok := m.(*wire.Adopt); return ok && a.Player == player }
	holds := []*replica.Hold{c.net.Hold("n1", "n2", isAdopt), c.net.Hold("n1", "n3", isAdopt)}
	created := make(chan error, 1)
	go func() {
		_, err := c.reward("n1", player, 5)
		created <- err
	}()
	testenv.WaitFor(t, 5*time.Second, "n1's keeper placement to be held", func() bool {
		return holds[0].Waiting()+holds[1].Waiting() > 0
	})
	c.start("n4")
	c.start("n5")
	c.sync()
	c.waitRoster()
	c.waitDirectories()
	for _, h := range holds {
		h.Release()
	}
	if err := <-created; err != nil {
		t.Fatalf("the creation of %s at n1: %v", player, err)
	}
	c.mustReward("n5", player, 1, 6)
}

// createOldPlayers creates players old0 to old(n-1) at n1, with totals 1
// to n, and returns their names by index.
func createOldPlayers(c *cluster, n int) func(int) string {
	name := func(i int) string { return fmt.Sprintf("old%d", i) }
	for i := range n {
		c.mustReward("n1", name(i), i+1, int64(i+1))
	}
	return name
}

// A node that adopts a copy outside the first two in its player's
// placement order (where a node looking for the player asks) tells the
// player's arbiter at once, without waiting for the next roster's lists:
// the arbiter then names it when asked.
func TestAdoptionOutsideTheFirstTwoHintsTheArbiter(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3", "n4", "n5")
	c.waitDirectories()
	names := c.names()
	// A player whose arbiter is not n1 (the owner, below), and a node
	// outside its first two to adopt it.
	var player, arbiter, outside string
	for i := 0; player == ""; i++ {
		p := fmt.Sprintf("hinted%d", i)
		order := replica.PlacementOrder(p, names)
		if order[0] != "n1" && order[1] != "n1" {
			player, arbiter, outside = p, order[0], order[2]
		}
	}
	owner := c.node("n1").ID()
	adopt := &wire.Adopt{Player: player, Owner: owner, Epoch: 1, Placement: 1}
	if _, err := c.node(outside).store.Handle(context.Background(), owner, adopt); err != nil {
		t.Fatalf("adopt %s at %s: %v", player, outside, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the arbiter "+arbiter+" to name "+outside+" as "+player+"'s keeper", func() bool {
		rep, err := c.node(arbiter).store.Handle(context.Background(), c.node("n1").ID(), &wire.Where{Player: player})
		if err != nil {
			return false
		}
		wr := rep.(*wire.WhereReply)
		return wr.Role == wire.RoleNone && wr.Hint == c.node(outside).ID()
	})
}
