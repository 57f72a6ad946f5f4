// Command floordrv drives a floor server (`appnode bench serve-floor`) or a
// node's transport port with callers that each send one reward at a time
// over one shared transport.Client, and prints throughput and latency.
// scripts/floor-ab.sh runs it beside two floor servers to compare builds
// of the transport, and scripts/node-ab.sh beside two nodes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/transport"
	"github.com/appnode/appnode/wire"
)

func main() {
	addr := flag.String("addr", "", "the floor server's transport address")
	callers := flag.Int("c", 1, "callers, one reward in flight each")
	dur := flag.Duration("d", 5*time.Second, "how long to measure")
	flag.Parse()
	if err := run(*addr, *callers, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "floordrv:", err)
		os.Exit(1)
	}
}

func run(addr string, callers int, dur time.Duration) error {
	ck, err := cookie.New(os.Getenv(cookie.EnvCookie))
	if err != nil {
		return err
	}
	cl, err := transport.DialClient(context.Background(), addr, "floordrv", ck)
	if err != nil {
		return err
	}
	defer cl.Close()
	var mu sync.Mutex
	var lats []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	end := time.Now().Add(dur)
	for range callers {
		wg.Go(func() {
			var mine []time.Duration
			for i := 0; time.Now().Before(end); i++ {
				start := time.Now()
				// As the bench's load generator calls: no deadline per call
				// in ctx, the connection's own of 10 s.
				_, err := cl.CallWithin(context.Background(), &wire.Reward{Player: fmt.Sprintf("player%d", i%1000), Points: 1}, 10*time.Second)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if len(lats) == 0 {
		return fmt.Errorf("no call finished")
	}
	slices.Sort(lats)
	us := func(q float64) int64 { return lats[int(q*float64(len(lats)-1))].Microseconds() }
	fmt.Printf("ops/s %.0f p50 %d p99 %d n %d\n", float64(len(lats))/dur.Seconds(), us(0.5), us(0.99), len(lats))
	return nil
}
