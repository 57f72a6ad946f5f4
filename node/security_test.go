package node_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/node"
)

// startPlain starts a node with the production listeners (no injected
// gossip transport), on a test's own name service port.
func startPlain(t *testing.T, name string, namesPort int, c cookie.Cookie) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := node.DefaultConfig(name+"@testhost", c)
	cfg.NamesPort = namesPort
	cfg.CallTimeout, cfg.LinkTimeout = time.Second, time.Second
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(n.Close)
	// Drain the events, as a console would.
	go func() {
		for range n.Events() {
		}
	}()
	return n
}

func connect(t *testing.T, from *node.Node, to string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return from.Connect(ctx, to)
}

// A node with another cookie cannot join, whichever side connects, and
// the error says why; the right cookie works.
func TestWrongCookieCannotJoin(t *testing.T) {
	other, err := cookie.New("a different cluster's cookie")
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	a := startPlain(t, "a", port, testCookie)
	b := startPlain(t, "b", port, testCookie)
	x := startPlain(t, "x", port, other)

	for _, c := range []struct {
		from *node.Node
		to   string
	}{{x, "a@testhost"}, {a, "x@testhost"}} {
		err := connect(t, c.from, c.to)
		if err == nil || !strings.Contains(err.Error(), "cookie mismatch") {
			t.Fatalf("%s connecting to %s: %v, want a cookie mismatch", c.from.Name(), c.to, err)
		}
		t.Logf("%s -> %s: %v", c.from.Name(), c.to, err)
	}
	if err := connect(t, b, "a@testhost"); err != nil {
		t.Fatalf("same cookie: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, "a and b to see each other", func() bool {
		return len(a.Nodes()) == 1 && len(b.Nodes()) == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if total, err := a.Reward(ctx, "p", "5"); err != nil || total != 5 {
		t.Fatalf("reward in the cookie's cluster: %d, %v", total, err)
	}
	if got := x.Nodes(); len(got) != 0 {
		t.Fatalf("the node with another cookie sees %v", got)
	}
	if got := a.Nodes(); len(got) != 1 || got[0] != "b@testhost" {
		t.Fatalf("a sees %v, want only b", got)
	}
}

// TestHostileInputOnEveryPort throws garbage, truncated frames, oversize
// length prefixes, half-open and idle connections at every port a live
// node listens on (transport, gossip TCP and UDP, name service) while
// rewards go on. Every reward succeeds with the right total, and once the
// attack stops the node's goroutines and heap come back to what they were.
func TestHostileInputOnEveryPort(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of hostile traffic")
	}
	port := testenv.FreePort(t)
	a := startPlain(t, "a", port, testCookie)
	b := startPlain(t, "b", port, testCookie)
	if err := connect(t, a, "b@testhost"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "a and b to see each other", func() bool {
		return len(a.Nodes()) == 1 && len(b.Nodes()) == 1
	})
	r := &rewarder{}
	for _, n := range []*node.Node{a, b, a, b} { // warm up every link
		if err := r.reward(n); err != nil {
			t.Fatal(err)
		}
	}
	goroutines, heap := settle()

	stopRewards := r.rewardUntilStopped(a, b)
	var held heldConns
	var attackers sync.WaitGroup
	for what, p := range map[string]int{
		"transport":    a.TransportPort(),
		"gossip tcp":   a.GossipPort(),
		"name service": port,
	} {
		attackers.Go(func() { attackTCP(t, what, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), &held) })
	}
	attackers.Go(func() { attackUDP(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(a.GossipPort()))) })
	attackers.Wait()

	// The node closes what the attack left open by itself: handshakes
	// time out, idle lookups and gossip streams too. Rewards go on
	// meanwhile.
	testenv.WaitFor(t, 20*time.Second, "every held connection to be closed by the node", held.allClosed)
	rewards, err := stopRewards()
	if err != nil {
		t.Fatalf("a reward failed under attack: %v", err)
	}
	if rewards == 0 {
		t.Fatal("no reward ran during the attack")
	}
	stats := a.ListenerStats()
	t.Logf("%d rewards during the attack; a's transport: %v; gossip: %+v", rewards, stats.Transport, stats.Gossip)
	if stats.Transport.HandshakeFailed == 0 {
		t.Error("the transport counted no failed handshake")
	}
	if err := r.reward(a); err != nil {
		t.Fatal(err)
	}

	// Back to normal: goroutines within a few of the baseline (memberlist
	// starts short-lived ones for probes), heap within a few MB.
	var g int
	var h uint64
	testenv.WaitFor(t, 20*time.Second, "goroutines and heap back to their baseline", func() bool {
		g, h = settle()
		return g <= goroutines+5 && h <= heap+8<<20
	})
	t.Logf("goroutines %d -> %d, heap %d KB -> %d KB", goroutines, g, heap>>10, h>>10)
}

// rewarder rewards player p by one at a time, so that it knows the total
// every reward must answer.
type rewarder struct{ total int64 }

func (r *rewarder) reward(at *node.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := at.Reward(ctx, "p", "1")
	if err != nil {
		return fmt.Errorf("reward at %s: %w", at.Name(), err)
	}
	if r.total++; got != r.total {
		return fmt.Errorf("reward at %s: total %d, want %d", at.Name(), got, r.total)
	}
	return nil
}

// rewardUntilStopped rewards at a and b in turn, on a goroutine of its own,
// until the first failure or until stop is called. stop returns how many
// rewards succeeded and the failure, if any; the caller may use r again
// once stop has returned.
func (r *rewarder) rewardUntilStopped(a, b *node.Node) (stop func() (int, error)) {
	quit := make(chan struct{})
	done := make(chan error, 1)
	var rewards int
	go func() {
		for i := 0; ; i++ {
			select {
			case <-quit:
				done <- nil
				return
			default:
			}
			if err := r.reward([]*node.Node{a, b}[i%2]); err != nil {
				done <- err
				return
			}
			rewards++
		}
	}()
	return func() (int, error) {
		close(quit)
		err := <-done
		return rewards, err
	}
}

// attackTCP opens connections to addr (the port what names) in rounds:
// each hostile payload on a connection of its own, closed at once,
// half-closed or left open, then idle connections that never send a byte.
// The ones left open go to held.
func attackTCP(t *testing.T, what, addr string, held *heldConns) {
	for round := range 20 {
		for _, payload := range hostilePayloads() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Errorf("%s: dial: %v", what, err)
				return
			}
			_, _ = c.Write(payload)
			switch round % 3 {
			case 0:
				c.Close()
			case 1: // half-open: no more writes, but keep reading
				_ = c.(*net.TCPConn).CloseWrite()
				held.add(c)
			default: // left open, as a slow peer would
				held.add(c)
			}
		}
		for range 10 {
			if c, err := net.Dial("tcp", addr); err == nil {
				held.add(c)
			}
		}
	}
}

// attackUDP sends random datagrams of every size to the gossip port addr.
func attackUDP(t *testing.T, addr string) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Errorf("gossip udp: %v", err)
		return
	}
	defer c.Close()
	buf := make([]byte, 1400)
	for i := range 2000 {
		_, _ = rand.Read(buf)
		_, _ = c.Write(buf[:1+i%len(buf)])
	}
}

// heldConns are the idle and half-open connections an attack left open.
type heldConns struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (h *heldConns) add(c net.Conn) {
	h.mu.Lock()
	h.conns = append(h.conns, c)
	h.mu.Unlock()
}

// allClosed says whether the node has closed every held connection;
// those it has are closed here too and forgotten.
func (h *heldConns) allClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := 0; i < len(h.conns); i++ {
		h.conns[i].SetReadDeadline(time.Now().Add(time.Millisecond))
		var one [1]byte
		_, err := h.conns[i].Read(one[:])
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return false // still open
		}
		h.conns[i].Close()
		h.conns = append(h.conns[:i], h.conns[i+1:]...)
		i--
	}
	return true
}

// hostilePayloads are what each attacking connection sends first.
func hostilePayloads() [][]byte {
	junk := make([]byte, 4096)
	_, _ = rand.Read(junk)
	return [][]byte{
		junk,
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0x7f, 0xff, 0xff, 0xff},        // oversize length prefix
		{0xff, 0xff, 0xff, 0xff, 1, 2},  // bigger still
		{0, 0, 0, 100, 1, 0, 0, 0, 0},   // truncated frame
		{0, 0, 0, 0},                    // empty frame
		{0, 0, 0, 2, 1, 0},              // shorter than its header
		{10, 0x01, 0, 0, 0, 1, 2, 3, 4}, // memberlist: encrypted stream of 16 MiB, cut
		{0, 0, 0, 13, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0xa1, 'v', 0x02}, // a Hello without names or nonce
	}
}

// settle collects garbage and returns the goroutine count and heap in use.
func settle() (int, uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapInuse
}
