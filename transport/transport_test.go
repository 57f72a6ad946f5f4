package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

func TestRoundTrip(t *testing.T) {
	n := newTestNet(t)
	var gotFrom atomic.Value
	a := n.add("a", 1, nil)
	b := n.add("b", 2, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		gotFrom.Store(from)
		return echo(ctx, from, m)
	})

	reward(t, a, b.id(), 5)
	if from := gotFrom.Load().(wire.NodeID); from != a.id() {
		t.Fatalf("handler saw caller %+v, want %+v", from, a.id())
	}
	// Boot 0 means "whichever incarnation answers".
	reward(t, a, wire.NodeID{Name: "b"}, 7)
	// And the other direction has its own connection.
	reward(t, b, a.id(), 9)
	if a.dials.Load() != 1 || b.dials.Load() != 1 {
		t.Fatalf("dials a=%d b=%d, want 1 each", a.dials.Load(), b.dials.Load())
	}
}

func TestConcurrentCallsShareOneConnection(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil)

	const callers, each = 64, 50
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				pts := int64(g*1000 + i)
				r, err := a.Call(context.Background(), b.id(), &wire.Reward{Player: "p", Points: pts})
				if err != nil {
					errs <- err
					return
				}
				if got := r.(*wire.RewardReply).Total; got != pts {
					errs <- fmt.Errorf("reply %d to request %d", got, pts)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if d := a.dials.Load(); d != 1 {
		t.Fatalf("%d dials, want 1 shared by every caller", d)
	}
	if c := b.inboundCount(); c != 1 {
		t.Fatalf("b holds %d inbound connections, want 1", c)
	}
}

func TestRemoteErrors(t *testing.T) {
	n := newTestNet(t)
	owner := wire.NodeID{Name: "c", Boot: 3}
	a := n.add("a", 1, nil)
	b := n.add("b", 1, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		switch m.(*wire.Reward).Player {
		case "moved":
			return nil, &wire.Error{Code: wire.CodeNotOwner, Msg: "not mine", Owner: owner}
		case "wrapped":
			return nil, fmt.Errorf("apply reward: %w", wire.Errorf(wire.CodeOverflow, "total overflows"))
		case "plain":
			return nil, errors.New("disk on fire")
		case "panic":
			panic("handler bug")
		case "nothing":
			return nil, nil
		}
		return &wire.RewardReply{Total: 1}, nil
	})

	call := func(player string) error {
		_, err := a.Call(context.Background(), b.id(), &wire.Reward{Player: player})
		return err
	}
	tests := []struct {
		player string
		code   wire.Code
		msg    string
	}{
		{"moved", wire.CodeNotOwner, "not mine"},
		{"wrapped", wire.CodeOverflow, "apply reward: total overflows"},
		{"plain", wire.CodeInternal, "disk on fire"},
		{"panic", wire.CodeInternal, "panicked: handler bug"},
		{"nothing", wire.CodeInternal, "no reply"},
	}
	for _, tc := range tests {
		err := call(tc.player)
		var we *wire.Error
		if !errors.As(err, &we) {
			t.Fatalf("%s: error %v (%T) carries no *wire.Error", tc.player, err, err)
		}
		if we.Code != tc.code || !strings.Contains(we.Msg, tc.msg) {
			t.Fatalf("%s: got %v %q, want %v containing %q", tc.player, we.Code, we.Msg, tc.code, tc.msg)
		}
		if errors.Is(err, wire.ErrGone) {
			t.Fatalf("%s: remote failure reads as ErrGone", tc.player)
		}
		if tc.player == "moved" && we.Owner != owner {
			t.Fatalf("owner %+v, want %+v", we.Owner, owner)
		}
	}
	// None of that hurt the connection.
	if err := call("fine"); err != nil {
		t.Fatal(err)
	}
	if d := a.dials.Load(); d != 1 {
		t.Fatalf("%d dials, want 1", d)
	}
}

func TestGoneOnRefusedPort(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	n.set("ghost", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))) // nobody listens there

	// Many callers at once share the one refused dial.
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = a.Call(context.Background(), wire.NodeID{Name: "ghost", Boot: 4}, &wire.Reward{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		// A refusal is no proof of death: a firewall REJECT looks the same.
		if !errors.Is(err, wire.ErrRefused) || errors.Is(err, wire.ErrGone) {
			t.Fatalf("call to a refused port: %v, want ErrRefused (and not ErrGone)", err)
		}
	}
}

func TestGoneOnRestartedPeer(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b1 := n.add("b", 10, nil)
	reward(t, a, b1.id(), 1)
	old := b1.id()

	// b restarts under the same name with a new boot id (on a new port,
	// which the name service learns).
	b1.Close()
	a.waitLinkDown(t, old, 5*time.Second, "b closed")
	b2 := n.add("b", 11, nil)

	_, err := a.Call(context.Background(), old, &wire.Reward{})
	if !errors.Is(err, wire.ErrGone) {
		t.Fatalf("call to the old incarnation: %v, want ErrGone", err)
	}
	// The connection the probe opened to the new incarnation serves it.
	reward(t, a, b2.id(), 2)
	if d := a.dials.Load(); d != 2 {
		t.Fatalf("%d dials, want 2", d)
	}
	// And the old boot is now known gone without another dial.
	if _, err := a.Call(context.Background(), old, &wire.Reward{}); !errors.Is(err, wire.ErrGone) {
		t.Fatalf("second call to the old incarnation: %v, want ErrGone", err)
	}
	if d := a.dials.Load(); d != 2 {
		t.Fatalf("%d dials, want still 2", d)
	}
}

func TestNewBootInSameProcess(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 20, nil)
	reward(t, a, b.id(), 1)
	first := a.current("b")

	// b is fenced and comes back as boot 21 in the same process: the
	// connection a holds still works but speaks for boot 20.
	b.boot.Store(21)
	reward(t, a, wire.NodeID{Name: "b", Boot: 21}, 2)
	if a.current("b") == first {
		t.Fatal("the connection to boot 20 was not replaced")
	}
	if !first.isClosed() {
		t.Fatal("the replaced connection is still open")
	}
	if _, err := a.Call(context.Background(), wire.NodeID{Name: "b", Boot: 20}, &wire.Reward{}); !errors.Is(err, wire.ErrGone) {
		t.Fatalf("call to boot 20: %v, want ErrGone", err)
	}

	// A call to a boot that never answered probes once, keeps the
	// connection in use, and is then known gone.
	second := a.current("b")
	dials := a.dials.Load()
	for range 2 {
		if _, err := a.Call(context.Background(), wire.NodeID{Name: "b", Boot: 99}, &wire.Reward{}); !errors.Is(err, wire.ErrGone) {
			t.Fatalf("call to boot 99: %v, want ErrGone", err)
		}
	}
	if d := a.dials.Load(); d != dials+1 {
		t.Fatalf("%d dials for two calls to a stale boot, want 1", d-dials)
	}
	if a.current("b") != second || second.isClosed() {
		t.Fatal("probing for a stale boot disturbed the live connection")
	}
	reward(t, a, wire.NodeID{Name: "b", Boot: 21}, 3)
}

// A call that joins a dial begun before it must not take that dial's
// answer as proof its incarnation is gone: the answer may predate it.
func TestJoinedDialIsNoProof(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	proceed := make(chan struct{})
	fake := startFake(t, wire.NodeID{Name: "f"}, echoFake, func(f *fakePeer) {
		f.hello = func(i int) wire.NodeID {
			if i == 1 {
				<-proceed // the old incarnation answers late
				return wire.NodeID{Name: "f", Boot: 1}
			}
			return wire.NodeID{Name: "f", Boot: 2}
		}
	})
	n.set("f", fake.ln.Addr().String())

	first := make(chan error, 1)
	go func() {
		_, err := a.Call(context.Background(), wire.NodeID{Name: "f", Boot: 1}, &wire.Reward{Points: 1})
		first <- err
	}()
	testenv.WaitFor(t, 5*time.Second, "the first dial to start", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		p := a.peers["f"]
		return p != nil && p.dial != nil
	})
	second := make(chan error, 1)
	go func() {
		_, err := a.Call(context.Background(), wire.NodeID{Name: "f", Boot: 2}, &wire.Reward{Points: 2})
		second <- err
	}()
	testenv.WaitFor(t, 5*time.Second, "the second call to join the dial", func() bool { return a.joins.Load() == 1 })
	close(proceed)

	if err := <-second; err != nil {
		t.Fatalf("call to boot 2: %v, want success after a dial of its own", err)
	}
	if err := <-first; errors.Is(err, wire.ErrGone) {
		t.Fatalf("call to boot 1, answered by boot 1: %v", err)
	}
	if got := fake.accepts.Load(); got != 2 {
		t.Fatalf("%d connections, want 2", got)
	}
}

func TestSelfChangeRedials(t *testing.T) {
	n := newTestNet(t)
	var from atomic.Value
	a := n.add("a", 1, nil)
	b := n.add("b", 1, func(ctx context.Context, f wire.NodeID, m wire.Msg) (wire.Msg, error) {
		from.Store(f)
		return echo(ctx, f, m)
	})
	reward(t, a, b.id(), 1)
	a.boot.Store(2) // a was fenced and took a new boot id
	reward(t, a, b.id(), 2)
	if f := from.Load().(wire.NodeID); f.Boot != 2 {
		t.Fatalf("b saw the call from boot %d, want 2", f.Boot)
	}
}

// An open connection keeps the deadlines of calls whose ctx has none, and
// of async calls, with one timer: a call ends at its own deadline whether
// it is the earliest (the timer is moved sooner for it) or not (the timer
// fires for an earlier one and is armed again for it), and a caller
// blocked reading for its reply is woken at its deadline.
func TestTheConnectionKeepsCallDeadlines(t *testing.T) {
	n := newTestNet(t)
	release := make(chan struct{})
	var once sync.Once
	releaseNow := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseNow)
	a := n.add("a", 1, nil, func(c *Config) { c.RequestTimeout = 200 * time.Millisecond })
	b := n.add("b", 1, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		if m.(*wire.Reward).Player == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return echo(ctx, from, m)
	})
	reward(t, a, b.id(), 1) // opens the connection
	conn := a.current("b")
	call := func() <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := a.Call(context.Background(), b.id(), &wire.Reward{Player: "slow"})
			done <- err
		}()
		return done
	}
	wait := func(done <-chan error, what string) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no answer in 10 s, with a RequestTimeout of 200 ms", what)
			return nil
		}
	}

	// Alone on the connection, the caller reads for its own reply.
	if err := wait(call(), "a lone call"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a lone call to a silent handler: %v, want DeadlineExceeded", err)
	}
	long, _ := callAsync(a, b.id(), &wire.Reward{Player: "slow", Points: 7}, time.Minute)
	if err := wait(call(), "a call after a longer one"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call behind a longer one: %v, want DeadlineExceeded", err)
	}
	// Not the earliest: the timer fires for a shorter async call first,
	// and must be armed again for this one.
	short, _ := callAsync(a, b.id(), &wire.Reward{Player: "slow", Points: 8}, 20*time.Millisecond)
	later := call()
	if r := waitAsync(t, short); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("an async call of 20 ms to a silent handler: %v, %v, want DeadlineExceeded", r.m, r.err)
	}
	if err := wait(later, "a call after a shorter one"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call whose deadline came after another's: %v, want DeadlineExceeded", err)
	}
	select {
	case r := <-long:
		t.Fatalf("the async call with a minute to go ended with the 200 ms one: %v, %v", r.m, r.err)
	default:
	}
	releaseNow()
	if r := waitAsync(t, long); r.err != nil || r.m.(*wire.RewardReply).Total != 7 {
		t.Fatalf("the async call, answered: %v, %v", r.m, r.err)
	}
	reward(t, a, b.id(), 2)
	if a.current("b") != conn {
		t.Fatal("a call ending at its deadline closed the connection")
	}
}

func TestTimeoutIsNotGone(t *testing.T) {
	n := newTestNet(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 16)
	a := n.add("a", 1, nil, func(c *Config) { c.RequestTimeout = 50 * time.Millisecond })
	b := n.add("b", 1, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		if m.(*wire.Reward).Player == "slow" {
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return echo(ctx, from, m)
	})

	// RequestTimeout applies when ctx has no deadline.
	_, err := a.Call(context.Background(), b.id(), &wire.Reward{Player: "slow"})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, wire.ErrGone) || !isUnknown(err) {
		t.Fatalf("timed-out call: %v, want DeadlineExceeded and not ErrGone", err)
	}
	<-entered
	// A cancelled call fails the same way.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-entered
		cancel()
	}()
	_, err = a.Call(ctx, b.id(), &wire.Reward{Player: "slow"})
	if !errors.Is(err, context.Canceled) || errors.Is(err, wire.ErrGone) {
		t.Fatalf("cancelled call: %v", err)
	}
	c := a.current("b")
	c.mu.Lock()
	left := len(c.pending)
	c.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d calls left pending after their callers gave up", left)
	}
	// The late replies are dropped and the connection carries on.
	close(release)
	a2ctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := a.Call(a2ctx, b.id(), &wire.Reward{Player: "fast", Points: 3}); err != nil {
		t.Fatal(err)
	}
	if d := a.dials.Load(); d != 1 {
		t.Fatalf("%d dials, want 1", d)
	}
}

func TestFencedHello(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil)
	b.fenceAll.Store(true)

	_, err := a.Call(context.Background(), b.id(), &wire.Reward{})
	if code, _ := wire.CodeOf(err); code != wire.CodeFenced {
		t.Fatalf("call from a fenced node: %v, want CodeFenced", err)
	}
	if errors.Is(err, wire.ErrGone) {
		t.Fatal("fenced reads as ErrGone")
	}
	// FencedBy has run by the time Call returns.
	select {
	case by := <-a.fencedBy:
		if by != b.id() {
			t.Fatalf("fenced by %+v, want %+v", by, b.id())
		}
	default:
		t.Fatal("FencedBy was not called")
	}
	if c := a.current("b"); c != nil {
		t.Fatal("a kept a connection after being fenced")
	}
}

func TestPeerClosingMidCall(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	const inflight = 8
	fake := startFake(t, wire.NodeID{Name: "f", Boot: 5}, func(i int, nc net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter) {
		if i == 1 {
			// First connection: take every request, then hang up.
			for range inflight {
				if _, _, err := fr.ReadMsg(); err != nil {
					return
				}
			}
			return
		}
		for {
			id, m, err := fr.ReadMsg()
			if err != nil {
				return
			}
			if err := fw.WriteFrame(id, &wire.RewardReply{Total: m.(*wire.Reward).Points}); err != nil {
				return
			}
		}
	})
	n.set("f", fake.ln.Addr().String())

	// Several calls in flight when the connection drops all fail.
	var wg sync.WaitGroup
	errs := make([]error, inflight)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = a.Call(context.Background(), fake.id, &wire.Reward{Points: 1})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil || !isUnknown(err) {
			t.Fatalf("call on a dropped connection: %v, want an unknown-outcome error", err)
		}
	}
	a.waitLinkDown(t, fake.id, 5*time.Second, "the connection was dropped")
	// The next call redials.
	reward(t, a, fake.id, 4)
	if got := fake.accepts.Load(); got != 2 {
		t.Fatalf("fake accepted %d connections, want 2", got)
	}
}

func TestBadReplyClosesConnection(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil)
	fake := startFake(t, wire.NodeID{Name: "f", Boot: 5}, func(i int, nc net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter) {
		id, _, err := fr.ReadMsg()
		if err != nil {
			return
		}
		// A reply-reward frame whose body is not msgpack of the type.
		var hdr [13]byte
		body := []byte{0xc1, 0xc1, 0xc1}
		binary.BigEndian.PutUint32(hdr[:4], uint32(9+len(body)))
		hdr[4] = byte(wire.KindRewardReply)
		binary.BigEndian.PutUint64(hdr[5:], id)
		nc.Write(append(hdr[:], body...))
		fr.ReadMsg() // until a closes
	})
	n.set("f", fake.ln.Addr().String())

	_, err := a.Call(context.Background(), fake.id, &wire.Reward{})
	if err == nil || !isUnknown(err) {
		t.Fatalf("call answered with a bad frame: %v", err)
	}
	a.waitLinkDown(t, fake.id, 5*time.Second, "a bad reply closed the connection")
	reward(t, a, b.id(), 1) // a still works
}

func TestBadBytesToListener(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil)
	reward(t, a, b.id(), 1)

	hello := func(nc net.Conn) {
		t.Helper()
		hello := &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: "x", Boot: 1}, To: "b"}
		if _, err := dialerHandshake(wire.NewFrameReader(nc), wire.NewFrameWriter(nc), testCookie.TransportKey(), hello, "b"); err != nil {
			t.Fatalf("handshake: %v", err)
		}
	}
	frameBytes := func(k wire.Kind, id uint64, body []byte) []byte {
		b := make([]byte, 13, 13+len(body))
		binary.BigEndian.PutUint32(b, uint32(9+len(body)))
		b[4] = byte(k)
		binary.BigEndian.PutUint64(b[5:], id)
		return append(b, body...)
	}

	cases := []struct {
		name      string
		withHello bool
		bytes     []byte
	}{
		{"garbage", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"oversize length", false, []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3}},
		{"short frame", false, []byte{0, 0, 0, 2, 1, 0}},
		{"request before hello", false, frameBytes(wire.KindReward, 1, []byte{0x80})},
		{"unknown kind", true, frameBytes(99, 1, []byte{0x80})},
		{"undecodable body", true, frameBytes(wire.KindReward, 1, []byte{0xc1})},
		{"second hello", true, frameBytes(wire.KindHello, 0, []byte{0x80})},
		{"oversize after hello", true, []byte{0x7f, 0xff, 0xff, 0xff}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc := dialRaw(t, b.Addr())
			if tc.withHello {
				hello(nc)
			}
			if _, err := nc.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, nc)
			reward(t, a, b.id(), 2) // b keeps serving its other connections
		})
	}
	if d := a.dials.Load(); d != 1 {
		t.Fatalf("a's connection was disturbed: %d dials", d)
	}
}

func TestHelloRefusals(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil)

	// The name service points "c" at b: b refuses to be taken for c.
	n.set("c", b.Addr())
	_, err := a.Call(context.Background(), wire.NodeID{Name: "c", Boot: 1}, &wire.Reward{})
	if code, _ := wire.CodeOf(err); code != wire.CodeUnavailable || errors.Is(err, wire.ErrGone) {
		t.Fatalf("call to the wrong node: %v, want CodeUnavailable", err)
	}

	// A peer speaking another protocol version is told so.
	nc := dialRaw(t, b.Addr())
	fw := wire.NewFrameWriter(nc)
	if err := fw.WriteFrame(0, &wire.Hello{Version: wire.Version + 1, From: wire.NodeID{Name: "x"}, To: "b"}); err != nil {
		t.Fatal(err)
	}
	_, m, err := wire.NewFrameReader(nc).ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if r := m.(*wire.HelloReply); r.Refused == "" {
		t.Fatalf("version mismatch accepted: %+v", r)
	}
	expectClosed(t, nc)
}

func TestBlockCutsBothWays(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil)
	reward(t, a, b.id(), 1)
	reward(t, b, a.id(), 1)

	a.block("b")
	_, err := a.Call(context.Background(), b.id(), &wire.Reward{})
	if code, _ := wire.CodeOf(err); code != wire.CodeUnavailable {
		t.Fatalf("a -> b while blocked: %v, want CodeUnavailable", err)
	}
	// b's connection to a was closed by a (or is closed as soon as a sees
	// a frame on it), and b cannot open a new one.
	for range 2 {
		_, err = b.Call(context.Background(), a.id(), &wire.Reward{})
		if err == nil || !isUnknown(err) {
			t.Fatalf("b -> a while blocked: %v, want an unknown-outcome error", err)
		}
	}
	select {
	case <-a.linkDown:
		t.Fatal("a's own block reported as a broken link")
	default:
	}

	a.unblock("b")
	reward(t, a, b.id(), 2)
	reward(t, b, a.id(), 2)
}

func TestDisconnect(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil)
	reward(t, a, b.id(), 1)
	reward(t, b, a.id(), 1)

	a.Disconnect("b")
	if a.current("b") != nil {
		t.Fatal("outbound connection survived Disconnect")
	}
	if c := a.inboundCount(); c != 0 {
		t.Fatalf("%d inbound connections survived Disconnect", c)
	}
	select {
	case <-a.linkDown:
		t.Fatal("Disconnect reported as a broken link")
	default:
	}
	reward(t, a, b.id(), 2)
	if d := a.dials.Load(); d != 2 {
		t.Fatalf("%d dials, want 2", d)
	}
}

func TestMaxInflight(t *testing.T) {
	n := newTestNet(t)
	var running, peak atomic.Int32
	release := make(chan struct{})
	a := n.add("a", 1, nil)
	b := n.add("b", 1, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		r := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if r <= p || peak.CompareAndSwap(p, r) {
				break
			}
		}
		<-release
		return echo(ctx, from, m)
	}, func(c *Config) { c.MaxInflight = 2 })

	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = a.Call(context.Background(), b.id(), &wire.Reward{Points: int64(i)})
		}()
	}
	testenv.WaitFor(t, 5*time.Second, "two handlers running", func() bool { return running.Load() == 2 })
	close(release)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak of %d concurrent handlers, want 2", p)
	}
}

func TestOversizeMessages(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		if c, ok := m.(*wire.Command); ok && c.Line == "big" {
			return &wire.CommandReply{Output: strings.Repeat("x", wire.MaxFrame)}, nil
		}
		return echo(ctx, from, m)
	})

	_, err := a.Call(context.Background(), b.id(), &wire.Command{Line: strings.Repeat("x", wire.MaxFrame)})
	if !errors.Is(err, wire.ErrLimit) {
		t.Fatalf("oversize request: %v, want wire.ErrLimit", err)
	}
	_, err = a.Call(context.Background(), b.id(), &wire.Command{Line: "big"})
	if code, _ := wire.CodeOf(err); code != wire.CodeInternal {
		t.Fatalf("oversize reply: %v, want CodeInternal", err)
	}
	reward(t, a, b.id(), 1)
	if d := a.dials.Load(); d != 1 {
		t.Fatalf("%d dials, want 1", d)
	}
}

func TestClient(t *testing.T) {
	n := newTestNet(t)
	b := n.add("b", 1, nil, func(c *Config) {
		c.Clients = ClientsFunc(func(ctx context.Context, m wire.Msg) (wire.Msg, error) {
			return &wire.CommandReply{Output: "ran " + m.(*wire.Command).Line}, nil
		})
	})
	cl, err := DialClient(context.Background(), b.Addr(), "rpc-1", testCookie)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if cl.Node() != b.id() {
		t.Fatalf("connected to %+v, want %+v", cl.Node(), b.id())
	}
	r, err := cl.Call(context.Background(), &wire.Command{Line: "node()."})
	if err != nil {
		t.Fatal(err)
	}
	if out := r.(*wire.CommandReply).Output; out != "ran node()." {
		t.Fatalf("output %q", out)
	}
	_, err = cl.Call(context.Background(), &wire.Replicate{Player: "p", Epoch: 1, Seq: 1, Total: 1})
	if code, _ := wire.CodeOf(err); code != wire.CodeBadRequest {
		t.Fatalf("member message from a client: %v, want CodeBadRequest", err)
	}
	// The client is not a member: Disconnect of its name leaves it be.
	b.Disconnect("rpc-1")
	if _, err := cl.Call(context.Background(), &wire.Command{Line: "again"}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Call(context.Background(), &wire.Command{Line: "late"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v, want ErrClosed", err)
	}

	// A node without Clients refuses clients.
	a := n.add("a", 1, nil)
	if _, err := DialClient(context.Background(), a.Addr(), "rpc-2", testCookie); err == nil {
		t.Fatal("a node without Clients accepted a client")
	}
}

func TestCloseFailsPendingCalls(t *testing.T) {
	n := newTestNet(t)
	entered := make(chan struct{})
	a := n.add("a", 1, nil)
	b := n.add("b", 1, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		close(entered)
		<-ctx.Done() // only Close ends this handler
		return nil, ctx.Err()
	})

	done := make(chan error, 1)
	go func() {
		_, err := a.Call(context.Background(), b.id(), &wire.Reward{})
		done <- err
	}()
	<-entered
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending call at Close: %v, want ErrClosed", err)
	}
	if _, err := a.Call(context.Background(), b.id(), &wire.Reward{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v, want ErrClosed", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// b's handler is still blocked; Close cancels it and waits for it.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// goleak in TestMain checks that nothing is left running.
}

// A peer that completes the handshake and then stops reading must not pin
// the writer and the queue behind it: the write deadline breaks the
// connection, the link is reported down, and the next call redials.
func TestPeerThatStopsReading(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	stalled := make(chan struct{})
	fake := startFake(t, wire.NodeID{Name: "f", Boot: 5}, func(i int, nc net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter) {
		if i == 1 {
			<-stalled // reads nothing more, until the test ends
			return
		}
		echoFake(i, nc, fr, fw)
	})
	t.Cleanup(func() { close(stalled) }) // runs before fake's cleanup
	n.set("f", fake.ln.Addr().String())

	// 64 KB frames: enough of them fill both ends' socket buffers.
	big := &wire.Command{Line: strings.Repeat("x", 60<<10)}
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := a.Call(ctx, fake.id, big); err == nil {
				t.Error("a call to a peer that reads nothing succeeded")
			}
		}()
	}
	a.waitLinkDown(t, fake.id, 10*time.Second, "the peer stopped reading (else the writer is pinned)")
	wg.Wait()
	reward(t, a, fake.id, 4)
	if got := fake.accepts.Load(); got != 2 {
		t.Fatalf("fake accepted %d connections, want 2", got)
	}
}

// A reply to a request served on the read loop (a keeper's Replicate, here
// a Ping) goes out although the request after it in the same read waits
// in its handler: held back until that handler answered, it would hold
// the caller's primary, and in a cluster that can close a circle of
// nodes each waiting on the other's ack.
func TestReadLoopReplyNotHeldByABlockedHandler(t *testing.T) {
	n := newTestNet(t)
	release := make(chan struct{})
	defer close(release)
	b := n.add("b", 1, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		if _, ok := m.(*wire.Where); ok {
			select { // a handler that waits on another node
			case <-release:
			case <-ctx.Done():
			}
		}
		return &wire.Ack{}, nil
	}, withInline(func(m wire.Msg) bool { _, ok := m.(*wire.Ping); return ok }))

	nc := dialRaw(t, b.Addr())
	fr := wire.NewFrameReader(bufio.NewReader(nc))
	fw := wire.NewFrameWriter(nc)
	hello := &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: "a", Boot: 1}, To: "b"}
	if _, err := dialerHandshake(fr, fw, testCookie.TransportKey(), hello, "b"); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	// Both requests in one write, so that one read brings them in.
	if err := fw.Append(1, &wire.Ping{}); err != nil {
		t.Fatal(err)
	}
	if err := fw.Append(2, &wire.Where{Player: "p"}); err != nil {
		t.Fatal(err)
	}
	if err := fw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	id, m, err := fr.ReadMsg()
	if err != nil {
		t.Fatalf("no reply to the ping while the other request waits: %v", err)
	}
	if id != 1 || m.Kind() != wire.KindAck {
		t.Fatalf("first reply: id %d, %s; want the ping's ack", id, m.Kind())
	}
}
