package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

func withCookie(c *Config) { c.Cookie = otherCookie }

// Nodes with different cookies cannot call each other, in either
// direction, and no request reaches a handler.
func TestWrongCookieCannotCall(t *testing.T) {
	n := newTestNet(t)
	var handled atomic.Int32
	count := func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		handled.Add(1)
		return echo(ctx, from, m)
	}
	a := n.add("a", 1, count)
	x := n.add("x", 1, count, withCookie)

	for _, c := range []struct {
		from, to *testNode
	}{{a, x}, {x, a}} {
		_, err := c.from.Call(context.Background(), c.to.id(), &wire.Reward{Player: "p", Points: 1})
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("%s -> %s with different cookies: %v, want ErrAuth", c.from.name, c.to.name, err)
		}
		if errors.Is(err, wire.ErrGone) {
			t.Fatalf("%s -> %s: a cookie mismatch reads as proof of death: %v", c.from.name, c.to.name, err)
		}
		if !strings.Contains(err.Error(), "cookie mismatch") {
			t.Fatalf("error does not say cookie mismatch: %v", err)
		}
	}
	if h := handled.Load(); h != 0 {
		t.Fatalf("%d requests reached a handler across a cookie mismatch", h)
	}
	for _, tn := range []*testNode{a, x} {
		testenv.WaitFor(t, 5*time.Second, tn.name+" to count the failed proof", func() bool { return tn.Stats().AuthFailed == 1 })
	}

	// The same cookie works.
	b := n.add("b", 1, nil)
	reward(t, a, b.id(), 3)
	reward(t, b, a.id(), 4)
}

func TestClientWrongCookie(t *testing.T) {
	n := newTestNet(t)
	b := n.add("b", 1, nil, func(c *Config) {
		c.Clients = ClientsFunc(func(ctx context.Context, m wire.Msg) (wire.Msg, error) {
			return &wire.CommandReply{Output: "ran"}, nil
		})
	})
	_, err := DialClient(context.Background(), b.Addr(), "rpc-1", otherCookie)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "cookie mismatch") {
		t.Fatalf("client with another cookie: %v, want ErrAuth saying cookie mismatch", err)
	}
	cl, err := DialClient(context.Background(), b.Addr(), "rpc-1", testCookie)
	if err != nil {
		t.Fatalf("client with the right cookie: %v", err)
	}
	defer cl.Close()
	if _, err := cl.Call(context.Background(), &wire.Command{Line: "x"}); err != nil {
		t.Fatal(err)
	}
}

// recorder keeps a copy of everything written through it.
type recorder struct {
	w   io.Writer
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.buf.Write(p)
	return r.w.Write(p)
}

// A proof recorded on one connection is worthless on another: replaying a
// whole recorded dialer's side fails, because the acceptor's nonce is new.
func TestRecordedHandshakeCannotBeReplayed(t *testing.T) {
	n := newTestNet(t)
	b := n.add("b", 1, nil)

	nc := dialRaw(t, b.Addr())
	rec := &recorder{w: nc}
	hello := &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: "a", Boot: 1}, To: "b"}
	if _, err := dialerHandshake(wire.NewFrameReader(nc), wire.NewFrameWriter(rec), testCookie.TransportKey(), hello, "b"); err != nil {
		t.Fatalf("genuine handshake: %v", err)
	}
	nc.Close()

	replay := dialRaw(t, b.Addr())
	if _, err := replay.Write(rec.buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	fr := wire.NewFrameReader(replay)
	if _, m, err := fr.ReadMsg(); err != nil || m.Kind() != wire.KindChallenge {
		t.Fatalf("first answer to a replay: %v, %v; want a challenge", m, err)
	}
	_, m, err := fr.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if r := m.(*wire.HelloReply); len(r.Proof) != 0 || r.Refused == "" {
		t.Fatalf("replayed proof answered with %+v, want a refusal without proof", r)
	}
	expectClosed(t, replay)
	testenv.WaitFor(t, 5*time.Second, "the failed proof to be counted", func() bool { return b.Stats().AuthFailed == 1 })
}

// The two proofs of one handshake differ by role, so an acceptor's proof
// sent back to it as a dialer's does not pass.
func TestProofsAreBoundToTheirRole(t *testing.T) {
	key := testCookie.TransportKey()
	h := &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: "a", Boot: 1}, To: "b", Nonce: bytes.Repeat([]byte{1}, wire.NonceLen)}
	ch := &wire.Challenge{Node: wire.NodeID{Name: "b", Boot: 2}, Nonce: bytes.Repeat([]byte{2}, wire.NonceLen)}
	d, acc := proof(key, roleDialer, h, ch, false), proof(key, roleAcceptor, h, ch, false)
	if bytes.Equal(d, acc) {
		t.Fatal("dialer and acceptor proofs are equal")
	}
	if bytes.Equal(acc, proof(key, roleAcceptor, h, ch, true)) {
		t.Fatal("the acceptor's proof does not cover its verdict")
	}
	// Every field of the transcript matters.
	mutations := map[string]func(h *wire.Hello, ch *wire.Challenge){
		"dialer nonce":   func(h *wire.Hello, _ *wire.Challenge) { h.Nonce = bytes.Repeat([]byte{3}, wire.NonceLen) },
		"acceptor nonce": func(_ *wire.Hello, ch *wire.Challenge) { ch.Nonce = bytes.Repeat([]byte{3}, wire.NonceLen) },
		"dialer name":    func(h *wire.Hello, _ *wire.Challenge) { h.From.Name = "c" },
		"dialer boot":    func(h *wire.Hello, _ *wire.Challenge) { h.From.Boot = 9 },
		"expected name":  func(h *wire.Hello, _ *wire.Challenge) { h.To = "c" },
		"client flag":    func(h *wire.Hello, _ *wire.Challenge) { h.Client = true },
		"acceptor name":  func(_ *wire.Hello, ch *wire.Challenge) { ch.Node.Name = "c" },
		"acceptor boot":  func(_ *wire.Hello, ch *wire.Challenge) { ch.Node.Boot = 9 },
	}
	for what, mutate := range mutations {
		h2, ch2 := *h, *ch
		mutate(&h2, &ch2)
		if bytes.Equal(d, proof(key, roleDialer, &h2, &ch2, false)) {
			t.Errorf("changing the %s leaves the dialer's proof the same", what)
		}
	}
	if bytes.Equal(d, proof(otherCookie.TransportKey(), roleDialer, h, ch, false)) {
		t.Error("another cookie gives the same proof")
	}
}

// A connection that says nothing is closed when its handshake runs out of
// time; one that authenticates and then falls silent is closed after
// IdleTimeout. A real link kept alive by keepalives outlives both.
func TestSilentConnectionsAreClosed(t *testing.T) {
	n := newTestNet(t)
	short := func(c *Config) {
		c.DialTimeout = 300 * time.Millisecond
		c.IdleTimeout = 400 * time.Millisecond
	}
	a := n.add("a", 1, nil, short)
	b := n.add("b", 1, nil, short)
	reward(t, a, b.id(), 1)

	silent := dialRaw(t, b.Addr())
	expectClosed(t, silent)
	if s := b.Stats(); s.HandshakeFailed != 1 {
		t.Fatalf("stats after a silent stranger: %v, want 1 failed handshake", s)
	}

	idle := dialRaw(t, b.Addr())
	hello := &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: "z", Boot: 1}, To: "b"}
	if _, err := dialerHandshake(wire.NewFrameReader(idle), wire.NewFrameWriter(idle), testCookie.TransportKey(), hello, "b"); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, idle)
	testenv.WaitFor(t, 5*time.Second, "the idle close to be counted", func() bool { return b.Stats().IdleClosed == 1 })

	// a's link was idle just as long, but sent keepalives: still the
	// first connection.
	reward(t, a, b.id(), 2)
	if d := a.dials.Load(); d != 1 {
		t.Fatalf("a dialed %d times; its idle link was closed", d)
	}
}

// Strangers cannot take every slot: handshakes in progress get a quarter
// of MaxConns, and when they are full the oldest gives way, so a member's
// new link gets in however many handshakes strangers hold open. Beyond
// MaxConns, a connection is closed at once.
func TestStrangersCannotStarveMembers(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil, func(c *Config) {
		c.MaxConns = 16 // four handshakes at a time
		c.DialTimeout = 5 * time.Second
	})
	reward(t, a, b.id(), 1) // a's link is authenticated: it holds a slot, not a handshake

	// Strangers, from an address of their own, fill every handshake slot
	// and keep them (silent, within the handshake deadline), then keep
	// coming as fast as they can.
	stranger := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: time.Second}
	var strangers []net.Conn
	for range 4 {
		nc, err := stranger.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		strangers = append(strangers, nc)
	}
	testenv.WaitFor(t, 5*time.Second, "the strangers to hold every handshake slot", func() bool {
		return b.handshakes() == 4
	})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var held []net.Conn // what the stranger keeps open, at most 128
		defer func() {
			for _, nc := range held {
				nc.Close()
			}
		}()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if nc, err := stranger.Dial("tcp", b.Addr()); err == nil {
				held = append(held, nc)
			}
			if len(held) > 128 {
				held[0].Close()
				held = held[1:]
			}
		}
	}()
	// New members still get in, and the old link still works.
	for i, name := range []string{"c", "d", "e"} {
		m := n.add(name, 1, nil)
		reward(t, m, b.id(), int64(10+i))
	}
	reward(t, a, b.id(), 2)
	close(stop)
	<-done
	if s := b.Stats(); s.OverCap == 0 {
		t.Fatalf("stats: %v, want handshakes dropped to make room", s)
	}
	for _, st := range strangers {
		expectClosed(t, st) // the oldest gave way
	}
}

// Past MaxConns every new connection is closed at once.
func TestConnectionCap(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil, func(c *Config) {
		c.MaxConns = 1
	})
	reward(t, a, b.id(), 1) // a's link takes the only slot
	extra := dialRaw(t, b.Addr())
	if err := extra.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection over the cap got data")
	}
	if s := b.Stats(); s.OverCap != 1 {
		t.Fatalf("stats: %v, want 1 over cap", s)
	}
	reward(t, a, b.id(), 2) // the member's link is untouched
}

// Frames that are well-formed but break a limit close the connection and
// are counted; the node keeps serving.
func TestLimitsCloseTheConnection(t *testing.T) {
	n := newTestNet(t)
	a := n.add("a", 1, nil)
	b := n.add("b", 1, nil)
	reward(t, a, b.id(), 1)

	// A handshake frame over MaxHandshakeFrame, before any proof.
	nc := dialRaw(t, b.Addr())
	if _, err := nc.Write([]byte{0, 0, 0x10, 0}); err != nil { // 4 KiB
		t.Fatal(err)
	}
	expectClosed(t, nc)

	// After the handshake: a request whose list is longer than the
	// protocol allows, and one whose msgpack declares 2^32 entries.
	for _, body := range [][]byte{
		append([]byte{0x82, 0xa1, 'p', 0xa1, 'x', 0xa2, 'r', 'c', 0xdc, 0x01, 0x01}, bytes.Repeat([]byte{0x80}, 257)...),
		{0x82, 0xa1, 'p', 0xa1, 'x', 0xa2, 'r', 'c', 0xdd, 0xff, 0xff, 0xff, 0xff},
	} {
		nc := dialRaw(t, b.Addr())
		hello := &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: "z", Boot: 1}, To: "b"}
		if _, err := dialerHandshake(wire.NewFrameReader(nc), wire.NewFrameWriter(nc), testCookie.TransportKey(), hello, "b"); err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(rawFrame(wire.KindAdopt, 1, body)); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, nc)
	}
	testenv.WaitFor(t, 5*time.Second, "bad frames to be counted", func() bool { return b.Stats().BadFrames == 2 })
	reward(t, a, b.id(), 2)
}

func rawFrame(k wire.Kind, id uint64, body []byte) []byte {
	b := make([]byte, 13, 13+len(body))
	n := uint32(9 + len(body))
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	b[4] = byte(k)
	for i := range 8 {
		b[5+i] = byte(id >> (56 - 8*i))
	}
	return append(b, body...)
}
