package bench

import (
	"bufio"
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// The bare wire forwards and acks, for a lone caller and for many at
// once, and every goroutine it starts stops with its connections.
func TestBareWire(t *testing.T) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	listen := func(bk *bareBackup) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var conns []net.Conn
		t.Cleanup(func() {
			ln.Close()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
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
				wg.Go(func() { bareServeConn(c, st, bk) })
			}
		})
		return ln.Addr().String()
	}
	addrB := listen(nil)
	c, err := net.Dial("tcp", addrB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	bk := &bareBackup{bw: bufio.NewWriterSize(c, bareBuf), br: bufio.NewReaderSize(c, bareBuf), pending: map[uint64]barePending{}}
	wg.Go(func() { bk.readLoop() })
	addrA := listen(bk)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, lone := range []bool{true, false} {
		bc, err := dialBare(ctx, addrA, lone)
		if err != nil {
			t.Fatal(err)
		}
		callers := 16
		if lone {
			callers = 1
		}
		var cwg sync.WaitGroup
		errs := make(chan error, callers)
		for range callers {
			cwg.Go(func() {
				for range 200 {
					if err := bc.reward(ctx, "p", 1); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		cwg.Wait()
		bc.Close()
		close(errs)
		for err := range errs {
			t.Fatalf("lone %v: %v", lone, err)
		}
	}
	bk.mu.Lock()
	defer bk.mu.Unlock()
	if len(bk.pending) != 0 {
		t.Fatalf("%d forwards never acked", len(bk.pending))
	}
}
