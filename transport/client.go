package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/wire"
)

// DefaultClientTimeout bounds a Client.Call whose ctx has no deadline. A
// console command may wait on a few node-to-node round trips, each bounded
// by RequestTimeout, so it gets more room than a single request.
const DefaultClientTimeout = 10 * time.Second

// handshakeResult is a dialed connection whose Hello was answered.
type handshakeResult struct {
	nc    net.Conn
	br    *bufio.Reader // under fr: may hold bytes sent after the handshake
	fr    *wire.FrameReader
	fw    *wire.FrameWriter
	reply *wire.HelloReply
}

// fencedBy returns the acceptor that told us we are fenced, or nil.
func (hs *handshakeResult) fencedBy() *wire.NodeID {
	if hs == nil || hs.reply == nil || !hs.reply.Fenced {
		return nil
	}
	return &hs.reply.Node
}

// handshake dials addr and runs the dialer's side of the handshake within
// ctx. A refused connection wraps wire.ErrRefused; a failed proof wraps
// ErrAuth; a fenced or refused Hello returns a *wire.Error (and, when
// fenced, the result, so the caller can see who fenced it). On error the
// connection is closed.
func handshake(ctx context.Context, addr string, key []byte, hello *wire.Hello) (*handshakeResult, error) {
	where := addr
	if hello.To != "" {
		where = hello.To + " at " + addr
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			// Nothing listens there, or a firewall rejects us: a hint,
			// not proof that the process is gone.
			return nil, fmt.Errorf("transport: %w", wire.Refused(where, err))
		}
		return nil, fmt.Errorf("transport: dial %s: %w", where, err)
	}
	// The deadline bounds the exchange; closing the socket is what stops a
	// blocked read early when ctx is cancelled (the Transport closing).
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	hs, err := exchangeHello(ctx, nc, key, hello, where)
	stopped := stop()
	var we *wire.Error
	if (err == nil && !stopped) || (err != nil && ctx.Err() != nil && !errors.As(err, &we)) {
		// Say why the socket closed under the exchange.
		err = fmt.Errorf("transport: handshake with %s: %w", where, ctx.Err())
	}
	if err != nil {
		nc.Close()
		return hs, err
	}
	return hs, nil
}

func exchangeHello(ctx context.Context, nc net.Conn, key []byte, hello *wire.Hello, where string) (*handshakeResult, error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := nc.SetDeadline(dl); err != nil {
			return nil, fmt.Errorf("transport: handshake with %s: %w", where, err)
		}
	}
	fw := wire.NewFrameWriter(nc)
	br := bufio.NewReaderSize(nc, readBufSize)
	fr := wire.NewFrameReader(br)
	// Until the acceptor has proved itself, it is a stranger.
	fr.SetLimit(wire.MaxHandshakeFrame)
	reply, err := dialerHandshake(fr, fw, key, hello, where)
	if err != nil {
		var hs *handshakeResult
		if reply != nil {
			hs = &handshakeResult{nc: nc, br: br, fr: fr, fw: fw, reply: reply}
		}
		return hs, err
	}
	fr.SetLimit(wire.MaxFrame)
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("transport: handshake with %s: %w", where, err)
	}
	return &handshakeResult{nc: nc, br: br, fr: fr, fw: fw, reply: reply}, nil
}

type result struct {
	m   wire.Msg
	err error
}

// watchDelay is how long a dialer's connection may go without anyone
// reading it before its watcher goroutine reads, so that a peer hanging up
// is noticed (LinkDown) while no call is in flight. Calls read their own
// replies (readFor), which saves waking a reader goroutine and then the
// caller on every call; a call that finds the watcher reading waits for
// it to hand over the reply instead. Shorter: a link's end is noticed
// sooner when idle, but calls that come this far apart meet the watcher.
const watchDelay = 5 * time.Millisecond

// clientConn is the dialer's end of a connection: it sends requests and
// matches replies to waiting callers by id. The read side is a role that
// one goroutine holds at a time (reading): a caller waiting for its reply
// takes it when free, reads and delivers frames until its own reply has
// come, then passes it to another waiting call (turn), or, with no call in
// flight, leaves it to the watcher, which takes it after watchDelay. A
// lone caller thus writes its request and reads its reply on its own
// goroutine, as a plain client of a socket would.
type clientConn struct {
	nc      net.Conn
	in      inbuf // the read side; only the holder of the read role touches it
	snd     *sender
	self    wire.NodeID // our incarnation when the connection was opened
	remote  wire.NodeID // the acceptor's, from its HelloReply
	logf    func(format string, args ...any)
	blocked func() bool                        // nil: never
	onClose func(c *clientConn, linkDown bool) // nil: nothing to tell

	turn chan struct{} // capacity 1: the read role is free and calls wait; one of them takes it

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]waiter // nil once closed
	// async holds the calls whose caller does not wait (callAsync): the
	// holder of the read role runs their callbacks. nil once closed.
	async   map[uint64]*asyncCall
	reading bool          // the read role is held
	err     error         // why the connection closed; nil while open
	done    chan struct{} // closed with err set

	// watch wakes the watcher. It is armed when the role is left free
	// with no call in flight and it is not armed already, not reset on
	// every call: changing a timer makes Go wake an idle thread to watch
	// it, a wake-up per call that a lone caller would pay in full. When it
	// fires early (the role was left free again since), the watcher arms
	// it for what is left. Under mu.
	watch      *time.Timer
	watchArmed bool
	freeSince  time.Time // the role was last left free with no call in flight

	// expiry ends the calls whose deadline is the transport's own (a
	// call's ctx without one, an async call's timeout) rather than a
	// timer per call, for the same reason: it is armed for the earliest
	// such deadline only when a call brings an earlier one than it is
	// armed for, which calls with the same timeout never do. Under mu.
	expiry   *time.Timer
	expiryAt time.Time // when expiry fires; zero: not armed
}

// waiter is a call whose caller waits for the reply (call).
type waiter struct {
	ch    chan result
	kind  wire.Kind
	until time.Time // the transport's deadline for it; zero: its ctx has one
}

// newClientConn wraps an authenticated connection. keepalive is how often
// an otherwise idle connection sends a wire.Keepalive, so that the
// acceptor's idle limit closes only connections whose dialer is gone.
func newClientConn(hs *handshakeResult, self wire.NodeID, writeTimeout, keepalive time.Duration, logf func(string, ...any)) *clientConn {
	snd := newSender(hs.nc, hs.fw, writeTimeout)
	snd.keepalive = keepalive
	c := &clientConn{
		nc:      hs.nc,
		snd:     snd,
		self:    self,
		remote:  hs.reply.Node,
		logf:    logf,
		turn:    make(chan struct{}, 1),
		pending: make(map[uint64]waiter),
		async:   make(map[uint64]*asyncCall),
		done:    make(chan struct{}),
	}
	if hs.br != nil {
		// Anything the acceptor sent right after its HelloReply.
		b, _ := hs.br.Peek(hs.br.Buffered())
		c.in.load(b)
	}
	c.snd.encodeFailed = func(id uint64, m wire.Msg, err error) wire.Msg {
		// The request never left: fail its call with the local error.
		c.deliver(id, result{err: fmt.Errorf("transport: %s to %s: %w", m.Kind(), c.remote.Name, err)})
		return nil
	}
	return c
}

// start runs the watcher and writer goroutines, counted in wg.
func (c *clientConn) start(wg *sync.WaitGroup) {
	c.mu.Lock()
	c.watch = time.NewTimer(watchDelay)
	c.watchArmed, c.freeSince = true, time.Now()
	c.mu.Unlock()
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.watchLoop()
	}()
	go func() {
		defer wg.Done()
		if err := c.snd.run(); err != nil {
			c.fail(fmt.Errorf("transport: connection to %s lost: %w: %w", c.remote.Name, wire.ErrLinkLost, err), true)
		}
	}()
}

// call sends m and waits for its reply, ctx's end, or the connection's;
// if ctx has no deadline, for at most timeout.
func (c *clientConn) call(ctx context.Context, m wire.Msg, timeout time.Duration) (wire.Msg, error) {
	if err := ctx.Err(); err != nil {
		// Not sent: a request nobody waits for only loads the peer.
		return nil, fmt.Errorf("transport: %s to %s: %w", m.Kind(), c.remote.Name, err)
	}
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	w := waiter{ch: ch, kind: m.Kind()}
	until, ok := ctx.Deadline()
	if !ok {
		w.until = time.Now().Add(timeout)
		until = w.until
		c.expireByLocked(w.until)
	}
	c.pending[id] = w
	alone := len(c.pending) == 1
	c.mu.Unlock()

	// If the sender has stopped, fail has run or is running and will
	// answer ch, since our entry was in pending before c.err was set.
	c.snd.send(id, m, alone, until)

	for {
		if c.takeRole(id) {
			c.readFor(ctx, ch)
		}
		select {
		case r := <-ch:
			return r.m, r.err
		default:
		}
		if ctx.Err() == nil {
			select {
			case r := <-ch:
				return r.m, r.err
			case <-c.turn:
				continue
			case <-ctx.Done():
			}
		}
		c.mu.Lock()
		_, waiting := c.pending[id]
		delete(c.pending, id)
		c.leftFreeLocked()
		c.mu.Unlock()
		if !waiting {
			// The answer was delivered (under mu) as ctx ended: use it.
			r := <-ch
			return r.m, r.err
		}
		return nil, fmt.Errorf("transport: %s to %s: %w", m.Kind(), c.remote.Name, ctx.Err())
	}
}

// takeRole takes the read role for the call id if the role is free and
// the call still waits for its reply.
func (c *clientConn) takeRole(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading || c.err != nil {
		return false
	}
	if _, waiting := c.pending[id]; waiting {
		c.reading = true
		return true
	}
	// Answered already; the turn this call may have taken goes on.
	c.leftFreeLocked()
	return false
}

// leftFreeLocked makes sure someone takes the read role, which is free:
// a waiting call if there is one, else the watcher, after watchDelay.
// Called with mu held.
func (c *clientConn) leftFreeLocked() {
	if c.reading || c.err != nil {
		return
	}
	if len(c.pending) > 0 {
		select {
		case c.turn <- struct{}{}:
		default: // a turn is on offer already
		}
		return
	}
	if len(c.async) > 0 {
		// No caller waits to read for them: the watcher reads now.
		c.watchArmed = true
		c.watch.Reset(0)
		return
	}
	c.freeSince = time.Now()
	if !c.watchArmed {
		c.watchArmed = true
		c.watch.Reset(watchDelay)
	}
}

// watchLoop reads the connection when no one has for watchDelay, so that
// a hang-up or a bad frame is noticed with no call in flight.
func (c *clientConn) watchLoop() {
	defer c.watch.Stop()
	for {
		select {
		case <-c.watch.C:
		case <-c.done:
			return
		}
		c.mu.Lock()
		c.watchArmed = false
		// With calls in flight the role is held, or on offer to them; the
		// next to leave it free with none arms the timer again.
		take := !c.reading && c.err == nil && len(c.pending) == 0
		if left := watchDelay - time.Since(c.freeSince); take && len(c.async) == 0 && left > 0 {
			// Free for less than watchDelay: calls came and went since the
			// timer was armed.
			take = false
			c.watchArmed = true
			c.watch.Reset(left)
		}
		if take {
			c.reading = true
		}
		c.mu.Unlock()
		if take {
			c.readFor(context.Background(), nil)
		}
	}
}

// asyncCall is a call whose caller does not wait for its reply: done runs
// once, on the goroutine that reads the reply, or that sees the deadline
// pass or the call cancelled, or the connection close.
type asyncCall struct {
	done    func(wire.Msg, error)
	kind    wire.Kind
	timeout time.Duration
	until   time.Time // now + timeout when sent
	once    sync.Once
}

func (a *asyncCall) finish(r result) {
	a.once.Do(func() {
		a.done(r.m, r.err)
	})
}

// callAsync sends m and returns at once; done gets the reply, or the
// error (a *wire.Error as call returns it; a context error wrapped once
// timeout passes, or cancel's error), on a goroutine that must not be
// held: done must not block. cancel gives up on the call.
func (c *clientConn) callAsync(m wire.Msg, timeout time.Duration, done func(wire.Msg, error)) (cancel func(error)) {
	a := &asyncCall{done: done, kind: m.Kind(), timeout: timeout, until: time.Now().Add(timeout)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		done(nil, err)
		return func(error) {}
	}
	c.nextID++
	id := c.nextID
	c.async[id] = a
	drop := func(err error) {
		c.mu.Lock()
		_, waiting := c.async[id]
		delete(c.async, id)
		c.mu.Unlock()
		if waiting {
			a.finish(result{err: err})
		}
	}
	c.expireByLocked(a.until)
	c.mu.Unlock()
	c.snd.send(id, m, false, time.Time{}) // not alone: the writer sends it, bound by its own timeout
	c.mu.Lock()
	c.leftFreeLocked()
	c.mu.Unlock()
	return drop
}

// aLongTimeAgo is a read deadline that has passed: setting it makes a
// blocked read return at once, as a poke.
var aLongTimeAgo = time.Unix(1, 0)

// readFor reads and delivers frames as the holder of the read role, until
// ch holds the caller's result (ch nil, the watcher: until no call is in
// flight after a frame), ctx ends, or the connection fails; it then leaves
// the role. A read deadline in the past is only a poke to look at ctx
// (a reader's ctx sets it when it ends; a poke meant for an earlier reader
// may hit a later one): a timed-out read loses nothing (inbuf).
func (c *clientConn) readFor(ctx context.Context, ch chan result) {
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.nc.SetReadDeadline(aLongTimeAgo) })
		defer stop()
	}
	defer func() {
		c.mu.Lock()
		c.reading = false
		c.leftFreeLocked()
		c.mu.Unlock()
	}()
	delivered := false
	for {
		k, id, body, ok, err := c.in.next()
		if err != nil {
			c.badFrame(err)
			return
		}
		if ok {
			if !c.handle(k, id, body) {
				return
			}
			delivered = true
			continue
		}
		if len(ch) > 0 {
			return
		}
		if ch == nil && delivered && c.idle() {
			return
		}
		if ctx.Err() != nil {
			return
		}
		if err := c.in.fill(c.nc); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !c.isClosed() {
				// A poke: clear it, then look at ctx (above) before the
				// next read, so that a poke coming after this clears
				// nothing.
				c.nc.SetReadDeadline(time.Time{})
				continue
			}
			c.fail(fmt.Errorf("transport: connection to %s lost: %w: %w", c.remote.Name, wire.ErrLinkLost, err), true)
			return
		}
	}
}

func (c *clientConn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) == 0 && len(c.async) == 0
}

// handle decodes a reply and delivers it. It reports false if the frame
// closed the connection.
func (c *clientConn) handle(k wire.Kind, id uint64, body []byte) bool {
	if c.blocked != nil && c.blocked() {
		c.fail(errBlocked(c.remote.Name), false)
		return false
	}
	m, err := wire.Decode(k, body)
	if err == nil && (id == 0 || isHandshake(k)) {
		err = fmt.Errorf("unexpected %s frame with id %d", k, id)
	}
	if err != nil {
		c.badFrame(err)
		return false
	}
	if we, ok := m.(*wire.Error); ok {
		// Returned unwrapped: its message already says what failed
		// where, and a handler forwarding it keeps it intact.
		c.deliver(id, result{err: we})
	} else {
		c.deliver(id, result{m: m})
	}
	return true
}

func (c *clientConn) badFrame(err error) {
	if c.logf != nil {
		c.logf("transport: closing connection to %s: bad frame: %v", c.remote.Name, err)
	}
	c.fail(fmt.Errorf("transport: connection to %s closed after a bad frame: %w", c.remote.Name, err), true)
}

// deliver answers the call waiting for id, if it still waits; a reply to a
// call whose caller gave up is dropped.
func (c *clientConn) deliver(id uint64, r result) {
	c.mu.Lock()
	if a, ok := c.async[id]; ok {
		delete(c.async, id)
		c.mu.Unlock()
		a.finish(r)
		return
	}
	if w, ok := c.pending[id]; ok {
		delete(c.pending, id)
		w.ch <- r // buffered, and each id is answered once
	}
	c.mu.Unlock()
}

// expireByLocked makes sure expiry fires by until. Called with mu held.
func (c *clientConn) expireByLocked(until time.Time) {
	if !c.expiryAt.IsZero() && !until.Before(c.expiryAt) {
		return
	}
	c.expiryAt = until
	if c.expiry == nil {
		c.expiry = time.AfterFunc(time.Until(until), c.expire)
	} else {
		c.expiry.Reset(time.Until(until))
	}
}

// expire fails the calls whose own deadline has passed, and arms expiry
// for the earliest of the others. A sync call's caller may be blocked
// reading for it: its result goes into its channel first, then the read
// is poked (readFor), so the caller finds it when the poke wakes it.
func (c *clientConn) expire() {
	now := time.Now()
	var late []waiter
	var lateAsync []*asyncCall
	var next time.Time
	sooner := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	c.mu.Lock()
	c.expiryAt = time.Time{}
	for id, w := range c.pending {
		switch {
		case w.until.IsZero():
		case !now.Before(w.until):
			delete(c.pending, id)
			late = append(late, w)
		default:
			sooner(w.until)
		}
	}
	for id, a := range c.async {
		if !now.Before(a.until) {
			delete(c.async, id)
			lateAsync = append(lateAsync, a)
		} else {
			sooner(a.until)
		}
	}
	if !next.IsZero() {
		c.expireByLocked(next)
	}
	if len(late)+len(lateAsync) > 0 {
		// As every path that ends a call without reading for it: with
		// the role free, a call left waiting takes it, else the watcher.
		c.leftFreeLocked()
	}
	poke := len(late) > 0 && c.reading
	c.mu.Unlock()
	for _, w := range late {
		w.ch <- result{err: fmt.Errorf("transport: %s to %s: %w", w.kind, c.remote.Name, context.DeadlineExceeded)}
	}
	if poke {
		c.nc.SetReadDeadline(aLongTimeAgo)
	}
	for _, a := range lateAsync {
		a.finish(result{err: fmt.Errorf("transport: %s to %s: no answer within %v: %w", a.kind, c.remote.Name, a.timeout, context.DeadlineExceeded)})
	}
}

// fail closes the connection and fails every pending call with err. Only
// the first call has an effect. linkDown says the peer or the network broke
// the connection, rather than this node choosing to close it.
func (c *clientConn) fail(err error, linkDown bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	async := c.async
	c.async = nil
	close(c.done)
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()

	c.snd.stop()
	c.nc.Close()
	for _, w := range pending {
		w.ch <- result{err: err}
	}
	for _, a := range async {
		a.finish(result{err: err})
	}
	if c.onClose != nil {
		c.onClose(c, linkDown)
	}
}

// serves says whether the connection reaches the incarnation to (any, if
// to.Boot is zero) for this node as it is now, self.
func (c *clientConn) serves(to, self wire.NodeID) bool {
	return c.self == self && (to.Boot == 0 || c.remote.Boot == to.Boot)
}

func (c *clientConn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *clientConn) closeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Client is a connection from a non-member, the `appnode rpc` tool, to one
// node. It may be used by many goroutines at once.
type Client struct {
	c  *clientConn
	wg sync.WaitGroup
}

// DialClient connects to the node whose transport listens at addr,
// announcing itself as self, and proves it knows the cluster's cookie (and
// checks that the node does). ctx bounds the connect and the handshake; if
// it has no deadline, DefaultDialTimeout applies. A node with another
// cookie gives an error wrapping ErrAuth.
func DialClient(ctx context.Context, addr string, self string, c cookie.Cookie) (*Client, error) {
	if c.IsZero() {
		return nil, errors.New("transport: dial client: no cookie given")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultDialTimeout)
		defer cancel()
	}
	hs, err := handshake(ctx, addr, c.TransportKey(), &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: self}, Client: true})
	if err != nil {
		return nil, err
	}
	cl := &Client{c: newClientConn(hs, wire.NodeID{Name: self}, DefaultClientTimeout, DefaultIdleTimeout/keepalivesPerIdle, nil)}
	cl.c.start(&cl.wg)
	return cl, nil
}

// Node is the incarnation the client is connected to.
func (cl *Client) Node() wire.NodeID { return cl.c.remote }

// Call sends m (a *wire.Command) and waits for the reply. If ctx has no
// deadline, DefaultClientTimeout applies.
func (cl *Client) Call(ctx context.Context, m wire.Msg) (wire.Msg, error) {
	return cl.CallWithin(ctx, m, DefaultClientTimeout)
}

// CallWithin is Call with timeout in place of DefaultClientTimeout. It
// costs a caller that sends many calls less than a ctx with a deadline
// per call: the connection keeps one timer for all of them.
func (cl *Client) CallWithin(ctx context.Context, m wire.Msg, timeout time.Duration) (wire.Msg, error) {
	if m == nil {
		return nil, errors.New("transport: client call: nil message")
	}
	if timeout <= 0 {
		timeout = DefaultClientTimeout
	}
	return cl.c.call(ctx, m, timeout)
}

// Close closes the connection, fails pending calls with ErrClosed and waits
// for the client's goroutines.
func (cl *Client) Close() error {
	cl.c.fail(fmt.Errorf("transport: client connection to %s: %w", cl.c.remote.Name, ErrClosed), false)
	cl.wg.Wait()
	return nil
}
