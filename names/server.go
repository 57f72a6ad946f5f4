package names

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// server is the name service proper: a table of entries, each owned by the
// connection that registered it (or by the serving node itself), served on
// one listener. It lives inside the Registration of the node that bound the
// port.
type server struct {
	ln   net.Listener
	t    *timing
	logf func(format string, args ...any)

	stop   chan struct{} // closed by close
	failed chan struct{} // closed when the listener dies on its own
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	entries map[string]*slot
	conns   map[*sconn]struct{}

	remote int // connections in conns from other hosts

	// Counters for tests and diagnostics.
	pings     atomic.Int64
	registers atomic.Int64
	refused   atomic.Int64 // connections closed at once: over a cap
	dropped   atomic.Int64 // connections closed after a malformed or unknown request
}

// slot is one registered name. owner is nil for the serving node's own
// entry, which lives as long as the server.
type slot struct {
	e     Entry
	owner *sconn
	gone  chan struct{} // closed when the entry is removed
}

// sconn is one accepted connection. name is the entry it holds, if any; it
// is guarded by server.mu.
type sconn struct {
	c      net.Conn
	local  bool
	opened time.Time
	name   string
}

func newServer(ln net.Listener, self Entry, t *timing, logf func(string, ...any)) *server {
	s := &server{
		ln:      ln,
		t:       t,
		logf:    logf,
		stop:    make(chan struct{}),
		failed:  make(chan struct{}),
		entries: map[string]*slot{},
		conns:   make(map[*sconn]struct{}),
	}
	if self.Name != "" {
		s.entries[self.Name] = &slot{e: self, gone: make(chan struct{})}
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

// close stops serving: the listener and every connection are closed, so
// every holder sees its connection break and takes over or re-registers.
// It waits for all of the server's goroutines.
func (s *server) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return
	}
	s.closed = true
	conns := make([]*sconn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	close(s.stop)
	s.ln.Close()
	for _, c := range conns {
		c.c.Close()
	}
	s.wg.Wait()
	s.mu.Lock()
	for name, sl := range s.entries {
		delete(s.entries, name)
		close(sl.gone)
	}
	s.mu.Unlock()
}

func (s *server) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				s.logf("name service: listener on %s closed unexpectedly", s.ln.Addr())
				close(s.failed)
				return
			}
			// Out of file descriptors and the like: back off as
			// net/http does rather than spin, and keep serving the
			// connections we have.
			if delay == 0 {
				delay = 5 * time.Millisecond
				s.logf("name service: accept on %s: %v; retrying", s.ln.Addr(), err)
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			select {
			case <-s.stop:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		sc := &sconn{c: c, local: isLocal(c.RemoteAddr(), c.LocalAddr()), opened: time.Now()}
		s.mu.Lock()
		// Other hosts only look names up; they get half the slots, so
		// that they can never keep this host's nodes from registering.
		if s.closed || len(s.conns) >= s.t.maxConns || (!sc.local && s.remote >= s.t.maxConns/2) {
			s.mu.Unlock()
			s.refused.Add(1)
			c.Close()
			continue
		}
		if !sc.local {
			s.remote++
		}
		s.conns[sc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(sc)
	}
}

// isLocal tells whether a connection comes from this host: over loopback,
// or from the very address it reached us on.
func isLocal(remote, local net.Addr) bool {
	ra, ok := remote.(*net.TCPAddr)
	if !ok {
		return false
	}
	la, ok := local.(*net.TCPAddr)
	if !ok {
		return false
	}
	return ra.IP.IsLoopback() || ra.IP.Equal(la.IP)
}

// handle serves one connection until it breaks, goes silent for too long,
// or sends anything that is not a well-formed request. Whatever it held is
// unregistered on the way out.
func (s *server) handle(c *sconn) {
	defer s.wg.Done()
	defer s.drop(c)
	for {
		idle := s.t.idle
		deadline := time.Now().Add(idle)
		if s.holds(c) {
			idle = s.t.holderIdle
			deadline = time.Now().Add(idle)
		} else if end := c.opened.Add(s.t.clientLife); s.t.clientLife > 0 && end.Before(deadline) {
			deadline = end
		}
		if err := c.c.SetReadDeadline(deadline); err != nil {
			return
		}
		var req request
		if err := readFrame(c.c, &req); err != nil {
			if name := s.heldName(c); name != "" && isTimeout(err) {
				s.logf("name service: %s sent no keepalive for %v; dropping its registration", name, idle)
			}
			// A bare io.EOF is the peer closing between frames;
			// anything wrapped is a frame cut short or undecodable.
			if !isTimeout(err) && err != io.EOF && !errors.Is(err, net.ErrClosed) {
				s.dropped.Add(1)
			}
			return
		}
		if req.V != protoVersion {
			s.dropped.Add(1)
			s.reply(c, reply{Status: statusBadRequest, Msg: fmt.Sprintf("name service protocol version %d is not supported (this service speaks %d)", req.V, protoVersion)})
			return
		}
		var rep reply
		switch req.Op {
		case opPing:
			s.pings.Add(1)
		case opLookup:
			if err := validName(req.Name); err != nil {
				rep = reply{Status: statusBadRequest, Msg: err.Error()}
				break
			}
			s.mu.Lock()
			sl := s.entries[req.Name]
			s.mu.Unlock()
			if sl == nil {
				rep.Status = statusNotFound
			} else {
				e := sl.e
				rep.Entry = &e
			}
		case opNames:
			if !s.sendNames(c) {
				return
			}
			continue
		case opRegister:
			rep = s.register(c, req.Entry)
		case opUnregister:
			s.unregister(c)
		default:
			s.dropped.Add(1)
			return
		}
		if !s.reply(c, rep) {
			return
		}
	}
}

func (s *server) reply(c *sconn, rep reply) bool {
	return writeFrame(c.c, s.t.reply, rep) == nil
}

func (s *server) sendNames(c *sconn) bool {
	s.mu.Lock()
	list := make([]Entry, 0, len(s.entries))
	for _, sl := range s.entries {
		list = append(list, sl.e)
	}
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	for i := range list {
		if !s.reply(c, reply{Entry: &list[i], More: true}) {
			return false
		}
	}
	return s.reply(c, reply{})
}

func (s *server) holds(c *sconn) bool { return s.heldName(c) != "" }

func (s *server) heldName(c *sconn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.name
}

// register binds e to connection c. A name held by a live registration is
// refused, with two exceptions that both follow from an entry living
// exactly as long as its connection. The same incarnation (same Boot) coming
// back on a new connection replaces its old one at once: only that process
// knows its boot id, so the old connection is provably dead. And a holder
// whose connection just broke may not have been noticed yet (a node killed
// and restarted at once races our read of its EOF), so a refusal first waits
// up to dupGrace for the old holder to go.
func (s *server) register(c *sconn, e *Entry) reply {
	if e == nil {
		return reply{Status: statusBadRequest, Msg: "register request carries no entry"}
	}
	if err := e.validate(); err != nil {
		return reply{Status: statusBadRequest, Msg: err.Error()}
	}
	if !c.local {
		return reply{Status: statusRefused, Msg: fmt.Sprintf("the name service accepts registrations only from its own host, not from %s", c.c.RemoteAddr())}
	}
	var grace <-chan time.Time
	for {
		s.mu.Lock()
		if c.name != "" {
			s.mu.Unlock()
			return reply{Status: statusBadRequest, Msg: fmt.Sprintf("this connection already holds %s", c.name)}
		}
		old := s.entries[e.Name]
		if old == nil || (old.owner != nil && e.Boot != 0 && old.e.Boot == e.Boot) {
			if old != nil {
				// Closing makes its handler exit; drop sees the slot
				// is no longer its own and leaves it alone.
				old.owner.c.Close()
				close(old.gone)
			}
			s.entries[e.Name] = &slot{e: *e, owner: c, gone: make(chan struct{})}
			c.name = e.Name
			s.mu.Unlock()
			s.registers.Add(1)
			return reply{}
		}
		s.mu.Unlock()
		if grace == nil {
			t := time.NewTimer(s.t.dupGrace)
			defer t.Stop()
			grace = t.C
		}
		select {
		case <-old.gone:
		case <-grace:
			return reply{Status: statusTaken}
		case <-s.stop:
			return reply{Status: statusTaken}
		}
	}
}

func (s *server) unregister(c *sconn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.release(c)
}

// release removes the entry c holds, if it still holds it. Called with mu.
func (s *server) release(c *sconn) {
	if c.name == "" {
		return
	}
	if sl := s.entries[c.name]; sl != nil && sl.owner == c {
		delete(s.entries, c.name)
		close(sl.gone)
	}
	c.name = ""
}

func (s *server) drop(c *sconn) {
	s.mu.Lock()
	s.release(c)
	delete(s.conns, c)
	if !c.local {
		s.remote--
	}
	s.mu.Unlock()
	c.c.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
