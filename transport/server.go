package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appnode/appnode/wire"
)

// serverConn is the acceptor's end of a connection: it reads requests,
// runs each in a handler goroutine (at most MaxInflight at once), and
// queues the replies to its sender.
type serverConn struct {
	t  *Transport
	nc net.Conn
	fr *wire.FrameReader

	// Set by the handshake under t.mu; read under t.mu by Disconnect.
	from   wire.NodeID // the dialer's incarnation; zero for a client
	client bool

	ctx    context.Context // handlers' context, cancelled by close
	cancel context.CancelFunc
	snd    *sender
	sem    chan struct{} // one token per running handler
	// async serves a request without a handler where it can
	// (AsyncClients, AsyncHandler; nil: never); set by the handshake.
	// asyncs counts those not answered yet, at most MaxInflight.
	async  func(m wire.Msg, reply func(wire.Msg, error)) bool
	asyncs atomic.Int32

	// A request alone on the connection is served on the read loop (see
	// serveHere); if it runs for longer than successorDelay, another
	// goroutine takes over reading (successor). Under mu.
	mu        sync.Mutex
	reader    uint64    // generation of the goroutine reading; a successor is the next
	busy      bool      // the one reading is serving a request
	busySince time.Time // when it began serving it
	// successor is armed by the first request served inline after it
	// last fired, not by each one: arming a timer earlier than the
	// others makes Go wake an idle thread to watch it, and a wake-up per
	// request cost the read loop most of what serving inline saves.
	successor *time.Timer
	armed     bool

	closeOnce sync.Once
}

// successorDelay is how long a request served on the read loop may hold
// the connection's reading before another goroutine takes over. Until
// then, requests arriving behind it wait in the socket; a handler that
// waits on one of them (a node calling back over the same link) waits
// this long. Shorter: that wait is shorter, but slower requests pay for a
// second goroutine's wake-up.
const successorDelay = time.Millisecond

func (t *Transport) successorAfter() time.Duration {
	if t.cfg.successorDelay > 0 {
		return t.cfg.successorDelay
	}
	return successorDelay
}

func newServerConn(t *Transport, nc net.Conn) *serverConn {
	sc := &serverConn{
		t:   t,
		nc:  nc,
		fr:  wire.NewFrameReader(bufio.NewReaderSize(nc, readBufSize)),
		snd: newSender(nc, wire.NewFrameWriter(nc), t.cfg.RequestTimeout),
		sem: make(chan struct{}, t.cfg.MaxInflight),
	}
	sc.ctx, sc.cancel = context.WithCancel(t.ctx)
	sc.snd.encodeFailed = func(id uint64, m wire.Msg, err error) wire.Msg {
		t.logf("transport: cannot send %s reply to %s: %v", m.Kind(), sc.peerName(), err)
		return &wire.Error{Code: wire.CodeInternal, Msg: fmt.Sprintf("transport: encode %s reply: %v", m.Kind(), err)}
	}
	return sc
}

// serve runs the connection: handshake, then the read loop on this
// goroutine and the writer on another. The Transport counted it in wg, and
// in handshaking.
func (sc *serverConn) serve() {
	t := sc.t
	defer t.wg.Done()
	ok := sc.handshake()
	t.mu.Lock()
	t.handshaking = slices.DeleteFunc(t.handshaking, func(c *serverConn) bool { return c == sc })
	t.mu.Unlock()
	if !ok {
		sc.close()
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		if err := sc.snd.run(); err != nil {
			t.logf("transport: closing connection from %s: %v", sc.peerName(), err)
			sc.close()
		}
	}()
	if sc.readLoop() {
		sc.close()
	}
}

// handshake authenticates the dialer (see wire.Hello) within DialTimeout.
// It reports whether the connection is accepted; on false the caller
// closes it. Until the dialer has proved it knows the cookie, frames are
// limited to wire.MaxHandshakeFrame and nothing but the handshake is read.
func (sc *serverConn) handshake() bool {
	t := sc.t
	remote := sc.nc.RemoteAddr()
	if err := sc.nc.SetDeadline(time.Now().Add(t.cfg.DialTimeout)); err != nil {
		return false
	}
	sc.fr.SetLimit(wire.MaxHandshakeFrame)
	self := t.cfg.Peers.Self()
	a := acceptor{
		key:  t.key,
		self: self,
		screen: func(h *wire.Hello) string {
			switch {
			case h.Client:
				if t.cfg.Clients == nil {
					return "this node takes no client connections"
				}
				if h.To != "" && h.To != self.Name {
					return fmt.Sprintf("this is %s, not %s", self.Name, h.To)
				}
			case h.From.Name == "":
				return "hello carries no node name"
			case h.To != self.Name:
				return fmt.Sprintf("this is %s, not %s", self.Name, h.To)
			}
			return ""
		},
		admit: func(h *wire.Hello) (fenced, drop bool) {
			if h.Client {
				return false, false
			}
			if t.blocked(h.From.Name) {
				return false, true
			}
			if t.cfg.Peers.Fenced(h.From) {
				t.logf("transport: %s (boot %d) was declared failed; telling it so", h.From.Name, h.From.Boot)
				return true, false
			}
			return false, false
		},
	}
	h, err := a.run(sc.fr, sc.snd.fw)
	if err != nil {
		switch {
		case errors.Is(err, errFenced), errors.Is(err, errDropped):
			// Expected outcomes with members; logged above if at all.
		case errors.Is(err, errBadProof):
			t.stats.authFailed.Add(1)
			t.noisy.logf("transport: refusing connection from %s: %v (a node with another cookie, or a stranger)", remote, err)
		case errors.Is(err, errRefused):
			t.stats.handshakeFailed.Add(1)
			t.noisy.logf("transport: refusing connection from %s: %v", remote, err)
		default:
			t.stats.handshakeFailed.Add(1)
			if !errors.Is(err, net.ErrClosed) {
				t.noisy.logf("transport: dropping connection from %s during the handshake: %v", remote, err)
			}
		}
		return false
	}
	sc.fr.SetLimit(wire.MaxFrame)
	if err := sc.nc.SetDeadline(time.Time{}); err != nil {
		return false
	}
	t.mu.Lock()
	sc.from, sc.client = h.From, h.Client
	t.mu.Unlock()
	if ac, ok := t.cfg.Clients.(AsyncClients); ok && sc.client {
		sc.async = ac.HandleClientAsync
	} else if ah, ok := t.cfg.Handler.(AsyncHandler); ok && !sc.client {
		from := h.From
		sc.async = func(m wire.Msg, reply func(wire.Msg, error)) bool { return ah.HandleAsync(from, m, reply) }
	}
	return true
}

// readLoop reads and serves requests until the connection ends (it then
// reports true: the caller closes it) or a successor has taken over
// reading (false).
func (sc *serverConn) readLoop() bool {
	t := sc.t
	idle := t.cfg.IdleTimeout
	var refreshed time.Time
	for {
		if !sc.fr.Ready() {
			// The next read may wait: first send the replies to the
			// requests served here (below), all in one write. Holding
			// them any longer could hold a peer's primary, and through
			// it this node's requests to that peer.
			sc.snd.writeHere(time.Time{})
		}
		// The deadline is moved only every quarter of the idle limit, so
		// a busy link does not reset a timer per frame; a link is thus
		// closed after between 3/4 and all of IdleTimeout of silence.
		if now := time.Now(); now.Sub(refreshed) > idle/4 {
			if err := sc.nc.SetReadDeadline(now.Add(idle)); err != nil {
				return true
			}
			refreshed = now
		}
		k, id, body, err := sc.fr.ReadFrame()
		if err != nil {
			sc.readFailed(err, idle)
			return true
		}
		if !sc.client && t.blocked(sc.from.Name) {
			return true
		}
		if k == wire.KindKeepalive && id == 0 {
			continue
		}
		m, err := wire.Decode(k, body)
		if err == nil && (id == 0 || isHandshake(k) || k == wire.KindError) {
			err = fmt.Errorf("unexpected %s frame with id %d", k, id)
		}
		if err != nil {
			// Framing is intact, but a peer sending what it should not
			// is broken; drop it rather than guess.
			t.stats.badFrames.Add(1)
			t.logf("transport: closing connection from %s: bad frame: %v", sc.peerName(), err)
			return true
		}
		if sc.serveAsync(id, m) {
			continue
		}
		if !sc.client && t.cfg.Handler.Inline(m) {
			// The replies to what one read brought in go out in one
			// write, from this loop, before it next waits (above or
			// below): a keeper acknowledges a batch of updates without
			// waking the writer goroutine. This loop may then block on
			// the socket for up to a write timeout, but only if the
			// dialer stops reading its replies, and a dialer's reader
			// never waits on anything but the socket.
			sc.snd.push(id, sc.dispatch(m))
			continue
		}
		select {
		case sc.sem <- struct{}{}:
		default:
			sc.snd.writeHere(time.Time{}) // about to wait for a handler
			select {
			case sc.sem <- struct{}{}:
			case <-sc.ctx.Done():
				return true
			}
		}
		if sc.alone(1) {
			// Alone on the connection: serve it here.
			if !sc.serveHere(id, m) {
				return false
			}
			continue
		}
		t.serveRequest(request{sc, id, m})
	}
}

// serveAsync offers a request to AsyncClients or AsyncHandler, unless it
// is alone on the connection or MaxInflight are out already. It reports
// whether the request was taken.
func (sc *serverConn) serveAsync(id uint64, m wire.Msg) bool {
	if sc.async == nil {
		return false
	}
	if int(sc.asyncs.Load()) >= cap(sc.sem) || sc.alone(0) {
		return false
	}
	sc.asyncs.Add(1)
	taken := sc.async(m, func(rep wire.Msg, err error) {
		if err != nil {
			rep = toWireError(err)
		} else if rep == nil {
			rep = &wire.Error{Code: wire.CodeInternal, Msg: fmt.Sprintf("%s handler returned no reply", m.Kind())}
		}
		sc.snd.send(id, rep, false, time.Time{})
		sc.asyncs.Add(-1)
	})
	if !taken {
		sc.asyncs.Add(-1)
	}
	return taken
}

// alone says whether the request just read is the only one on the
// connection: no other being handled (held counts the handler tokens it
// holds itself), none answered asynchronously, nothing more buffered.
func (sc *serverConn) alone(held int) bool {
	return len(sc.sem) == held && sc.asyncs.Load() == 0 && !sc.fr.Ready()
}

// readFailed counts and logs why reading the connection ended; it is off
// the read loop's path, which only ever comes here once, to close.
func (sc *serverConn) readFailed(err error, idle time.Duration) {
	t := sc.t
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.As(err, &ne) && ne.Timeout():
		t.stats.idleClosed.Add(1)
		t.logf("transport: closing connection from %s: nothing received for %v", sc.peerName(), idle)
	case errors.Is(err, wire.ErrFrameTooLarge), errors.Is(err, wire.ErrFrameTooShort), errors.Is(err, io.ErrUnexpectedEOF):
		t.stats.badFrames.Add(1)
		t.logf("transport: closing connection from %s: bad frame: %v", sc.peerName(), err)
	default:
		t.logf("transport: connection from %s lost: %v", sc.peerName(), err)
	}
}

// serveHere serves a request on the read loop, as a plain server of a
// socket would, instead of waking a handler goroutine for it and then
// waking this loop again for the next request: on an unloaded link that
// is a wake-up saved on every request. Only a request that is the only
// one in flight on the connection, with nothing more buffered, is served
// here (requests queued behind it would wait); if it takes longer than
// successorDelay, a successor goroutine takes over reading. It reports
// false if one did: this goroutine then has nothing more to do.
func (sc *serverConn) serveHere(id uint64, m wire.Msg) bool {
	// Replies to the requests served inline so far go first: the handler
	// may block.
	sc.snd.writeHere(time.Time{})
	now := time.Now()
	sc.mu.Lock()
	sc.busy = true
	sc.busySince = now
	gen := sc.reader
	if !sc.armed {
		sc.armed = true
		if sc.successor == nil {
			sc.successor = time.AfterFunc(sc.t.successorAfter(), sc.takeOver)
		} else {
			sc.successor.Reset(sc.t.successorAfter())
		}
	}
	sc.mu.Unlock()

	reply := sc.dispatch(m)
	sc.snd.send(id, reply, true, time.Time{})

	sc.mu.Lock()
	handedOff := sc.reader != gen
	if !handedOff {
		// Once a successor runs, the state is its own. The timer stays
		// armed: when it fires it finds the loop idle, or serving a later
		// request, which it gives the rest of that one's time.
		sc.busy = false
	}
	sc.mu.Unlock()
	<-sc.sem
	return !handedOff
}

// takeOver starts a successor reader if the read loop has been serving
// one request for successorDelay; run by the successor timer.
func (sc *serverConn) takeOver() {
	t := sc.t
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.busy {
		sc.armed = false // the loop is back; its next inline request arms it
		return
	}
	if left := t.successorAfter() - time.Since(sc.busySince); left > 0 {
		sc.successor.Reset(left) // a later request, with time left
		return
	}
	sc.armed = false
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.wg.Add(1) // under t.mu with closed false, as the package needs
	}
	t.mu.Unlock()
	if closed {
		return
	}
	sc.reader++
	sc.busy = false
	go func() {
		defer t.wg.Done()
		if sc.readLoop() {
			sc.close()
		}
	}()
}

// request is one frame waiting for a handler.
type request struct {
	sc *serverConn
	id uint64
	m  wire.Msg
}

// handlerIdle is how long a handler goroutine waits for another request
// before it exits. Handlers are reused because a fresh goroutine's stack
// grows through the reward path on every request, which showed as a
// twentieth of a loaded node's CPU.
const handlerIdle = 5 * time.Second

// serveRequest runs r on an idle handler goroutine, or on a new one. Each
// connection's sem still bounds how many of its requests run at once.
func (t *Transport) serveRequest(r request) {
	select {
	case t.requests <- r:
	default:
		t.wg.Add(1)
		go t.handler(r)
	}
}

func (t *Transport) handler(r request) {
	defer t.wg.Done()
	idle := time.NewTimer(handlerIdle)
	defer idle.Stop()
	for {
		reply := r.sc.dispatch(r.m)
		r.sc.snd.send(r.id, reply, len(r.sc.sem) == 1, time.Time{})
		<-r.sc.sem
		idle.Reset(handlerIdle)
		select {
		case r = <-t.requests:
		case <-idle.C:
			return
		case <-t.ctx.Done():
			return
		}
	}
}

// dispatch runs the handler for m and turns its outcome into a reply.
func (sc *serverConn) dispatch(m wire.Msg) (reply wire.Msg) {
	t := sc.t
	defer func() {
		if r := recover(); r != nil {
			t.logf("transport: %s handler for %s panicked: %v\n%s", m.Kind(), sc.peerName(), r, debug.Stack())
			reply = &wire.Error{Code: wire.CodeInternal, Msg: fmt.Sprintf("%s handler panicked: %v", m.Kind(), r)}
		}
	}()
	var out wire.Msg
	var err error
	if sc.client {
		switch m.(type) {
		case *wire.Command, *wire.Reward, *wire.Where:
		default:
			return &wire.Error{Code: wire.CodeBadRequest, Msg: fmt.Sprintf("a client may send only commands, rewards and wheres, not %s", m.Kind())}
		}
		out, err = t.cfg.Clients.HandleClient(sc.ctx, m)
	} else {
		out, err = t.cfg.Handler.Handle(sc.ctx, sc.from, m)
	}
	switch {
	case err != nil:
		return toWireError(err)
	case out == nil:
		return &wire.Error{Code: wire.CodeInternal, Msg: fmt.Sprintf("%s handler returned no reply", m.Kind())}
	}
	return out
}

// toWireError turns a handler's error into what travels back. A *wire.Error
// anywhere in the chain gives the code (and owner); the message keeps the
// context wrapped around it.
func toWireError(err error) *wire.Error {
	var we *wire.Error
	if !errors.As(err, &we) {
		return &wire.Error{Code: wire.CodeInternal, Msg: err.Error()}
	}
	if error(we) == err {
		return we
	}
	return &wire.Error{Code: we.Code, Msg: err.Error(), Owner: we.Owner}
}

// close ends the connection: handlers' ctx is cancelled, queued replies are
// dropped, the read loop's next read fails.
func (sc *serverConn) close() {
	sc.closeOnce.Do(func() {
		sc.cancel()
		sc.snd.stop()
		sc.nc.Close()
		sc.mu.Lock()
		if sc.successor != nil {
			sc.successor.Stop()
		}
		sc.mu.Unlock()
		sc.t.mu.Lock()
		delete(sc.t.inbound, sc)
		sc.t.mu.Unlock()
	})
}

func (sc *serverConn) peerName() string {
	if sc.client {
		return "client " + sc.from.Name
	}
	if sc.from.Name != "" {
		return sc.from.Name
	}
	return sc.nc.RemoteAddr().String()
}
