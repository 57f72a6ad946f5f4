package node

import (
	"sync"
	"sync/atomic"

	"github.com/appnode/appnode/replica"
)

// eventRing is how many recent events a node keeps for subscribers that
// reconnect (an SSE client's Last-replica.Event-ID): a few minutes of a busy
// failover, a few KiB of memory.
const eventRing = 512

// broadcaster numbers every event, keeps the last eventRing of them, and
// hands each to every subscriber without ever waiting on one: a
// subscriber whose buffer is full loses the event (and counts it) rather
// than stall the node. The console keeps its own channel (Events).
type broadcaster struct {
	mu     sync.Mutex
	seq    uint64
	ring   []replica.Event // the last events, oldest first once full at ringAt
	ringAt int
	subs   map[*Subscription]struct{}
	closed bool
}

// Subscription receives the node's events from the moment it was made.
type Subscription struct {
	// C delivers the events. It is closed by Close, and when the node
	// stops.
	C       <-chan replica.Event
	ch      chan replica.Event
	b       *broadcaster
	dropped atomic.Uint64
}

// Dropped counts the events this subscriber lost because its buffer was
// full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes C. Safe to call more than once,
// and after the node stopped.
func (s *Subscription) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if _, ok := s.b.subs[s]; ok {
		delete(s.b.subs, s)
		close(s.ch)
	}
}

func (b *broadcaster) publish(e replica.Event) replica.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	e.Seq = b.seq
	if len(b.ring) < eventRing {
		b.ring = append(b.ring, e)
	} else {
		b.ring[b.ringAt] = e
		b.ringAt = (b.ringAt + 1) % eventRing
	}
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			s.dropped.Add(1)
		}
	}
	return e
}

func (b *broadcaster) subscribe(buf int) *Subscription {
	if buf < 1 {
		buf = 1
	}
	ch := make(chan replica.Event, buf)
	s := &Subscription{C: ch, ch: ch, b: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(ch)
		return s
	}
	if b.subs == nil {
		b.subs = map[*Subscription]struct{}{}
	}
	b.subs[s] = struct{}{}
	return s
}

// since returns the kept events numbered after seq, oldest first, and
// whether they are all of them (false when some after seq were already
// pushed out of the ring).
func (b *broadcaster) since(seq uint64) ([]replica.Event, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []replica.Event
	ordered := append(append([]replica.Event{}, b.ring[b.ringAt:]...), b.ring[:b.ringAt]...)
	for _, e := range ordered {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	complete := seq >= b.seq || len(ordered) == 0 || ordered[0].Seq <= seq+1
	return out, complete
}

func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		delete(b.subs, s)
		close(s.ch)
	}
}

// Subscribe returns a subscription to this node's events (the reports the
// console prints), with a buffer of buf events. Close it when done.
func (n *Node) Subscribe(buf int) *Subscription { return n.bcast.subscribe(buf) }

// EventsSince returns the recent events numbered after seq (0 for all
// kept), oldest first, and whether none after seq was forgotten.
func (n *Node) EventsSince(seq uint64) ([]replica.Event, bool) { return n.bcast.since(seq) }
