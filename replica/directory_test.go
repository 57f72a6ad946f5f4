package replica_test

import (
	"fmt"
	"testing"

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
	name := func(i int) string { return fmt.Sprintf("old%d", i) }
	for i := range players {
		c.mustReward("n1", name(i), i+1, int64(i+1))
	}
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
	name := func(i int) string { return fmt.Sprintf("old%d", i) }
	for i := range players {
		c.mustReward("n1", name(i), i+1, int64(i+1))
	}
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
