package membership

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

// Limits on the gossip port's TCP side, which anyone who can reach it can
// connect to. Memberlist serves each inbound stream on a goroutine of its
// own, with no cap on how many, and buffers up to 20 MB of an encrypted
// push/pull before it can check the first byte of it; each stream is
// bounded in time only (TCPTimeout). So a stranger with a fast link could
// make a node hold gigabytes. These limits are far above what a cluster of
// appnode's size exchanges.
const (
	// maxGossipStreams: inbound streams served at once. Members open one
	// per join, push/pull (one per member every PushPullInterval) and
	// TCP fallback probe, each lasting a round trip; a few at a time is
	// normal.
	maxGossipStreams = 32
	// maxGossipStreamBytes: how much one inbound stream may carry. A
	// push/pull carries every member's entry (name, address, tags: under
	// 1 KB each) plus Serf's per-member clocks: 2 MiB is room for
	// thousands of members.
	maxGossipStreamBytes = 2 << 20
)

var errStreamTooLong = errors.New("gossip stream exceeds its size limit")

// guardedTransport is memberlist's NetTransport with the limits above on
// inbound streams. UDP packets need none: memberlist reads each into a
// fixed 64 KB buffer and drops any that does not decrypt.
type guardedTransport struct {
	*memberlist.NetTransport

	streams chan net.Conn
	slots   chan struct{} // one token per stream being served
	stop    chan struct{}
	done    chan struct{}

	refused  atomic.Int64 // streams closed at once: maxGossipStreams reached
	tooLong  atomic.Int64 // streams cut at maxGossipStreamBytes
	shutOnce sync.Once
	shutErr  error
}

func guard(nt *memberlist.NetTransport) *guardedTransport {
	g := &guardedTransport{
		NetTransport: nt,
		streams:      make(chan net.Conn),
		slots:        make(chan struct{}, maxGossipStreams),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
	}
	go g.forward()
	return g
}

// StreamCh replaces NetTransport's: memberlist reads inbound streams here.
func (g *guardedTransport) StreamCh() <-chan net.Conn { return g.streams }

// forward hands NetTransport's inbound streams to memberlist, closing those
// over the cap. It runs until Shutdown, and keeps draining while
// NetTransport shuts down: its accept loop blocks sending each connection,
// and would never return otherwise.
func (g *guardedTransport) forward() {
	defer close(g.done)
	in := g.NetTransport.StreamCh()
	for {
		select {
		case conn := <-in:
			select {
			case g.slots <- struct{}{}:
			default:
				g.refused.Add(1)
				conn.Close()
				continue
			}
			lc := &limitedConn{Conn: conn, release: func() { <-g.slots }, left: maxGossipStreamBytes, tooLong: &g.tooLong}
			select {
			case g.streams <- lc:
			case <-g.stop:
				lc.Close()
			}
		case <-g.stop:
			return
		}
	}
}

// Shutdown stops NetTransport (while forward still drains it), then
// forward.
func (g *guardedTransport) Shutdown() error {
	g.shutOnce.Do(func() {
		g.shutErr = g.NetTransport.Shutdown()
		close(g.stop)
		<-g.done
	})
	return g.shutErr
}

// limitedConn is an inbound stream that holds a slot until closed and
// fails reads past its byte budget.
type limitedConn struct {
	net.Conn
	release func()
	once    sync.Once
	tooLong *atomic.Int64

	mu   sync.Mutex
	left int64
}

func (c *limitedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	left := c.left
	c.mu.Unlock()
	if left <= 0 {
		c.tooLong.Add(1)
		return 0, fmt.Errorf("%w (%d bytes)", errStreamTooLong, maxGossipStreamBytes)
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.left -= int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
