package node_test

import (
	"fmt"
	"math"
	"runtime/debug"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/node"
)

// TestMemoryLimitAtRest: a node that owns its process sets a soft memory
// limit once it is at rest (so that a million idle players do not cost
// twice their size), lifts it as soon as players arrive (so load and
// failover run with Go's usual pacing), sets it again at rest, and lifts
// it when it stops.
func TestMemoryLimitAtRest(t *testing.T) {
	prev := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	limit := func() int64 { return debug.SetMemoryLimit(-1) }

	c := newClusterWith(t, func(short string, cfg *node.Config) { cfg.OwnsProcess = short == "a" }, "a", "b")
	for i := range 100 {
		c.mustReward("a", fmt.Sprintf("p%d", i), 1, 1)
	}
	testenv.WaitFor(t, 15*time.Second, "the node at rest to set a memory limit", func() bool { return limit() != math.MaxInt64 })

	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := c.reward("a", fmt.Sprintf("q%d", i), 1); err != nil {
				done <- err
				return
			}
		}
	}()
	testenv.WaitFor(t, 5*time.Second, "the limit to be lifted while players arrive", func() bool { return limit() == math.MaxInt64 })
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "the limit to be set again at rest", func() bool { return limit() != math.MaxInt64 })

	c.n("a").Close()
	if l := limit(); l != math.MaxInt64 {
		t.Fatalf("a stopped node left a memory limit of %d bytes", l)
	}
}
