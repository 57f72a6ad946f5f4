package transport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/appnode/appnode/wire"
)

// maxBatch is how many encoded bytes the writer collects before writing
// even though more frames are queued, so a long burst still streams out
// instead of growing one huge buffer.
const maxBatch = 256 << 10

type frame struct {
	id uint64
	m  wire.Msg
}

// sender is the write half of a connection: callers queue frames, and one
// goroutine (run) encodes everything queued since its last write and
// writes it in one call. Under load that turns many small writes into one
// syscall; when idle a frame goes out at once. A caller whose frame is
// alone on the connection writes it on its own goroutine (send,
// writeHere) when no one else is writing; one goroutine at a time owns
// the write side (writing).
type sender struct {
	nc      net.Conn
	fw      *wire.FrameWriter
	timeout time.Duration // per write

	// keepalive, if set, is how often the writer checks that something
	// was written; if nothing was since the last check, it sends a
	// wire.Keepalive. Only dialers set it: acceptors close connections
	// idle for longer than their IdleTimeout.
	keepalive time.Duration
	wrote     bool // a flush happened since the last keepalive check; owner of the write side only

	deadline time.Time // the write deadline in force (zero: none yet); owner of the write side only
	until    time.Time // the deadline of the caller writing in writeHere, if any; owner only

	// encodeFailed is called on the writer goroutine when a frame cannot
	// be encoded (too large, unencodable value). It returns a frame body
	// to send under the same id instead, or nil to send nothing.
	encodeFailed func(id uint64, m wire.Msg, err error) wire.Msg

	mu      sync.Mutex
	queue   []frame
	stopped bool
	// writing: a goroutine (the writer, or a caller in send) owns fw and
	// the socket's write side.
	writing bool
	failed  error         // a caller's write failed; the writer returns it
	wake    chan struct{} // capacity 1: "queue may be non-empty"
	done    chan struct{} // closed by stop

	spare []frame // the writer's emptied batch, swapped in as the next queue
}

func newSender(nc net.Conn, fw *wire.FrameWriter, timeout time.Duration) *sender {
	return &sender{
		nc:      nc,
		fw:      fw,
		timeout: timeout,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// push queues a frame without waking anyone: the caller then writes it
// (writeHere) or wakes the writer (kick). It reports false if the sender
// has stopped; the frame is then dropped.
func (s *sender) push(id uint64, m wire.Msg) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.queue = append(s.queue, frame{id, m})
	return true
}

// send queues a frame for a caller that may block on the socket (a
// request's own goroutine, not a read loop). If nothing is being written,
// the caller writes the queue itself: on an idle link that saves waking
// the writer goroutine, a scheduling round trip on every hop of a reward.
//
// alone says the caller's frame is the only one in flight on the
// connection (the one request, or the reply to it). Otherwise more frames
// are likely coming, and the writer batches what queues while it wakes.
// until is the caller's deadline (zero: none); its write is cut there.
func (s *sender) send(id uint64, m wire.Msg, alone bool, until time.Time) bool {
	if !s.push(id, m) {
		return false
	}
	if !alone {
		s.kick()
		return true
	}
	s.writeHere(until)
	return true
}

// writeHere writes what is queued on the caller's goroutine, unless
// someone is writing already: then the writer goroutine is woken to take
// it (it may be the one writing, about to find the queue empty).
func (s *sender) writeHere(until time.Time) {
	s.mu.Lock()
	if s.stopped || s.failed != nil || len(s.queue) == 0 {
		// After a failed write the stream may end mid-frame: nothing
		// more goes out, and the writer is closing the connection.
		s.mu.Unlock()
		return
	}
	if s.writing {
		s.mu.Unlock()
		s.kick()
		return
	}
	s.writing = true
	s.mu.Unlock()
	// One batch only: a caller does not stay to write what others queue
	// after it (the writer goroutine does, woken below).
	s.until = until
	s.encodeQueued()
	err := s.flush()
	s.until = time.Time{}
	if errors.Is(err, errCallerCut) {
		// The caller's time ran out, not the link's: the writer goroutine
		// finishes the frames (whatever the cut write left pending) under
		// the link's own timeout. A multiplexed link is not broken because
		// one call gave up, even mid-frame.
		err = nil
	}
	left := s.fw.Pending() > 0 // read while this goroutine still owns fw
	s.mu.Lock()
	s.writing = false
	if err != nil && s.failed == nil {
		s.failed = err
	}
	more := err != nil || left || len(s.queue) > 0
	s.mu.Unlock()
	if more {
		s.kick()
	}
}

func (s *sender) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// own makes the writer goroutine the owner of the write side. It reports
// false, with the error to return, if a caller's write failed; and false
// with no error if a caller is writing now (it kicks the writer when done
// if frames are left).
func (s *sender) own() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return false, s.failed
	}
	if s.writing {
		return false, nil
	}
	s.writing = true
	return true, nil
}

func (s *sender) disown() {
	s.mu.Lock()
	s.writing = false
	s.mu.Unlock()
}

// stop makes run return and drops whatever is still queued.
func (s *sender) stop() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		s.queue = nil
		close(s.done)
	}
	s.mu.Unlock()
}

// run writes queued frames until stop is called (it then returns nil) or a
// write fails (it returns the error; the caller closes the connection).
func (s *sender) run() error {
	var tick <-chan time.Time
	if s.keepalive > 0 {
		t := time.NewTicker(s.keepalive)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-s.wake:
		case <-tick:
			if err := s.keepaliveTick(); err != nil {
				return err
			}
			continue
		case <-s.done:
			return nil
		}
		ok, err := s.own()
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		err = s.drain()
		s.disown()
		if err != nil {
			return err
		}
	}
}

func (s *sender) keepaliveTick() error {
	ok, err := s.own()
	if !ok {
		return err // nil if a caller is writing: the link is not idle
	}
	defer s.disown()
	if s.wrote {
		s.wrote = false
		return nil
	}
	// Nothing went out for a whole interval: tell the acceptor the link
	// is still wanted. Between two writes there are thus at most two
	// intervals.
	if err := s.fw.Append(0, &wire.Keepalive{}); err != nil {
		return fmt.Errorf("encode keepalive: %w", err)
	}
	return s.flush()
}

// drain encodes queued frames until the queue is momentarily empty, then
// writes them: the writer goroutine's loop. Before it writes, it lets
// others run once (see below).
func (s *sender) drain() error {
	yielded := false
	for {
		if !s.encodeQueued() {
			if !yielded && s.fw.Pending() > 0 {
				// Group commit: let the goroutines that are about to send
				// run first, so that their frames join this write. When
				// nothing else is runnable this returns at once.
				yielded = true
				runtime.Gosched()
				continue
			}
			break
		}
		if s.fw.Pending() >= maxBatch {
			if err := s.flush(); err != nil {
				return err
			}
		}
	}
	return s.flush()
}

// encodeQueued encodes what is queued now, reporting false if nothing was.
func (s *sender) encodeQueued() bool {
	s.mu.Lock()
	if len(s.queue) == 0 {
		s.mu.Unlock()
		return false
	}
	// Double buffering: callers fill one slice while this goroutine
	// encodes the other, so neither allocates in the steady state.
	batch := s.queue
	s.queue = s.spare
	s.mu.Unlock()
	for i, f := range batch {
		s.append(f)
		batch[i] = frame{} // let the message be collected
	}
	s.spare = batch[:0]
	return true
}

func (s *sender) append(f frame) {
	err := s.fw.Append(f.id, f.m)
	if err == nil {
		return
	}
	sub := s.encodeFailed(f.id, f.m, err)
	if sub == nil {
		return
	}
	// A substitute is a short *wire.Error; if even that fails there is
	// nothing left to say, and the caller's timeout covers it.
	_ = s.fw.Append(f.id, sub)
}

// errCallerCut is flush's error when a write was cut by the deadline of
// the caller writing it (writeHere), which was shorter than the link's
// write timeout: the link itself has not failed.
var errCallerCut = errors.New("write cut at the caller's deadline")

func (s *sender) flush() error {
	if s.fw.Pending() == 0 {
		return nil
	}
	// A peer that stops reading must not pin this goroutine and the
	// queue behind it forever, and a caller writing on its own goroutine
	// (writeHere) must not be held past its own deadline either. Each
	// write may take until the earlier of the two; only a write that
	// runs out of the link's own time breaks the connection. The
	// deadline in force moves only when it is later than that (it would
	// hold a caller too long) or would cut the write before three
	// quarters of its time: a write is cut after between 3/4 and all of
	// it, and a steady stream of writes, each allowed the same time from
	// its own start, moves it once per quarter of that time rather than
	// on every write.
	now := time.Now()
	want := now.Add(s.timeout)
	callers := false
	if !s.until.IsZero() && s.until.Before(want) {
		want = s.until
		callers = true
	}
	if s.deadline.IsZero() || s.deadline.After(want) || s.deadline.Before(now.Add(want.Sub(now)*3/4)) {
		if err := s.nc.SetWriteDeadline(want); err != nil {
			return fmt.Errorf("set write deadline: %w", err)
		}
		s.deadline = want
	}
	if err := s.fw.Flush(); err != nil {
		if callers && errors.Is(err, os.ErrDeadlineExceeded) {
			return errCallerCut
		}
		return fmt.Errorf("write: %w", err)
	}
	s.wrote = true
	return nil
}
