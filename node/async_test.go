package node_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/client"
)

// Many callers sharing one client connection to a node that owns none of
// their players: the node forwards their rewards, and the owners apply
// them, with no goroutine waiting at either end (RewardAsync, HandleAsync)
// once the connections are busy. Half the callers name their rewards and
// send each twice, as a client retrying would: the retry answers what the
// first send did. Every reward is applied exactly once, and the totals a
// player's rewards answered are 1, 2, ... in some order.
func TestConcurrentWireRewardsThroughANonOwner(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	players := []string{"p0", "p1", "p2", "p3", "p4", "p5"}
	for i, p := range players {
		owner := []string{"a", "c"}[i%2]
		c.mustReward(owner, p, 0, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.n("b").TransportPort()))
	cl, err := client.DialAddr(ctx, "b@testhost", addr, client.Config{Cookie: testCookie})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	const callers, each = 16, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := map[string][]int64{}
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			for j := range each {
				p := players[(i+j)%len(players)]
				var total int64
				var err error
				if i%2 == 0 {
					total, err = cl.Reward(ctx, p, 1)
				} else {
					key := fmt.Sprintf("caller-%d-%d", i, j)
					if total, err = cl.RewardOnce(ctx, p, "1", key); err == nil {
						var again int64
						if again, err = cl.RewardOnce(ctx, p, "1", key); err == nil && again != total {
							err = fmt.Errorf("the retry of %s answered %d, the first send %d", key, again, total)
						}
					}
				}
				if err != nil {
					errs <- fmt.Errorf("caller %d, reward %d of %s: %w", i, j, p, err)
					return
				}
				mu.Lock()
				answered[p] = append(answered[p], total)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, p := range players {
		totals := answered[p]
		slices.Sort(totals)
		for k, total := range totals {
			if total != int64(k+1) {
				t.Fatalf("%s: the %d rewards answered %v; want 1 to %d, each once", p, len(totals), totals, len(totals))
			}
		}
		c.mustReward([]string{"a", "c"}[i%2], p, 0, int64(len(totals)))
	}
}
