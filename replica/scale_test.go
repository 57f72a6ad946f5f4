package replica_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
)

// tally counts the messages the nodes send about players, by kind, and
// apart the Registers that list players to their arbiters after a roster
// change.
type tally struct {
	mu        sync.Mutex
	byKind    map[wire.Kind]int
	total     int
	registers int
}

func (c *cluster) tally() *tally {
	t := &tally{byKind: map[wire.Kind]int{}}
	c.net.Tap(func(_, _ string, m wire.Msg) {
		if _, ok := m.(*wire.Register); ok {
			t.mu.Lock()
			t.registers++
			t.mu.Unlock()
			return
		}
		if replica.PlayerOf(m) == "" {
			return // membership, roster and liveness traffic: not per player
		}
		t.mu.Lock()
		t.byKind[m.Kind()]++
		t.total++
		t.mu.Unlock()
	})
	return t
}

// take returns the count so far and starts again from zero.
func (t *tally) take() (int, map[wire.Kind]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, kinds := t.total, t.byKind
	t.total, t.byKind = 0, map[wire.Kind]int{}
	return n, kinds
}

// perOp is what one kind of operation cost, in messages, at one size.
type perOp struct{ creation, reward, firstTouch, failover, keeperLoss float64 }

// The messages a player's operations cost, counted in an in-memory cluster
// of 3, 6, 12 and 24 nodes. A creation, a reward, a first touch (a node
// with no route to the player), a failover and the loss of a keeper must
// cost the same at every size: the arbiter's directory vouches that a
// player is new (directory.go); the keeper sits first or second in the
// player's placement order, knows the owner, and knows whether it holds
// the owner's current copy (Store.locate, keeperCopy.current); an owner
// whose keeper the roster removed places a new one without asking anyone
// else (primary.ensureKeeper). What a new roster costs in Register
// messages is logged.
func TestMessagesPerOperationAsTheClusterGrows(t *testing.T) {
	const players = 8
	sizes := []int{3, 6, 12, 24}
	got := map[int]perOp{}
	for _, size := range sizes {
		t.Run(fmt.Sprintf("nodes=%d", size), func(t *testing.T) {
			g := messagesPerOp(t, size, players)
			g.keeperLoss = keeperLossCost(t, size, players)
			got[size] = g
		})
	}
	for _, size := range sizes {
		g := got[size]
		t.Logf("%2d nodes: creation %.1f, reward %.1f, first touch %.1f, failover %.1f, keeper lost %.1f messages", size, g.creation, g.reward, g.firstTouch, g.failover, g.keeperLoss)
	}
}

// settledCluster starts size nodes named prefix01, prefix02... and waits
// until every arbiter has every member's list of players.
func settledCluster(t *testing.T, prefix string, size int) ([]string, *cluster) {
	names := make([]string, size)
	for i := range names {
		names[i] = fmt.Sprintf("%s%02d", prefix, i+1)
	}
	c := newCluster(t, names...)
	c.waitDirectories()
	return names, c
}

func messagesPerOp(t *testing.T, size, players int) perOp {
	names, c := settledCluster(t, "n", size)
	count := c.tally()
	var out perOp
	var victims []string
	for i := range players {
		p := fmt.Sprintf("player%d", i)
		creator := names[0]

		count.take()
		c.mustReward(creator, p, 1, 1)
		n, kinds := count.take()
		out.creation += float64(n) / float64(players)
		// The arbiter asked whether the player exists and asked to create
		// it (or, if the creator is the arbiter, a keeper placed), and the
		// reward replicated: 3 at most.
		if n > 3 {
			t.Errorf("%s: its creation cost %d messages (%v) in %d nodes, want at most 3", p, n, kinds, size)
		}

		c.mustReward(creator, p, 1, 2)
		n, kinds = count.take()
		out.reward += float64(n) / float64(players)
		if n > 1 {
			t.Errorf("%s: a reward at its owner cost %d messages (%v), want 1 (the update to its keeper)", p, n, kinds)
		}

		owners, keepers := c.holders(p)
		if len(owners) != 1 || len(keepers) != 1 {
			t.Fatalf("%s: primaries on %v, copies on %v", p, owners, keepers)
		}
		stranger := ""
		for _, name := range names {
			if name != owners[0] && name != keepers[0] {
				stranger = name
				break
			}
		}
		c.mustReward(stranger, p, 1, 3)
		n, kinds = count.take()
		out.firstTouch += float64(n) / float64(players)
		// At most two nodes asked for the owner, the owner asked, the
		// reward forwarded and replicated: 5, at any size.
		if n > 5 {
			t.Errorf("%s: the first reward at %s, which knew no route, cost %d messages (%v) in %d nodes, want at most 5", p, stranger, n, kinds, size)
		}
		victims = append(victims, owners[0])
	}

	out.failover = failoverCost(t, c, size, players, victims)
	return out
}

// failoverCost kills the node owning every player (victims, by player) and
// returns the messages per player until each has a primary and a keeper
// again, a reward for each at another node included.
func failoverCost(t *testing.T, c *cluster, size, players int, victims []string) float64 {
	// Every player was created at names[0] and so is owned there: one
	// kill fails them all over at once.
	names := c.names()
	owner := names[0]
	for _, v := range victims {
		if v != owner {
			t.Fatalf("players are owned by %v, want all by %s", victims, owner)
		}
	}
	count := c.tally()
	c.kill(owner)
	c.sync()
	c.waitRemoved(owner, names[1:]...)
	for i := range players {
		p := fmt.Sprintf("player%d", i)
		c.mustReward(names[1], p, 1, 4)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.names() {
				t.Logf("%s: %s; copies %s", n, c.node(n).store.Describe(), c.node(n).store.DebugCopies())
			}
			for i := range players {
				p := fmt.Sprintf("player%d", i)
				o, k := c.holders(p)
				t.Logf("%s: primaries %v keepers %v", p, o, k)
			}
			c.logEvents()
		}
	})
	c.waitTwoCopies(players, "every player to have a primary and a keeper again")
	n, kinds := count.take()
	t.Logf("%d nodes: failover of %d players cost %d messages: %v", size, players, n, kinds)
	c.waitDirectories()
	count.mu.Lock()
	t.Logf("%d nodes: the new roster cost %d Register messages (a node tells each other one: %d)", size, count.registers, (size-1)*(size-2))
	count.mu.Unlock()
	failover := float64(n) / float64(players)
	// Each keeper holds its owner's current copy (the owner replicated to
	// it), so it is promoted or claimed without a question to every
	// member. Per player: the Adopt of the new keeper (a second if the
	// first candidate was busy with the same player), the Where that
	// confirms it with its owner, the node a reward reached asking the
	// first two in placement order and perhaps again after a busy Claim,
	// and the reward forwarded and replicated: at most 8, however many
	// nodes.
	if failover > 8 {
		t.Errorf("a failover cost %.1f messages per player in %d nodes (%v), want at most 8", failover, size, kinds)
	}
	return failover
}

// keeperLossCost creates players at one node of a new cluster, kills the
// node keeping the most of them, and returns the messages per player until
// each has a keeper again. The owner places a new keeper and asks no one
// else, at any size: an Adopt (again if a candidate was busy), and the
// Where in which the new keeper's repair confirms that the owner runs the
// primary, unless a Replicate did first.
func keeperLossCost(t *testing.T, size, players int) float64 {
	names, c := settledCluster(t, "k", size)
	kept := map[string]int{}
	for i := range players {
		p := fmt.Sprintf("player%d", i)
		c.mustReward(names[0], p, 1, 1)
		if _, k := c.holders(p); len(k) == 1 {
			kept[k[0]]++
		}
	}
	victim := ""
	for node, n := range kept {
		if victim == "" || n > kept[victim] || (n == kept[victim] && node < victim) {
			victim = node
		}
	}
	if victim == "" || victim == names[0] {
		t.Fatalf("players created at %s are kept on %v", names[0], kept)
	}
	count := c.tally()
	c.kill(victim)
	c.sync()
	c.waitTwoCopies(players, "every player to have a primary and a keeper again after "+victim+" died")
	n, kinds := count.take()
	t.Logf("%d nodes: the loss of %s, keeper of %d players, cost %d messages: %v", size, victim, kept[victim], n, kinds)
	perPlayer := float64(n) / float64(kept[victim])
	// Adopts are retried while a candidate is busy (the roster change
	// under way): a few more at times, at any size. Where is the question
	// that grew with the cluster (to every member); it must stay at the
	// new keeper's one.
	if wheres := float64(kinds[wire.KindWhere]) / float64(kept[victim]); perPlayer > 4 || wheres > 1 {
		t.Errorf("the loss of a keeper cost %.1f messages per player it kept in %d nodes (%v), want at most 4, with at most one Where", perPlayer, size, kinds)
	}
	return perPlayer
}

// waitTwoCopies waits until each of player0 to player(n-1) has one primary
// and one keeper copy, and no other copy.
func (c *cluster) waitTwoCopies(n int, what string) {
	c.t.Helper()
	testenv.WaitFor(c.t, 10*time.Second, what, func() bool {
		for i := range n {
			owners, keepers := c.holders(fmt.Sprintf("player%d", i))
			if len(owners) != 1 || len(keepers) != 1 {
				return false
			}
		}
		return true
	})
}

// A cluster grows by joins, and a node that joins may come first or second
// in a player's placement order, ahead of its keeper, which is where a node
// looking for the player asks. Grown from 3 nodes to 12 one at a time,
// with the players created at 3, a first touch and a failover still cost
// the same few messages: the arbiter's directory names each player's
// keeper (WhereReply.Hint). The same grown to 24.
func TestMessagesAfterTheClusterGrew(t *testing.T) {
	for _, size := range []int{12, 24} {
		t.Run(fmt.Sprintf("nodes=%d", size), func(t *testing.T) { messagesAfterGrowth(t, size) })
	}
}

func messagesAfterGrowth(t *testing.T, size int) {
	const players = 16
	names, c := settledCluster(t, "g", 3)
	for i := range players {
		c.mustReward(names[0], fmt.Sprintf("player%d", i), 1, 1)
	}
	for i := len(names) + 1; i <= size; i++ {
		c.start(fmt.Sprintf("g%02d", i))
		c.sync()
		c.waitRoster()
	}
	c.waitDirectories()
	names = c.names()

	count := c.tally()
	pushedDown, total := 0, 0
	var victims []string
	for i := range players {
		p := fmt.Sprintf("player%d", i)
		owners, keepers := c.holders(p)
		if len(owners) != 1 || len(keepers) != 1 {
			t.Fatalf("%s: primaries on %v, copies on %v", p, owners, keepers)
		}
		victims = append(victims, owners[0])
		if !c.amongFirstTwo(p, keepers[0]) {
			pushedDown++
		}
		stranger := ""
		for _, name := range names {
			if name != owners[0] && name != keepers[0] {
				stranger = name
				break
			}
		}
		count.take()
		c.mustReward(stranger, p, 1, 2)
		n, kinds := count.take()
		total += n
		// The arbiter asked, the keeper it names asked, the owner
		// asked, the reward forwarded and replicated.
		if n > 5 {
			t.Errorf("%s: the first reward at %s, which knew no route, cost %d messages (%v) in %d nodes grown from 3, want at most 5", p, stranger, n, kinds, size)
		}
	}
	t.Logf("%d nodes grown from 3: %d of %d keepers no longer first or second in their player's order; first touch %.1f messages per player", size, pushedDown, players, float64(total)/players)
	if pushedDown == 0 {
		t.Fatalf("no keeper was pushed down the order by the joins: the test shows nothing")
	}
	for i, owner := range victims {
		c.mustReward(owner, fmt.Sprintf("player%d", i), 1, 3) // where failoverCost takes over
	}
	failover := failoverCost(t, c, size, players, victims)
	t.Logf("%d nodes grown from 3: failover %.1f messages per player", size, failover)
}
