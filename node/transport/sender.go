package transport

import (
	"fmt"
	"net"
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

// sender is the write half of a connection: callers queue frames without
// blocking, and one goroutine (run) encodes everything queued since its
// last write and writes it in one call. Under load that turns many small
// writes into one syscall; when idle a frame goes out at once.
type sender struct {
	nc      net.Conn
	fw      *wire.FrameWriter
	timeout time.Duration // per write

	// keepalive, if set, is how often the writer checks that something
	// was written; if nothing was since the last check, it sends a
	// wire.Keepalive. Only dialers set it: acceptors close connections
	// idle for longer than their IdleTimeout.
	keepalive time.Duration
	wrote     bool // a flush happened since the last keepalive check; writer goroutine only

	deadlineSet time.Time // when the write deadline was last moved; writer goroutine only

	// encodeFailed is called on the writer goroutine when a frame cannot
	// be encoded (too large, unencodable value). It returns a frame body
	// to send under the same id instead, or nil to send nothing.
	encodeFailed func(id uint64, m wire.Msg, err error) wire.Msg

	mu      sync.Mutex
	queue   []frame
	stopped bool
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

// enqueue queues a frame for the writer. It reports false if the sender
// has stopped; the frame is then dropped.
func (s *sender) enqueue(id uint64, m wire.Msg) bool {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, frame{id, m})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
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
			if s.wrote {
				s.wrote = false
				continue
			}
			// Nothing went out for a whole interval: tell the acceptor
			// the link is still wanted. Between two writes there are
			// thus at most two intervals.
			if err := s.fw.Append(0, &wire.Keepalive{}); err != nil {
				return fmt.Errorf("encode keepalive: %w", err)
			}
			if err := s.flush(); err != nil {
				return err
			}
			continue
		case <-s.done:
			return nil
		}
		if err := s.drain(); err != nil {
			return err
		}
	}
}

// drain encodes queued frames until the queue is momentarily empty, then
// writes them.
func (s *sender) drain() error {
	yielded := false
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.mu.Unlock()
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
		if s.fw.Pending() >= maxBatch {
			if err := s.flush(); err != nil {
				return err
			}
		}
	}
	return s.flush()
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

func (s *sender) flush() error {
	if s.fw.Pending() == 0 {
		return nil
	}
	// A peer that stops reading must not pin this goroutine and the
	// queue behind it forever. The deadline moves only once a quarter of
	// the timeout has passed, so a busy link does not reset a timer per
	// write: a write is cut after between 3/4 and all of the timeout.
	if now := time.Now(); now.Sub(s.deadlineSet) > s.timeout/4 {
		if err := s.nc.SetWriteDeadline(now.Add(s.timeout)); err != nil {
			return fmt.Errorf("set write deadline: %w", err)
		}
		s.deadlineSet = now
	}
	if err := s.fw.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	s.wrote = true
	return nil
}
