package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

// The read side of a dialer's connection is a role taken by the calls
// themselves (clientConn.readFor), and by a watcher when no call is in
// flight. These tests break it where it could break: a reader leaving
// with replies still owed to others, a read cut short in the middle of a
// frame, a reader whose ctx is cancelled, an idle link hung up.

// requests reads n requests from fr and returns their ids, in order.
func requests(t *testing.T, fr *wire.FrameReader, n int) []uint64 {
	var ids []uint64
	for range n {
		id, _, err := fr.ReadMsg()
		if err != nil {
			t.Errorf("fake: read request: %v", err)
			return ids
		}
		ids = append(ids, id)
	}
	return ids
}

// A call that times out while it holds the read role passes it on: the
// call still waiting gets its reply, which comes after the first gave up.
func TestReaderTimingOutPassesTheRole(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	gaveUp := make(chan struct{})
	fake := startFake(t, wire.NodeID{Name: "f", Boot: 5}, func(_ int, _ net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter) {
		answerOne(fr, fw)
		ids := requests(t, fr, 2)
		if len(ids) < 2 {
			return
		}
		<-gaveUp
		// Only the second call is answered, once the first has left.
		fw.WriteFrame(ids[1], &wire.RewardReply{Total: 2})
		fr.ReadMsg() // until a closes
	})
	n.set("f", fake.ln.Addr().String())
	reward(t, a, fake.id, 0) // connect: the first connection answers nothing else

	if err := secondAfterFirstGaveUp(t, a, fake.id, 200*time.Millisecond, gaveUp); err != nil {
		t.Fatalf("second call, answered after the first gave up: %v", err)
	}
}

// secondAfterFirstGaveUp makes a call with deadline d, which the fake at
// to leaves unanswered, and once it is in flight (and reading) a second.
// When the first has given up at its deadline it closes gaveUp, which
// lets the fake answer the second, and returns the second call's error.
func secondAfterFirstGaveUp(t *testing.T, a *testNode, to wire.NodeID, d time.Duration, gaveUp chan struct{}) error {
	t.Helper()
	short, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := a.Call(short, to, &wire.Reward{Player: "p", Points: 1})
		first <- err
	}()
	waitPending(t, a.current(to.Name), 1)
	second := make(chan error, 1)
	go func() {
		r, err := a.Call(context.Background(), to, &wire.Reward{Player: "p", Points: 2})
		if err == nil && r.(*wire.RewardReply).Total != 2 {
			err = errors.New("wrong reply")
		}
		second <- err
	}()
	if err := <-first; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first call: %v, want its deadline", err)
	}
	close(gaveUp)
	return <-second
}

// A reply whose first half arrives before its reader gives up (at its
// deadline) and the rest after is read whole by the next reader.
func TestReadCutMidFrameLosesNothing(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	gaveUp := make(chan struct{})
	fake := startFake(t, wire.NodeID{Name: "f", Boot: 5}, func(_ int, nc net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter) {
		answerOne(fr, fw)
		ids := requests(t, fr, 2)
		if len(ids) < 2 {
			return
		}
		// The second call's reply, in two writes around the first
		// call's deadline.
		var buf []byte
		w := wire.NewFrameWriter(writerFunc(func(p []byte) (int, error) {
			buf = append(buf, p...)
			return len(p), nil
		}))
		w.WriteFrame(ids[1], &wire.RewardReply{Total: 2})
		nc.Write(buf[:6]) // the length and part of the id
		<-gaveUp
		nc.Write(buf[6:])
		fr.ReadMsg() // until a closes
	})
	n.set("f", fake.ln.Addr().String())
	reward(t, a, fake.id, 0)

	if err := secondAfterFirstGaveUp(t, a, fake.id, 300*time.Millisecond, gaveUp); err != nil {
		t.Fatalf("second call, whose reply was split around the first's deadline: %v", err)
	}
}

// A call cancelled while it reads returns with its ctx's error, not at its
// deadline: the cancellation interrupts the read.
func TestReaderCancelled(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	fake := startFake(t, wire.NodeID{Name: "f", Boot: 5}, func(_ int, _ net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter) {
		id, _, err := fr.ReadMsg()
		if err != nil {
			return
		}
		fw.WriteFrame(id, &wire.RewardReply{})
		for { // answers nothing more
			if _, _, err := fr.ReadMsg(); err != nil {
				return
			}
		}
	})
	n.set("f", fake.ln.Addr().String())
	reward(t, a, fake.id, 0)

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	done := make(chan error, 1)
	go func() {
		_, err := a.Call(ctx, fake.id, &wire.Reward{Player: "p", Points: 1})
		done <- err
	}()
	waitPending(t, a.current("f"), 1)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a call cancelled while reading did not return")
	}
	// The connection still serves: the fake answers nothing, but the
	// role is free again and a new call can take it.
	if c := a.current("f"); c == nil || c.isClosed() {
		t.Fatal("cancelling a call closed the connection")
	}
}

// With no call in flight, the watcher reads: a peer that hangs up an idle
// link is reported at once, not at the next call.
func TestIdleLinkHangUpIsNoticed(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	hangUp := make(chan struct{})
	fake := startFake(t, wire.NodeID{Name: "f", Boot: 5}, func(i int, nc net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter) {
		if i > 1 {
			echoFake(i, nc, fr, fw)
			return
		}
		id, m, err := fr.ReadMsg()
		if err != nil {
			return
		}
		fw.WriteFrame(id, &wire.RewardReply{Total: m.(*wire.Reward).Points})
		<-hangUp
	})
	n.set("f", fake.ln.Addr().String())
	reward(t, a, fake.id, 1)
	close(hangUp)
	a.waitLinkDown(t, fake.id, 5*time.Second, "the peer closed an idle link")
	if c := a.current("f"); c != nil {
		t.Fatal("the closed link is still a's connection to f")
	}
}

// The watcher's timer is armed once per quiet spell, not by every call:
// after a run of calls longer than watchDelay, during which it fired with
// calls in flight or too early, a hang-up is still noticed once the calls
// stop.
func TestHangUpAfterARunOfCallsIsNoticed(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	hangUp := make(chan struct{})
	var once sync.Once
	hangUpNow := func() { once.Do(func() { close(hangUp) }) }
	t.Cleanup(hangUpNow)
	fake := startFake(t, wire.NodeID{Name: "f", Boot: 5}, func(i int, nc net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter) {
		if i == 1 {
			go func() {
				<-hangUp
				nc.Close()
			}()
		}
		echoFake(i, nc, fr, fw)
	})
	n.set("f", fake.ln.Addr().String())
	for start := time.Now(); time.Since(start) < 4*watchDelay; {
		reward(t, a, fake.id, 1)
	}
	hangUpNow()
	a.waitLinkDown(t, fake.id, 5*time.Second, "the peer closed the link after a run of calls")
}

// Many calls at once, each reading for the others in turn, all get their
// own reply.
func TestReadRoleUnderConcurrency(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil)
	errs := make(chan error, 64)
	for i := range 64 {
		go func() {
			var err error
			for j := range 50 {
				pts := int64(i*1000 + j)
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+j%3)*time.Second)
				var r wire.Msg
				r, err = a.Call(ctx, b.id(), &wire.Reward{Player: "p", Points: pts})
				cancel()
				if err == nil && r.(*wire.RewardReply).Total != pts {
					err = errors.New("a reply went to the wrong call")
				}
				if err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 64 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// answerOne answers the request that opened the connection.
func answerOne(fr *wire.FrameReader, fw *wire.FrameWriter) {
	if id, _, err := fr.ReadMsg(); err == nil {
		fw.WriteFrame(id, &wire.RewardReply{})
	}
}

// waitPending waits until c has n calls in flight and one of them reads.
func waitPending(t *testing.T, c *clientConn, n int) {
	t.Helper()
	if c == nil {
		t.Fatal("no connection")
	}
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("%d calls in flight, one of them reading", n), func() (bool, string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) >= n && c.reading, fmt.Sprintf("%d in flight, reading %v", len(c.pending), c.reading)
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// The frame buffer hands out frames whole, across reads of any size, and
// refuses lengths outside the limits.
func TestInbuf(t *testing.T) {
	var stream []byte
	fw := wire.NewFrameWriter(writerFunc(func(p []byte) (int, error) {
		stream = append(stream, p...)
		return len(p), nil
	}))
	big := &wire.CommandReply{Output: strings.Repeat("x", 3*readBufSize)}
	msgs := []wire.Msg{&wire.RewardReply{Total: 7}, big, &wire.Ack{}, &wire.RewardReply{Total: 9}}
	for i, m := range msgs {
		if err := fw.WriteFrame(uint64(i+1), m); err != nil {
			t.Fatal(err)
		}
	}
	for _, chunk := range []int{1, 3, 13, 4096, len(stream)} {
		var b inbuf
		rd := &chunkReader{data: stream, n: chunk}
		for i, want := range msgs {
			var k wire.Kind
			var id uint64
			var body []byte
			for {
				var ok bool
				var err error
				k, id, body, ok, err = b.next()
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					break
				}
				if err := b.fill(rd); err != nil {
					t.Fatalf("chunks of %d: frame %d: %v", chunk, i, err)
				}
			}
			m, err := wire.Decode(k, body)
			if err != nil || id != uint64(i+1) || m.Kind() != want.Kind() {
				t.Fatalf("chunks of %d: frame %d: id %d, %v, %v", chunk, i, id, m, err)
			}
		}
		if len(b.buf) > readBufSize {
			t.Fatalf("chunks of %d: the buffer kept %d bytes after the large frame", chunk, len(b.buf))
		}
	}
	for _, n := range []uint32{wire.MaxFrame + 1, 3} {
		var b inbuf
		b.load(binary.BigEndian.AppendUint32(nil, n))
		if _, _, _, _, err := b.next(); !errors.Is(err, wire.ErrFrameTooLarge) && !errors.Is(err, wire.ErrFrameTooShort) {
			t.Fatalf("length %d: %v, want a limit error", n, err)
		}
	}
}

type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	n := min(len(p), r.n, len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// nextWaiter serves a Where by waiting for the Ping that follows it on
// the same connection: served on the read loop (it is alone), it holds
// the reading until a successor takes over and reads the Ping. Other
// messages go to other, or to echo.
type nextWaiter struct {
	mu      sync.Mutex
	release chan struct{}
	other   func(context.Context, wire.NodeID, wire.Msg) (wire.Msg, error)
}

func (w *nextWaiter) handle(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
	w.mu.Lock()
	if w.release == nil {
		w.release = make(chan struct{})
	}
	r := w.release
	w.mu.Unlock()
	switch m.(type) {
	case *wire.Where:
		select {
		case <-r:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case *wire.Ping:
		close(r)
	default:
		if w.other != nil {
			return w.other(ctx, from, m)
		}
		return echo(ctx, from, m)
	}
	return &wire.Ack{}, nil
}

// round sends a a Where to b that waits for the next request, then that
// request, and fails unless both are answered.
func (w *nextWaiter) round(t *testing.T, a, b *testNode, why string) {
	t.Helper()
	where := make(chan error, 1)
	go func() {
		_, err := a.Call(context.Background(), b.id(), &wire.Where{Player: "p"})
		where <- err
	}()
	waitPending(t, a.current(b.name), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Call(ctx, b.id(), &wire.Ping{}); err != nil {
		t.Fatalf("%s: a request behind one that waits for it: %v", why, err)
	}
	if err := <-where; err != nil {
		t.Fatalf("%s: the request that waited: %v", why, err)
	}
	w.mu.Lock()
	w.release = nil
	w.mu.Unlock()
}

// A request served on the read loop (alone on its connection) that waits
// for a later request on the same connection does not wait forever: a
// successor takes over reading and serves the later one.
func TestHandlerOnReadLoopWaitingForTheNextRequest(t *testing.T) {
	n := newTestNet(t)
	w := &nextWaiter{}
	b := n.add("b", 1, w.handle)
	a := n.add("a", 1, nil)
	reward(t, a, b.id(), 1) // connect
	w.round(t, a, b, "first")
	// Both goroutines that read b's side stopped cleanly: goleak (TestMain)
	// and the next call check it.
	reward(t, a, b.id(), 2)
}

// The successor's timer is armed once per quiet spell, not per request:
// a request that waits for the next one still gets a successor when the
// timer was armed by an earlier request (the timer then fires while the
// loop serves the waiting one, gives it the rest of its time, and fires
// again), and when the timer had fired on an idle loop (the next request
// served inline arms it again).
func TestSuccessorAfterQuickRequests(t *testing.T) {
	// A request taking a third of the delay arms the timer; the waiting
	// one starts when it ends, so the timer fires with a third of the
	// waiting one's time left, far more than a timer's lateness.
	const delay, slow = 300 * time.Millisecond, 100 * time.Millisecond
	n := newTestNet(t)
	w := &nextWaiter{other: func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		if r, ok := m.(*wire.Reward); ok && r.Points == 3 {
			time.Sleep(slow) // the work of a slow request, not a wait for the test
		}
		return echo(ctx, from, m)
	}}
	b := n.add("b", 1, w.handle, func(c *Config) { c.successorDelay = delay })
	a := n.add("a", 1, nil)
	armed := func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for sc := range b.inbound {
			if sc.from.Name == "a" {
				sc.mu.Lock()
				defer sc.mu.Unlock()
				return sc.armed
			}
		}
		return false
	}

	reward(t, a, b.id(), 1) // connects
	testenv.WaitFor(t, 5*time.Second, "the timer to fire on the idle loop", func() bool { return !armed() })
	reward(t, a, b.id(), 3) // slow, but within the delay: it arms the timer
	w.round(t, a, b, "timer armed by the request before")
	reward(t, a, b.id(), 2)
	testenv.WaitFor(t, 5*time.Second, "the timer to fire on the idle loop", func() bool { return !armed() })
	w.round(t, a, b, "timer fired on an idle loop")
}
