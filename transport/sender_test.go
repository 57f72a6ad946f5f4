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

// readIDs reads frames from peer until it is closed, passing on their ids.
func readIDs(peer net.Conn, buffer int) <-chan uint64 {
	got := make(chan uint64, buffer)
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
	return got
}

// A caller that writes its frame itself (the link was idle) is not held
// past its own deadline by a peer that reads nothing, even though the
// link's write timeout is far longer. Its giving up does not break the
// link: the writer goroutine finishes the frame, so when the peer reads
// again it gets that frame whole and the ones after it.
func TestCallerWriteCutAtItsDeadline(t *testing.T) {
	s, peer, failed := startSender(t, time.Minute) // the pipe's far end reads nothing yet
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
	// A pipe has no buffer: this write waits for the reads below.
	sent := make(chan struct{})
	go func() {
		s.send(2, &wire.Ping{}, true, time.Time{})
		close(sent)
	}()
	fr := wire.NewFrameReader(peer)
	for want := uint64(1); want <= 2; want++ {
		if err := peer.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
			t.Fatal(err)
		}
		k, id, _, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v (the link broke when a caller gave up)", want, err)
		}
		if k != wire.KindPing || id != want {
			t.Fatalf("got %s #%d, want ping #%d", k, id, want)
		}
	}
	<-sent
	select {
	case err := <-failed:
		t.Fatalf("the link failed: %v", err)
	default:
	}
}

// A caller whose deadline passed before its write began (it lost the CPU
// after checking it) does not fail the link either: the frame still goes
// out, and nothing else is lost.
func TestCallerPastItsDeadlineKeepsTheLink(t *testing.T) {
	s, peer, failed := startSender(t, time.Minute)
	got := readIDs(peer, 2)
	s.send(1, &wire.Ping{}, true, time.Now().Add(-time.Millisecond))
	s.send(2, &wire.Ping{}, true, time.Time{})
	for want := uint64(1); want <= 2; want++ {
		select {
		case id := <-got:
			if id != want {
				t.Fatalf("got frame %d, want %d", id, want)
			}
		case err := <-failed:
			t.Fatalf("the link failed: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatalf("frame %d never arrived", want)
		}
	}
}

// A peer that reads nothing for the link's whole write timeout does break
// the link, after a caller gave up on its own shorter deadline; nothing
// more is written to it.
func TestLinkFailsAtItsOwnTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s, _, failed := startSender(t, timeout) // the far end never reads
	s.send(1, &wire.Ping{}, true, time.Now().Add(50*time.Millisecond))
	select {
	case err := <-failed:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the writer ended with %v, want a write deadline error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a link whose peer reads nothing was never failed")
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
	got := readIDs(peer, 64)
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

// deadlineConn records, for each write, the write deadline in force and
// when the write began; its writes always succeed at once.
type deadlineConn struct {
	net.Conn
	mu       sync.Mutex
	deadline time.Time
	writes   []deadlineWrite
}

type deadlineWrite struct{ at, deadline time.Time }

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return nil
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, deadlineWrite{time.Now(), c.deadline})
	return len(p), nil
}

// Every write, a caller's on its own goroutine or the writer's, has a
// deadline no later than the caller's (or, for the writer, than the
// link's write timeout from when it began) and no earlier than three
// quarters of that time from when it began.
func TestWriteDeadlineBounds(t *testing.T) {
	const timeout = 400 * time.Millisecond
	conn := &deadlineConn{}
	s := newSender(conn, wire.NewFrameWriter(conn), timeout)
	var allowed []time.Duration // each write's time, in order
	for i := range 200 {
		var until time.Time
		d := timeout
		if i%3 != 0 {
			// Callers with less time than the link allows, and with
			// more, in turn.
			d = []time.Duration{50 * time.Millisecond, 2 * timeout}[i%2]
			until = time.Now().Add(d)
		}
		s.send(uint64(i+1), &wire.Ping{}, true, until)
		allowed = append(allowed, min(d, timeout))
	}
	if len(conn.writes) != len(allowed) {
		t.Fatalf("%d writes for %d frames sent alone", len(conn.writes), len(allowed))
	}
	for i, w := range conn.writes {
		// Allowed from when its deadline was chosen, just before the
		// write began: the write may come a little later than that.
		slack := 5 * time.Millisecond
		if late := w.deadline.Sub(w.at); late > allowed[i]+slack {
			t.Fatalf("write %d may run for %v, more than its %v", i, late, allowed[i])
		}
		if early := w.deadline.Sub(w.at); early < allowed[i]*3/4-slack {
			t.Fatalf("write %d may run for only %v of its %v", i, early, allowed[i])
		}
	}
}
