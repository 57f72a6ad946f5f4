package transport

import (
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/wire"
)

// startSender runs a sender over one end of a pipe and returns it with
// the other end and the error its writer goroutine ends with.
func startSender(t *testing.T, timeout time.Duration) (*sender, net.Conn, <-chan error) {
	t.Helper()
	a, b := net.Pipe()
	s := newSender(a, wire.NewFrameWriter(a), timeout)
	errc := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		errc <- s.run()
		close(finished)
	}()
	t.Cleanup(func() {
		s.stop()
		a.Close()
		b.Close()
		<-finished
	})
	return s, b, errc
}

// A caller that writes its frame itself (the link was idle) is not held
// past its own deadline by a peer that reads nothing, even though the
// link's write timeout is far longer; the link is then failed, and
// nothing more is written to it.
func TestCallerWriteCutAtItsDeadline(t *testing.T) {
	s, _, failed := startSender(t, time.Minute) // the pipe's far end reads nothing
	returned := make(chan struct{})
	go func() {
		s.send(1, &wire.Ping{}, true, time.Now().Add(100*time.Millisecond))
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		t.Fatal("a caller's write outlived its deadline: it waited on the link's write timeout")
	}
	select {
	case err := <-failed:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the writer ended with %v, want a write deadline error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the link was not failed after a write was cut off mid-frame")
	}
	// The stream may end mid-frame now: a later caller must not write
	// after it (here it would block for the link's whole timeout).
	again := make(chan struct{})
	go func() {
		s.send(2, &wire.Ping{}, true, time.Time{})
		close(again)
	}()
	select {
	case <-again:
	case <-time.After(20 * time.Second):
		t.Fatal("a caller wrote to a link whose last write had failed")
	}
}

// Frames sent at once by callers that write themselves (the link looked
// free) and by callers that leave it to the writer goroutine all arrive:
// none is left in the queue when one writer hands over to the next. Each
// round ends only when its frames are in, so a frame stranded until some
// later send would stall its round.
func TestEveryFrameGoesOut(t *testing.T) {
	s, peer, _ := startSender(t, 10*time.Second)
	got := make(chan uint64, 64)
	go func() {
		fr := wire.NewFrameReader(peer)
		for {
			_, id, _, err := fr.ReadFrame()
			if err != nil {
				return
			}
			got <- id
		}
	}()
	const rounds, senders = 300, 8
	next := uint64(0)
	for r := range rounds {
		var wg sync.WaitGroup
		for g := range senders {
			next++
			wg.Add(1)
			go func(id uint64) {
				defer wg.Done()
				s.send(id, &wire.Ping{}, g != 0 || r%2 == 0, time.Time{})
			}(next)
		}
		wg.Wait()
		for range senders {
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: a frame was left in the queue", r)
			}
		}
	}
}
