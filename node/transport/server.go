package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
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

	closeOnce sync.Once
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
// goroutine and the writer on another. The Transport counted it in wg.
func (sc *serverConn) serve() {
	t := sc.t
	defer t.wg.Done()
	defer sc.close()
	if !sc.handshake() {
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
	sc.readLoop()
}

// handshake reads the Hello and answers it. It reports whether the
// connection is accepted; on false the caller closes it.
func (sc *serverConn) handshake() bool {
	t := sc.t
	remote := sc.nc.RemoteAddr()
	if err := sc.nc.SetDeadline(time.Now().Add(t.cfg.DialTimeout)); err != nil {
		return false
	}
	k, id, body, err := sc.fr.ReadFrame()
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			t.logf("transport: dropping connection from %s: reading hello: %v", remote, err)
		}
		return false
	}
	if k != wire.KindHello || id != 0 {
		t.logf("transport: dropping connection from %s: got %s frame %d, want hello", remote, k, id)
		return false
	}
	m, err := wire.Decode(k, body)
	if err != nil {
		t.logf("transport: dropping connection from %s: %v", remote, err)
		return false
	}
	h := m.(*wire.Hello)

	self := t.cfg.Self()
	reply := &wire.HelloReply{Version: wire.Version, Node: self}
	refuse := func(reason string) bool {
		t.logf("transport: refusing connection from %s (%s): %s", h.From.Name, remote, reason)
		reply.Refused = reason
		_ = sc.snd.fw.WriteFrame(0, reply) // best effort: it is closed next anyway
		return false
	}
	switch {
	case h.Version != wire.Version:
		return refuse(fmt.Sprintf("protocol version %d not supported, this node speaks %d", h.Version, wire.Version))
	case h.Client:
		if t.cfg.HandleClient == nil {
			return refuse("this node takes no client connections")
		}
		if h.To != "" && h.To != self.Name {
			return refuse(fmt.Sprintf("this is %s, not %s", self.Name, h.To))
		}
	default:
		if h.From.Name == "" {
			return refuse("hello carries no node name")
		}
		if h.To != self.Name {
			return refuse(fmt.Sprintf("this is %s, not %s", self.Name, h.To))
		}
		if t.blocked(h.From.Name) {
			return false
		}
		if t.cfg.Fenced != nil && t.cfg.Fenced(h.From) {
			t.logf("transport: %s (boot %d) was declared failed; telling it so", h.From.Name, h.From.Boot)
			reply.Fenced = true
			_ = sc.snd.fw.WriteFrame(0, reply)
			return false
		}
	}
	if err := sc.snd.fw.WriteFrame(0, reply); err != nil {
		t.logf("transport: dropping connection from %s (%s): writing hello reply: %v", h.From.Name, remote, err)
		return false
	}
	if err := sc.nc.SetDeadline(time.Time{}); err != nil {
		return false
	}
	t.mu.Lock()
	sc.from, sc.client = h.From, h.Client
	t.mu.Unlock()
	return true
}

func (sc *serverConn) readLoop() {
	t := sc.t
	for {
		k, id, body, err := sc.fr.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				t.logf("transport: connection from %s lost: %v", sc.peerName(), err)
			}
			return
		}
		if !sc.client && t.blocked(sc.from.Name) {
			return
		}
		m, err := wire.Decode(k, body)
		if err == nil && (id == 0 || k == wire.KindHello || k == wire.KindHelloReply || k == wire.KindError) {
			err = fmt.Errorf("unexpected %s frame with id %d", k, id)
		}
		if err != nil {
			// Framing is intact, but a peer sending what it should not
			// is broken; drop it rather than guess.
			t.logf("transport: closing connection from %s: bad frame: %v", sc.peerName(), err)
			return
		}
		select {
		case sc.sem <- struct{}{}:
		case <-sc.ctx.Done():
			return
		}
		t.wg.Add(1)
		go sc.handle(id, m)
	}
}

func (sc *serverConn) handle(id uint64, m wire.Msg) {
	defer sc.t.wg.Done()
	defer func() { <-sc.sem }()
	sc.snd.enqueue(id, sc.dispatch(m))
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
		cmd, ok := m.(*wire.Command)
		if !ok {
			return &wire.Error{Code: wire.CodeBadRequest, Msg: fmt.Sprintf("a client may send only commands, not %s", m.Kind())}
		}
		out, err = t.cfg.HandleClient(sc.ctx, cmd)
	} else {
		out, err = t.cfg.Handle(sc.ctx, sc.from, m)
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
