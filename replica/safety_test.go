package replica_test

import (
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

// Issue 11's scenarios about who decides membership: each failed on the
// code where a refused connection was proof of death and growth was taken
// locally.

// A live node that refuses one peer's connections (a one-way firewall
// REJECT) is not taken for dead: the others reach it, so the roster keeps
// it, and every player stays where it is.
func TestOneWayRefusalIsNoDeath(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p1", 5, 5)
	c.net.Refuse("n2", "n1")
	n1 := c.node("n1").ID()
	n2 := c.node("n2").store
	n2.LinkDown(n1) // its link broke; redials are refused
	// n2 asks the others, who reach n1: the suspicion is dismissed, and
	// no roster anywhere loses n1.
	testenv.WaitFor(t, 5*time.Second, "n2's suspicion of n1 to be dismissed", func() bool { return n2.Stats().Dismissed >= 1 })
	for _, at := range []string{"n1", "n2", "n3"} {
		if !isMemberAt(c, at, n1) {
			t.Fatalf("%s removed n1, which is alive and reached by n3", at)
		}
	}
	c.mustReward("n1", "p1", 1, 6)
	c.mustReward("n3", "p1", 1, 7)
	if o, _ := c.where("n3", "p1"); o != "n1" {
		t.Fatalf("p1 moved to %s although its owner n1 lives", o)
	}
}

func isMemberAt(c *cluster, at string, id wire.NodeID) bool {
	for _, m := range c.node(at).store.Roster().Members {
		if m == id {
			return true
		}
	}
	return false
}

// A node cut off by REJECT rules both ways is removed by the majority,
// which serves its players from their keepers; the node itself, alone,
// removes nobody and acknowledges nothing; when the rules go, it learns it
// was removed, comes back clean, and no total goes back.
func TestRefusedMinorityCannotServeAndRejoinsClean(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	for _, p := range []string{"p1", "p2", "p3"} {
		c.mustReward("n1", p, 10, 10)
	}
	old := c.node("n1").ID()
	for _, o := range []string{"n2", "n3"} {
		c.net.Refuse("n1", o)
		c.net.Refuse(o, "n1")
	}
	c.view("n1", "n1")
	c.view("n2", "n2", "n3")
	c.view("n3", "n2", "n3")
	c.waitRemoved("n1", "n2", "n3")
	for _, p := range []string{"p1", "p2", "p3"} {
		c.mustReward("n2", p, 1, 11)
	}
	testenv.WaitFor(t, 5*time.Second, "n1 to refuse for want of a majority", func() bool {
		return code(c.node("n1").store.Serving()) == wire.CodeNoQuorum
	})
	if _, err := c.reward("n1", "p1", 100); wire.OutcomeOf(err) != wire.OutcomeNotApplied {
		t.Fatalf("n1, cut off, answered a reward with %v; want a refusal that changed nothing", err)
	}
	if len(c.node("n1").store.Roster().Members) != 3 {
		t.Fatalf("n1, alone, changed its roster: %v", c.node("n1").store.Roster().Members)
	}
	c.net.Heal()
	c.sync()
	testenv.WaitFor(t, 5*time.Second, "n1 to rejoin as a new incarnation", func() bool {
		return c.node("n1").store.Self() != old
	})
	c.sync()
	c.waitRoster()
	for _, p := range []string{"p1", "p2", "p3"} {
		for _, at := range c.names() {
			c.mustReward(at, p, 0, 11)
		}
	}
}

// Growth is agreed by the membership before it: two nodes that join
// through n1 just as n1 is cut off from the other two do not give n1's
// side a majority of its own, larger membership.
func TestGrowthNeedsTheOldMajority(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n2", "p", 5, 5)
	c.net.Partition([]string{"n1", "n4", "n5"}, []string{"n2", "n3"})
	c.start("n4")
	c.start("n5")
	c.view("n1", "n1", "n4", "n5")
	c.view("n4", "n1", "n4", "n5")
	c.view("n5", "n1", "n4", "n5")
	c.view("n2", "n2", "n3")
	c.view("n3", "n2", "n3")
	c.waitRemoved("n1", "n2", "n3")
	c.mustReward("n3", "p", 1, 6)
	// However long n1's side tries, it admits no one and serves nothing.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if r := c.node("n1").store.Roster(); len(r.Members) != 3 {
			t.Fatalf("n1, cut off with two newcomers, changed the roster alone: %v", r.Members)
		}
		for _, at := range []string{"n1", "n4", "n5"} {
			if _, err := c.reward(at, "p", 100); err == nil {
				t.Fatalf("%s, on the side without the old majority, acknowledged a reward", at)
			}
		}
	}
}

// A member whose status flaps faster than a confirm round does not keep
// the others refusing: a round counts whoever answered, whatever changed
// meanwhile, and ends once a majority has.
func TestFlappingMemberDoesNotStopTheCluster(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 0, 0)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				c.view("n1", "n1", "n2")
			} else {
				c.view("n1", "n1", "n2", "n3")
			}
		}
	}()
	defer func() { close(stop); <-done }()
	var total int64
	for range 100 {
		got, err := c.reward("n1", "p", 1)
		if err != nil {
			t.Fatalf("while n3 flaps in n1's view, reward at n1 failed: %v", err)
		}
		total++
		if got != total {
			t.Fatalf("reward answered %d, want %d", got, total)
		}
	}
}
