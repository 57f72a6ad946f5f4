package transport

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCookie is the cookie every test transport shares unless a test says
// otherwise; otherCookie is a different one.
var testCookie, otherCookie = mustCookie("transport test cookie, shared by every test node"), mustCookie("another cluster's cookie")

func mustCookie(text string) cookie.Cookie {
	c, err := cookie.New(text)
	if err != nil {
		panic(err)
	}
	return c
}

// testNet is a name service shared by the test's transports.
type testNet struct {
	t     testing.TB
	mu    sync.Mutex
	addrs map[string]string
}

func newTestNet(t testing.TB) *testNet {
	return &testNet{t: t, addrs: make(map[string]string)}
}

func (n *testNet) resolve(name string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a, ok := n.addrs[name]
	return a, ok
}

func (n *testNet) set(name, addr string) {
	n.mu.Lock()
	n.addrs[name] = addr
	n.mu.Unlock()
}

// testNode is one transport with knobs and recorders for tests. It is its
// transport's Peers.
type testNode struct {
	*Transport
	net      *testNet
	name     string
	boot     atomic.Uint64
	fenceAll atomic.Bool
	blocks   sync.Map // peer name -> struct{}

	fencedBy chan wire.NodeID
	linkDown chan wire.NodeID
}

func (n *testNode) id() wire.NodeID { return wire.NodeID{Name: n.name, Boot: n.boot.Load()} }

func (n *testNode) Self() wire.NodeID                  { return n.id() }
func (n *testNode) Resolve(name string) (string, bool) { return n.net.resolve(name) }
func (n *testNode) Fenced(wire.NodeID) bool            { return n.fenceAll.Load() }
func (n *testNode) FencedBy(by wire.NodeID)            { n.fencedBy <- by }
func (n *testNode) LinkDown(p wire.NodeID) {
	select {
	case n.linkDown <- p:
	default:
	}
}

func (n *testNode) block(peer string)   { n.blocks.Store(peer, struct{}{}) }
func (n *testNode) unblock(peer string) { n.blocks.Delete(peer) }

// echo answers a Reward with its points as the total, and a Command with
// its line.
func echo(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
	switch m := m.(type) {
	case *wire.Reward:
		return &wire.RewardReply{Total: m.Points}, nil
	case *wire.Command:
		return &wire.CommandReply{Output: m.Line}, nil
	}
	return nil, wire.Errorf(wire.CodeBadRequest, "echo: unexpected %s", m.Kind())
}

// handlerFuncs is a Handler made of functions; a nil inline serves
// nothing on the read loop.
type handlerFuncs struct {
	handle func(context.Context, wire.NodeID, wire.Msg) (wire.Msg, error)
	inline func(wire.Msg) bool
}

func (h handlerFuncs) Handle(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
	return h.handle(ctx, from, m)
}

func (h handlerFuncs) Inline(m wire.Msg) bool { return h.inline != nil && h.inline(m) }

type nodeOpt func(*Config)

// withInline has the node's handler serve the messages inline says on the
// read loop.
func withInline(inline func(wire.Msg) bool) nodeOpt {
	return func(c *Config) {
		c.Handler = handlerFuncs{handle: c.Handler.(handlerFuncs).handle, inline: inline}
	}
}

// add starts a transport named name with boot id boot, registered in n.
func (n *testNet) add(name string, boot uint64, handle func(context.Context, wire.NodeID, wire.Msg) (wire.Msg, error), opts ...nodeOpt) *testNode {
	t := n.t
	t.Helper()
	if handle == nil {
		handle = echo
	}
	tn := &testNode{
		net:      n,
		name:     name,
		fencedBy: make(chan wire.NodeID, 16),
		linkDown: make(chan wire.NodeID, 64),
	}
	tn.boot.Store(boot)
	cfg := DefaultConfig(testCookie, tn, handlerFuncs{handle: handle})
	cfg.Block = func(peer string) bool {
		_, ok := tn.blocks.Load(peer)
		return ok
	}
	cfg.DialTimeout = 2 * time.Second
	cfg.RequestTimeout = 5 * time.Second
	cfg.Logf = t.Logf
	for _, o := range opts {
		o(&cfg)
	}
	tr, err := Listen(cfg)
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	tn.Transport = tr
	n.set(name, tr.Addr())
	t.Cleanup(func() { tr.Close() })
	return tn
}

// waitLinkDown waits for n's LinkDown to report peer, failing the test
// if another peer is reported or nothing is within the timeout; why says
// what should have broken the link.
func (n *testNode) waitLinkDown(t testing.TB, peer wire.NodeID, within time.Duration, why string) {
	t.Helper()
	select {
	case p := <-n.linkDown:
		if p != peer {
			t.Fatalf("link down reported for %+v, want %+v (%s)", p, peer, why)
		}
	case <-time.After(within):
		t.Fatalf("no link down reported for %s within %v: %s", peer.Name, within, why)
	}
}

// inboundCount is how many accepted connections n holds.
func (n *testNode) inboundCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.inbound)
}

// current is n's outbound connection to name, or nil.
func (n *testNode) current(name string) *clientConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.peers[name]; p != nil {
		return p.conn
	}
	return nil
}

func reward(t testing.TB, from *testNode, to wire.NodeID, pts int64) {
	t.Helper()
	r, err := from.Call(context.Background(), to, &wire.Reward{Player: "p", Points: pts})
	if err != nil {
		t.Fatalf("%s -> %s: %v", from.name, to.Name, err)
	}
	if got := r.(*wire.RewardReply).Total; got != pts {
		t.Fatalf("%s -> %s: total %d, want %d", from.name, to.Name, got, pts)
	}
}

// openConn opens from's connection to `to` without sending anything on
// it. A CallAsync to a peer with no open connection is sent by a goroutine
// once its dial ends, so a later one can overtake it: tests that depend
// on the order of their calls open the connection first.
func openConn(t testing.TB, from *testNode, to wire.NodeID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := from.conn(ctx, to); err != nil {
		t.Fatalf("%s: open a connection to %s: %v", from.name, to.Name, err)
	}
}

// isUnknown tells an unknown-outcome error: neither proof of death nor a
// remote failure other than Unavailable.
func isUnknown(err error) bool {
	if err == nil || errors.Is(err, wire.ErrGone) || errors.Is(err, wire.ErrRefused) {
		return false
	}
	code, ok := wire.CodeOf(err)
	return !ok || code == wire.CodeUnavailable
}

// fakePeer is a hand-driven acceptor: it runs the handshake as id (with
// testCookie), then gives the connection to serve. It lets tests misbehave
// in ways a real Transport never would.
type fakePeer struct {
	ln      net.Listener
	id      wire.NodeID
	accepts atomic.Int32
	// hello, if set, names who answers the n-th connection's Hello, and
	// may block to hold the answer back.
	hello func(n int) wire.NodeID
	serve func(n int, nc net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter)

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startFake(t testing.TB, id wire.NodeID, serve func(n int, nc net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter), opts ...func(*fakePeer)) *fakePeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePeer{ln: ln, id: id, serve: serve}
	for _, o := range opts {
		o(f)
	}
	f.wg.Add(1)
	go f.acceptLoop()
	t.Cleanup(f.close)
	return f
}

func (f *fakePeer) acceptLoop() {
	defer f.wg.Done()
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		n := int(f.accepts.Add(1))
		f.mu.Lock()
		f.conns = append(f.conns, nc)
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer nc.Close()
			fr := wire.NewFrameReader(bufio.NewReader(nc))
			fw := wire.NewFrameWriter(nc)
			id := f.id
			if f.hello != nil {
				id = f.hello(n)
			}
			a := acceptor{
				key:    testCookie.TransportKey(),
				self:   id,
				screen: func(*wire.Hello) string { return "" },
				admit:  func(*wire.Hello) (bool, bool) { return false, false },
			}
			if _, err := a.run(fr, fw); err != nil {
				return
			}
			f.serve(n, nc, fr, fw)
		}()
	}
}

func (f *fakePeer) close() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// echoFake answers every Reward with its points as the total.
func echoFake(_ int, _ net.Conn, fr *wire.FrameReader, fw *wire.FrameWriter) {
	for {
		id, m, err := fr.ReadMsg()
		if err != nil {
			return
		}
		if err := fw.WriteFrame(id, &wire.RewardReply{Total: m.(*wire.Reward).Points}); err != nil {
			return
		}
	}
}

// dialRaw opens a plain TCP connection to a transport, for tests that
// write bytes by hand.
func dialRaw(t testing.TB, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// expectClosed reads from nc until the peer closes it.
func expectClosed(t testing.TB, nc net.Conn) {
	t.Helper()
	if err := nc.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	for {
		_, err := nc.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("peer did not close the connection")
		}
		return
	}
}
