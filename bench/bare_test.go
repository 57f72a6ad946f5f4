package bench

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// bareServer runs a bare server at listen until the test ends, as
// newBareRoute(backups, owners, self) has it forward; it returns its
// address and store.
func bareServer(t *testing.T, wg *sync.WaitGroup, listen string, backups, owners []string, self int) (string, *bareStore, *bareRoute) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	route := newBareRoute(backups, owners, self, func(error) {})
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		route.close()
	})
	st := &bareStore{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { bareServeConn(c, st, route) })
		}
	})
	return ln.Addr().String(), st, route
}

// rewardBare sends n rewards of player to addr from callers at once (one:
// a lone caller).
func rewardBare(t *testing.T, addr string, callers, n int, player func(caller, i int) string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bc, err := dialBare(ctx, addr, callers == 1)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	var cwg sync.WaitGroup
	errs := make(chan error, callers)
	for c := range callers {
		cwg.Go(func() {
			for i := range n {
				if err := bc.reward(ctx, player(c, i), 1, 5*time.Second); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	cwg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%d callers: %v", callers, err)
	}
}

func pending(r *bareRoute) int {
	n := 0
	for _, l := range r.links {
		if bk := l.bk; bk != nil {
			bk.mu.Lock()
			n += len(bk.pending)
			bk.mu.Unlock()
		}
	}
	return n
}

// The bare wire forwards and acks, for a lone caller and for many at
// once, and every goroutine it starts stops with its connections.
func TestBareWire(t *testing.T) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	addrB, stB, _ := bareServer(t, &wg, "127.0.0.1:0", nil, nil, 0)
	addrA, stA, route := bareServer(t, &wg, "127.0.0.1:0", []string{addrB}, nil, 0)
	for _, callers := range []int{1, 16} {
		rewardBare(t, addrA, callers, 200, func(int, int) string { return "p" })
	}
	if n := pending(route); n != 0 {
		t.Fatalf("%d forwards never acked", n)
	}
	if a, b := stA.add("p", 0), stB.add("p", 0); a != 17*200 || b != a {
		t.Fatalf("bare-a holds %d, bare-b %d; want %d on both", a, b, 17*200)
	}
}

// In a bare mesh each reward, whichever server it is sent to, is kept by
// its player's owner and by exactly one other server, the one the player
// hashes to among the others: a forwarded copy is not forwarded again.
func TestBareMesh(t *testing.T) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	const size = 3
	ports := make([]net.Listener, 0, size)
	addrs := make([]string, size)
	for i := range size {
		// Reserve each address, so that every server can be told the
		// others' before it starts.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, ln)
		addrs[i] = ln.Addr().String()
	}
	for _, ln := range ports {
		ln.Close()
	}
	stores := make([]*bareStore, size)
	for i := range size {
		others := append(slices.Clone(addrs[:i]), addrs[i+1:]...)
		_, stores[i], _ = bareServer(t, &wg, addrs[i], others, addrs, i)
	}
	players := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for i, p := range players {
		for _, addr := range addrs {
			rewardBare(t, addr, 4, i+1, func(int, int) string { return p })
		}
	}
	for i, p := range players {
		holders := 0
		for _, st := range stores {
			switch n := st.add(p, 0); n {
			case 0:
			case int64(size * 4 * (i + 1)):
				holders++
			default:
				t.Fatalf("%s: a server holds %d, want 0 or %d", p, n, size*4*(i+1))
			}
		}
		if holders != 2 {
			t.Fatalf("%s is held by %d servers, want its owner and one keeper", p, holders)
		}
	}
}
