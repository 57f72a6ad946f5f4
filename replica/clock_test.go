package replica_test

import (
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
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
	// The change's own pass (the only one that can run before the clock
	// moves) confirms the loss: until then n1 answers "busy".
	c.net.Partition([]string{"n1"}, []string{"n2", "n3"})
	c.view("n1", "n1")
	testenv.WaitFor(t, 5*time.Second, "n1 to confirm it lost the majority", func() bool {
		return code(n1.Serving()) == wire.CodeNoQuorum
	})
	// A tick handed over may still be in its pass when Advance returns:
	// count from before the ticks, and allow for that one.
	base = passes()
	tick(6)
	testenv.WaitFor(t, 5*time.Second, "a pass per tick", func() bool { return passes() >= base+6 })
	if got := passes(); got > base+7 {
		t.Fatalf("%d passes for 6 ticks in a minority, want one per tick", got-base)
	}

	// Healed: serving again, and idle again until the backstop pass, once
	// every fullScanEvery ticks (300) since the last pass.
	c.net.Heal()
	c.sync()
	testenv.WaitFor(t, 5*time.Second, "n1 to serve again", func() bool { return n1.Serving() == nil })
	tick(2) // the healing pass is over once the second tick is handed over
	base = passes()
	tick(290)
	if got := passes(); got != base {
		t.Fatalf("an idle node ran %d passes before its backstop", got-base)
	}
	tick(20)
	testenv.WaitFor(t, 5*time.Second, "the backstop pass", func() bool { return passes() >= base+1 })
	if got := passes(); got != base+1 {
		t.Fatalf("%d passes at the backstop, want 1", got-base)
	}
}
