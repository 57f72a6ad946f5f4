package transport

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Stats counts what the Transport's listener met. Every bad frame or
// failed handshake closes that connection only; these counters are how an
// operator (or a test) sees that it happened.
type Stats struct {
	Accepted        int64 // inbound connections accepted by the listener
	OverCap         int64 // closed at once: MaxConns reached, or too many handshakes under way
	HandshakeFailed int64 // closed during the handshake: garbage, timeout, refused hello
	AuthFailed      int64 // the dialer's proof was wrong: another cookie, or a stranger guessing
	BadFrames       int64 // authenticated connections closed after a malformed or unexpected frame
	IdleClosed      int64 // inbound connections closed after IdleTimeout of silence
}

func (s Stats) String() string {
	return fmt.Sprintf("accepted %d, over cap %d, failed handshakes %d, failed proofs %d, bad frames %d, idle closed %d",
		s.Accepted, s.OverCap, s.HandshakeFailed, s.AuthFailed, s.BadFrames, s.IdleClosed)
}

type counters struct {
	accepted, overCap, handshakeFailed, authFailed, badFrames, idleClosed atomic.Int64
}

// Stats returns the listener's counters so far.
func (t *Transport) Stats() Stats {
	c := &t.stats
	return Stats{
		Accepted:        c.accepted.Load(),
		OverCap:         c.overCap.Load(),
		HandshakeFailed: c.handshakeFailed.Load(),
		AuthFailed:      c.authFailed.Load(),
		BadFrames:       c.badFrames.Load(),
		IdleClosed:      c.idleClosed.Load(),
	}
}

// throttle logs at most one line per interval and counts the rest, so that
// a stranger who opens connections in a loop cannot fill the log.
type throttle struct {
	out func(format string, args ...any)

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const throttleInterval = time.Second

func (th *throttle) logf(format string, args ...any) {
	if th.out == nil {
		return
	}
	th.mu.Lock()
	now := time.Now()
	if now.Sub(th.last) < throttleInterval {
		th.suppressed++
		th.mu.Unlock()
		return
	}
	th.last = now
	n := th.suppressed
	th.suppressed = 0
	th.mu.Unlock()
	if n > 0 {
		format += " (and %d similar events not logged)"
		args = append(args, n)
	}
	th.out(format, args...)
}
