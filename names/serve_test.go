package names

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// A name service process of its own (Erlang's epmd): nodes with Spawn never
// serve it themselves, they start it when none answers and start it again
// if it dies; it exits once no node has been registered for a while.
func TestSpawnedService(t *testing.T) {
	h := newHarness(t)
	var (
		mu      sync.Mutex
		stopSvc context.CancelFunc
		spawns  int
		exited  = make(chan error, 8)
	)
	spawn := func() error {
		mu.Lock()
		defer mu.Unlock()
		spawns++
		ctx, cancel := context.WithCancel(context.Background())
		stopSvc = cancel
		go func() { exited <- Serve(ctx, "127.0.0.1", h.port, 300*time.Millisecond, t.Logf) }()
		return nil
	}
	register := func(name string, boot uint64) *Registration {
		cfg := h.config(name, boot)
		cfg.Spawn = spawn
		r, err := Register(context.Background(), cfg)
		if err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		return r
	}
	a := register("a@host", 1)
	b := register("b@host", 2)
	if a.Serving() || b.Serving() {
		t.Fatal("a node serves the names itself although it can spawn the service")
	}
	eventually(t, "a resolvable", resolves(h, "a@host", 1))
	eventually(t, "b resolvable", resolves(h, "b@host", 2))

	// The service dies (kill -9 of epmd): the nodes start another and
	// register again.
	mu.Lock()
	stopSvc()
	mu.Unlock()
	eventually(t, "a resolvable after the service restarted", resolves(h, "a@host", 1))
	eventually(t, "b resolvable after the service restarted", resolves(h, "b@host", 2))

	// Racing spawns: the extra services see the port taken and go.
	a.Close()
	b.Close()
	deadline := time.After(10 * time.Second)
	for {
		mu.Lock()
		n := spawns
		mu.Unlock()
		running := n
		for running > 0 {
			select {
			case err := <-exited:
				if err != nil && !errors.Is(err, ErrServing) {
					t.Fatalf("name service exited with %v", err)
				}
				running--
			case <-deadline:
				t.Fatalf("%d of %d name services still running with no node registered", running, n)
			}
		}
		mu.Lock()
		done := spawns == n
		mu.Unlock()
		if done {
			break
		}
	}
	if spawns < 2 {
		t.Fatalf("the service was started %d times, want at least twice (once more after it died)", spawns)
	}
}
