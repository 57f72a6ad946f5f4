package replica

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Clock is the time the Store's own timers run on: the repair loop's
// ticker, the idle timer of its workers, the waits between a reward's
// attempts. A test gives it a clock it moves by hand, so that it drives
// the core step by step (replicatest.ManualClock). Deadlines of network
// calls stay on real time: they bound what the network does, not the
// core's decisions.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once, d after now.
	NewTimer(d time.Duration) Timer
	// NewTicker returns a ticker that fires every d.
	NewTicker(d time.Duration) Ticker
}

// Timer is a time.Timer behind an interface.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker is a time.Ticker behind an interface.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// RealClock is the clock of the machine.
type RealClock struct{}

func (RealClock) Now() time.Time { return time.Now() }

func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

func (RealClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// lockedRand makes a rand.Source safe for the Store's goroutines: the
// jitter of concurrent rewards' backoffs draws from one source, so that a
// seeded source replays the same draws for the same schedule.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newLockedRand(src rand.Source) *lockedRand {
	if src == nil {
		var seed [16]byte
		_, _ = crand.Read(seed[:])
		src = rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))
	}
	return &lockedRand{r: rand.New(src)}
}

func (l *lockedRand) uint64() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Uint64()
}

// duration returns a uniform duration in [0, d).
func (l *lockedRand) duration(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Duration(l.r.Int64N(int64(d)))
}

// ManualClock is a Clock that moves only when told (Advance), for tests
// that drive the Store's timers step by step. A tick is handed to its
// ticker's reader before Advance goes on, so once Advance returns from a
// later tick, the reader has finished with the earlier one: the test knows
// what the loop has seen. Timers fire into a buffer of one, as
// time.Timer's do.
type ManualClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*manualTimer
	tickers []*manualTicker
}

// NewManualClock starts at an arbitrary fixed time.
func NewManualClock() *ManualClock {
	return &ManualClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *ManualClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{clock: c, c: make(chan time.Time, 1), when: c.now.Add(d), armed: true}
	c.timers = append(c.timers, t)
	return t
}

func (c *ManualClock) NewTicker(d time.Duration) Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTicker{clock: c, c: make(chan time.Time), period: d, next: c.now.Add(d), stop: make(chan struct{})}
	c.tickers = append(c.tickers, t)
	return t
}

// Advance moves the clock forward by d: timers due fire, and every tick
// due is handed to its ticker's reader, in time order. It fails if a
// reader does not take a tick within limit (real time).
func (c *ManualClock) Advance(d, limit time.Duration) error {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var tick *manualTicker
		at := end
		for _, t := range c.tickers {
			if !t.stopped && !t.next.After(at) {
				tick, at = t, t.next
			}
		}
		c.now = at
		for _, t := range c.timers {
			if t.armed && !t.when.After(c.now) {
				t.armed = false
				select {
				case t.c <- c.now:
				default:
				}
			}
		}
		if tick == nil {
			c.mu.Unlock()
			return nil
		}
		tick.next = tick.next.Add(tick.period)
		c.mu.Unlock()
		select {
		case tick.c <- at:
		case <-tick.stop:
		case <-time.After(limit):
			return fmt.Errorf("manual clock: nobody took the tick of %v within %v", at, limit)
		}
	}
}

type manualTimer struct {
	clock *ManualClock
	c     chan time.Time
	when  time.Time
	armed bool
}

func (t *manualTimer) C() <-chan time.Time { return t.c }

func (t *manualTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := t.armed
	t.armed = false
	return was
}

func (t *manualTimer) Reset(d time.Duration) bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := t.armed
	t.armed, t.when = true, t.clock.now.Add(d)
	return was
}

type manualTicker struct {
	clock   *ManualClock
	c       chan time.Time
	period  time.Duration
	next    time.Time // guarded by the clock's mu
	stopped bool      // guarded by the clock's mu
	stop    chan struct{}
	once    sync.Once
}

func (t *manualTicker) C() <-chan time.Time { return t.c }

func (t *manualTicker) Stop() {
	t.clock.mu.Lock()
	t.stopped = true
	t.clock.mu.Unlock()
	t.once.Do(func() { close(t.stop) })
}
