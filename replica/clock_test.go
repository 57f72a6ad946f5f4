package replica_test

import (
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/replica"
)

// The repair loop, driven tick by tick on a manual clock: a healthy idle
// node does nothing until its backstop pass, a node in a minority checks
// again on every tick.
func TestRepairLoopOnTheClock(t *testing.T) {
	clk := replica.NewManualClock()
	c := newClockedCluster(t, clk, "n1", "n2", "n3")
	n1 := c.node("n1").store
	passes := func() uint64 { return n1.Stats().Repairs }
	tick := func(n int) {
		t.Helper()
		for range n {
			if err := clk.Advance(time.Second, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The membership change ran a pass at once (no clock needed).
	testenv.WaitFor(t, 5*time.Second, "the first pass", func() bool { return passes() >= 1 })

	// Healthy and idle: a tick finds nothing to do. Once Advance has
	// handed over the 11th tick, the loop is done with the 10th.
	base := passes()
	tick(11)
	if got := passes(); got != base {
		t.Fatalf("an idle healthy node ran %d passes in 10 ticks, want none", got-base)
	}

	// In a minority it checks again on every tick.
	c.net.Partition([]string{"n1"}, []string{"n2", "n3"})
	c.view("n1", "n1")
	testenv.WaitFor(t, 5*time.Second, "n1 to see it lost the majority", func() bool { return !n1.Stats().Quorate })
	tick(1) // the loop is done with the change's own pass
	base = passes()
	tick(6)
	testenv.WaitFor(t, 5*time.Second, "a pass per tick", func() bool { return passes() == base+6 })
	if _, err := c.reward("n1", "p", 1); err == nil {
		t.Fatalf("a minority node acknowledged a reward")
	}

	// Healed: serving again, and idle again until the backstop pass,
	// every fullScanEvery ticks (300).
	c.net.Heal()
	c.sync()
	testenv.WaitFor(t, 5*time.Second, "n1 to serve again", func() bool { return n1.Stats().Quorate })
	tick(1)
	base = passes()
	tick(299)
	if got := passes(); got != base {
		t.Fatalf("an idle node ran %d passes before its backstop", got-base)
	}
	tick(1)
	testenv.WaitFor(t, 5*time.Second, "the backstop pass", func() bool { return passes() == base+1 })
}
