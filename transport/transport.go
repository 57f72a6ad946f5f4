// Package transport carries wire messages between appnode nodes over TCP.
//
// Each direction of each pair of nodes has its own long-lived connection:
// node A dials B for A's requests, B dials A for B's requests. A connection
// is multiplexed: requests carry an id, replies echo it, and any number of
// calls may be in flight at once. Each connection has one writer goroutine,
// which batches every frame queued while it was busy into a single write.
// On the dialer's side the calls read the replies themselves: one waiting
// call at a time holds the read role and delivers what it reads to the
// others, and a watcher goroutine reads when no call is in flight (see
// clientConn). On the acceptor's side a reader goroutine hands each
// request to a handler goroutine (idle handlers are reused, and each
// connection runs a bounded number at once), except a request alone on
// its connection, which it serves itself; if that takes longer than
// successorDelay another goroutine takes over reading (serveHere).
// A frame that is alone on its connection (the only call in flight, or the
// reply to the only request) is written by its own goroutine instead,
// saving a wake-up of the writer on every hop of an unloaded request; the
// replies to requests served on the read loop go out in one write once
// the frames a read brought in are done.
//
// Errors from Call fall into three classes the replica layer acts on
// differently:
//
//   - errors.Is(err, wire.ErrGone): proof that the addressed incarnation no
//     longer exists (another boot id answered under its name).
//   - errors.Is(err, wire.ErrRefused): the connection was refused; the
//     request was not delivered, but the peer may be alive (a firewall).
//   - errors.As(err, **wire.Error) with a code other than CodeUnavailable:
//     the peer ran the request and it failed there.
//   - anything else, including *wire.Error with CodeUnavailable, timeouts
//     and broken connections: the outcome is unknown. The request may or may
//     not have been applied.
//
// Security: every connection starts with a handshake in which both ends
// prove, with HMAC-SHA256 over fresh nonces, that they know the cluster's
// cookie (see handshake.go and wire.Hello); the acceptor reads no request
// before the dialer's proof checks out, and the dialer sends none before
// the acceptor's does. A stranger gets at most an early refusal or a
// challenge, and its connection is closed. Frames after the handshake are
// not encrypted: see handshake.go for what that leaves open.
//
// Limits, so that a stranger or a broken peer cannot take the node down or
// hold its resources: frames of at most wire.MaxHandshakeFrame until the
// dialer is authenticated and wire.MaxFrame after; every frame checked
// against wire's structural and field limits before and after decoding;
// at most MaxConns inbound connections, of which at most a quarter may be
// still in their handshake; at most MaxInflight handlers per connection.
// Anything malformed closes that connection only, and is counted (Stats).
//
// Deadlines: dials and handshakes (both sides) are bounded by DialTimeout,
// each call by its ctx (RequestTimeout by default), each write by
// RequestTimeout. An inbound connection that carries nothing for
// IdleTimeout is closed. Member links are idle between requests for as
// long as nobody rewards, so the dialer sends a keepalive frame on a link
// that has been quiet for IdleTimeout/4; the limit then only catches a
// dialer that is gone (or paused) without its socket closing. A peer that
// vanishes silently is also caught by the callers' deadlines, TCP
// keepalive (Go's default, 15 s) and membership, which then calls
// Disconnect. A request whose caller gave up is not recalled: it may still
// reach the peer, late.
//
// Lock order: Transport.mu is never held while taking clientConn.mu or
// sender.mu, nor while calling the node back (Peers, Handler, Clients),
// except for Peers.Self, Peers.Resolve and Config.Block, which must
// therefore not call back into the Transport.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/wire"
)

const (
	// DefaultDialTimeout bounds a connect plus its handshake, on either
	// side. A loopback or LAN handshake takes well under a millisecond;
	// a second absorbs a loaded machine. Longer only delays the moment a
	// call to an unreachable peer gives up, and lets a stranger hold a
	// handshake slot that much longer.
	DefaultDialTimeout = time.Second
	// DefaultRequestTimeout bounds a Call whose ctx has no deadline, and
	// every write. Shorter frees callers of a stalled peer sooner but may
	// cut a link that is only slow: a write that times out closes its
	// connection, failing every call in flight on it.
	DefaultRequestTimeout = 3 * time.Second
	// DefaultMaxInflight bounds the handlers one inbound connection runs
	// at once; further requests wait in the socket. Higher lets one busy
	// peer use more goroutines (and their stacks) here; lower queues its
	// requests behind slow ones.
	DefaultMaxInflight = 512
	// DefaultMaxConns bounds inbound connections. A node has one from
	// each other member plus the `appnode rpc` clients of the moment;
	// 256 is far above that for the clusters appnode is made for, and
	// caps what strangers can make the node hold (a 64 KB read buffer and
	// two goroutines each).
	DefaultMaxConns = 256
	// DefaultIdleTimeout closes an inbound connection that carried
	// nothing, keepalives included, for this long. Dialers send a
	// keepalive after IdleTimeout/4 of quiet, so a live peer misses it
	// only if stalled for about three quarters of it; a minute tolerates
	// any pause short of one the cluster would declare a failure anyway.
	DefaultIdleTimeout = time.Minute
	// keepalivesPerIdle: dialers check for quiet this many times per
	// IdleTimeout.
	keepalivesPerIdle = 4

	// readBufSize is the read buffer of a connection. Most frames are tens
	// of bytes, so one read syscall usually brings in a whole batch.
	readBufSize = 64 << 10
	// maxGone bounds how many superseded boot ids are remembered per node
	// name. A name goes through a new boot only when restarted or fenced,
	// so a few are plenty; the oldest is forgotten first, and forgetting
	// costs only a dial that proves the same thing again.
	maxGone = 16
)

// ErrClosed is returned by calls made on, or still pending when, a
// Transport or Client is closed.
var ErrClosed = errors.New("transport closed")

// Config configures a Transport. Start from DefaultConfig, which fills in
// what is required and sets every knob to its default.
type Config struct {
	BindAddr string // e.g. "127.0.0.1"; "" listens on every address
	Port     int    // 0 = any free port; see Transport.Port

	// Cookie is the cluster's secret. Only peers that prove they know it
	// are served or called.
	Cookie cookie.Cookie

	// Peers tells the Transport who this node is and where its peers
	// are, and hears of fences and broken links.
	Peers Peers
	// Handler serves the requests of cluster members.
	Handler Handler
	// Clients serves `appnode rpc` and `appnode bench` connections; nil
	// refuses them.
	Clients Clients

	// Block is a fault-injection hook for tests (nil in production). When
	// it returns true for a peer name, dials to it fail, calls to it fail
	// fast with CodeUnavailable, its connections both ways are closed as
	// soon as a frame or call crosses them, and member connections
	// accepted from it are dropped after the Hello.
	Block func(peer string) bool

	// The limits; see their defaults for the trade-offs.
	DialTimeout    time.Duration // connect plus handshake, on either side (DefaultDialTimeout)
	RequestTimeout time.Duration // for a Call whose ctx has no deadline, and for each write (DefaultRequestTimeout)
	MaxInflight    int           // concurrent handlers per inbound connection (DefaultMaxInflight)
	MaxConns       int           // inbound connections at once (DefaultMaxConns)
	IdleTimeout    time.Duration // an inbound connection silent this long is closed (DefaultIdleTimeout)

	successorDelay time.Duration // tests only; zero: the const successorDelay

	Logf func(format string, args ...any) // may be nil
}

// DefaultConfig is the configuration of a Transport on 127.0.0.1, at any
// free port, proving cookie c, asking p about the cluster and serving
// members with h, with every limit at its default and no clients.
func DefaultConfig(c cookie.Cookie, p Peers, h Handler) Config {
	return Config{
		BindAddr:       "127.0.0.1",
		Cookie:         c,
		Peers:          p,
		Handler:        h,
		DialTimeout:    DefaultDialTimeout,
		RequestTimeout: DefaultRequestTimeout,
		MaxInflight:    DefaultMaxInflight,
		MaxConns:       DefaultMaxConns,
		IdleTimeout:    DefaultIdleTimeout,
	}
}

// Validate says what is missing or wrong in c.
func (c Config) Validate() error {
	switch {
	case c.Cookie.IsZero():
		return errors.New("transport: Config.Cookie is required: the cluster's secret")
	case c.Peers == nil:
		return errors.New("transport: Config.Peers is required")
	case c.Handler == nil:
		return errors.New("transport: Config.Handler is required")
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("transport: Config.Port %d is not a TCP port number", c.Port)
	case c.DialTimeout <= 0:
		return fmt.Errorf("transport: Config.DialTimeout must be positive, not %v", c.DialTimeout)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("transport: Config.RequestTimeout must be positive, not %v", c.RequestTimeout)
	case c.MaxInflight <= 0:
		return fmt.Errorf("transport: Config.MaxInflight must be positive, not %d", c.MaxInflight)
	case c.MaxConns <= 0:
		return fmt.Errorf("transport: Config.MaxConns must be positive, not %d", c.MaxConns)
	case c.IdleTimeout < keepalivesPerIdle:
		return fmt.Errorf("transport: Config.IdleTimeout must be positive (dialers send a keepalive every quarter of it), not %v", c.IdleTimeout)
	}
	return nil
}

// Transport is one node's end of the node-to-node links.
type Transport struct {
	cfg Config
	ln  net.Listener
	key []byte // the cookie's transport key

	stats counters
	noisy throttle // for what strangers can make happen at will

	// ctx is cancelled by Close. Dials and request handlers derive from
	// it, so Close interrupts them.
	ctx    context.Context
	cancel context.CancelFunc

	// wg counts every goroutine the Transport starts. Adds happen either
	// from a goroutine it already counts or under mu with closed false, so
	// none can race with Close's Wait.
	wg sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	peers   map[string]*peer
	inbound map[*serverConn]struct{}
	// handshaking lists the inbound connections still in their
	// handshake, oldest first.
	handshaking []*serverConn

	// requests hands a request to an idle handler goroutine (see
	// serveRequest); unbuffered, so a send succeeds only if one waits.
	requests chan request

	dials atomic.Int64 // handshakes completed as the dialer, for tests
	joins atomic.Int64 // calls that waited on a dial another call started, for tests
}

// peer is what the Transport knows about one node name as a call target.
type peer struct {
	name string
	conn *clientConn // current outbound connection, nil if none
	dial *dialing    // the dial in progress, nil if none

	// gone holds boot ids of this name that a handshake proved superseded,
	// so calls addressed to them fail at once instead of dialing again.
	gone     []uint64
	goneNext int
}

// dialing is one dial in progress; every Call that needs it waits on done.
type dialing struct {
	done chan struct{}
	conn *clientConn // on success: the connection now current for the name
	err  error
}

// Listen starts a Transport listening on cfg.BindAddr:cfg.Port, or says
// what is wrong with cfg.
func Listen(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen on %s: %w", addr, err)
	}
	t := &Transport{
		cfg:      cfg,
		ln:       ln,
		key:      cfg.Cookie.TransportKey(),
		peers:    make(map[string]*peer),
		inbound:  make(map[*serverConn]struct{}),
		requests: make(chan request),
	}
	t.noisy.out = cfg.Logf
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// Port is the TCP port the Transport listens on.
func (t *Transport) Port() int { return t.ln.Addr().(*net.TCPAddr).Port }

// Addr is the "ip:port" the Transport listens on.
func (t *Transport) Addr() string { return t.ln.Addr().String() }

// Call sends m to the incarnation to and waits for its reply. If ctx has
// no deadline, RequestTimeout applies. See the package comment for how to
// read the error.
func (t *Transport) Call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error) {
	if m == nil {
		return nil, fmt.Errorf("transport: call to %s: nil message", to.Name)
	}
	if t.blocked(to.Name) {
		t.disconnect(to.Name, errBlocked(to.Name))
		return nil, errBlocked(to.Name)
	}
	// On an open connection a ctx without a deadline costs no timer: the
	// connection keeps RequestTimeout for the call, with one timer for all
	// its calls.
	if c := t.open(to); c != nil {
		return c.call(ctx, m, t.cfg.RequestTimeout)
	}
	if _, ok := ctx.Deadline(); !ok {
		// The dial is bounded by the same deadline.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.cfg.RequestTimeout)
		defer cancel()
	}
	c, err := t.conn(ctx, to)
	if err != nil {
		// No connection, so nothing was written: the request certainly
		// was not applied, whatever the reason.
		return nil, fmt.Errorf("%w: %w", wire.ErrNotSent, err)
	}
	return c.call(ctx, m, t.cfg.RequestTimeout)
}

// CallAsync is Call for a caller that does not wait: it sends m to the
// incarnation `to` and returns; done gets the reply or the error, as Call
// would return them, on a goroutine of the transport's that must not be
// held (done must not block or call the network and wait). It may run on
// the caller's goroutine, before CallAsync returns, if m cannot be sent.
// timeout bounds the wait for the reply, a dial included; cancel gives up
// on it earlier, with err.
//
// CallAsync never waits for a dial: its callers are read loops serving
// other requests, which a peer whose connection hangs (a firewall that
// drops, a paused process) would otherwise hold for the whole timeout.
// So calls are not ordered: one made while an earlier one waits for the
// dial may be sent first (a primary has one replication in flight at a
// time, so its keeper sees its updates in order).
func (t *Transport) CallAsync(to wire.NodeID, m wire.Msg, timeout time.Duration, done func(wire.Msg, error)) (cancel func(err error)) {
	if t.blocked(to.Name) {
		t.disconnect(to.Name, errBlocked(to.Name))
		done(nil, errBlocked(to.Name))
		return func(error) {}
	}
	if c := t.open(to); c != nil {
		return c.callAsync(m, timeout, done)
	}
	return t.dialThenCallAsync(to, m, timeout, done)
}

// dialThenCallAsync is CallAsync for a peer with no open connection: a
// goroutine of the transport's connects, then sends.
func (t *Transport) dialThenCallAsync(to wire.NodeID, m wire.Msg, timeout time.Duration, done func(wire.Msg, error)) (cancel func(err error)) {
	deadline := time.Now().Add(timeout)
	ctx, stop := context.WithDeadline(t.ctx, deadline)
	var (
		mu        sync.Mutex
		sent      func(error) // the call's cancel, once it is sent
		cancelled error
	)
	notSent := func(err error) { done(nil, fmt.Errorf("%w: %w", wire.ErrNotSent, err)) }
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		stop()
		notSent(fmt.Errorf("transport: call to %s: %w", to.Name, ErrClosed))
		return func(error) {}
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		c, err := t.conn(ctx, to)
		stop()
		mu.Lock()
		if cancelled != nil {
			err = cancelled
		}
		mu.Unlock()
		if err != nil {
			notSent(err)
			return
		}
		cancelSent := c.callAsync(m, time.Until(deadline), done)
		mu.Lock()
		sent = cancelSent
		err = cancelled
		mu.Unlock()
		if err != nil {
			cancelSent(err) // cancelled while it was being sent
		}
	}()
	return func(err error) {
		mu.Lock()
		if cancelled == nil {
			cancelled = err
		}
		cancelSent := sent
		mu.Unlock()
		if cancelSent != nil {
			cancelSent(err)
			return
		}
		stop() // the dial gives up, and done hears err
	}
}

// open returns the open connection to the incarnation to, if there is
// one: conn's first look, without the context a dial needs, since nearly
// every call finds one.
func (t *Transport) open(to wire.NodeID) *clientConn {
	self := t.cfg.Peers.Self()
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peers[to.Name]
	if t.closed || p == nil || p.isGone(to.Boot) {
		return nil
	}
	if c := p.conn; c != nil && !c.isClosed() && c.serves(to, self) {
		return c
	}
	return nil
}

// conn returns an open connection to the incarnation to, dialing if there
// is none or the one there is answers for another incarnation. Concurrent
// callers share one dial per name.
func (t *Transport) conn(ctx context.Context, to wire.NodeID) (*clientConn, error) {
	self := t.cfg.Peers.Self()
	// A connection opened under an older self, or one that breaks while we
	// wait, sends us round again; three rounds without a usable connection
	// means the link is flapping and the caller should back off.
	for round := range 3 {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, fmt.Errorf("transport: call to %s: %w", to.Name, ErrClosed)
		}
		p := t.peers[to.Name]
		if p == nil {
			p = &peer{name: to.Name}
			t.peers[to.Name] = p
		}
		if p.isGone(to.Boot) {
			t.mu.Unlock()
			return nil, fmt.Errorf("transport: %s boot %d was replaced by a new incarnation: %w", to.Name, to.Boot, wire.ErrGone)
		}
		if c := p.conn; c != nil {
			if c.isClosed() {
				p.conn = nil
			} else if c.serves(to, self) {
				t.mu.Unlock()
				return c, nil
			}
			// Otherwise the connection answers for another incarnation
			// than the one addressed, or was opened under our own old
			// incarnation. Only a fresh handshake tells whether the
			// target is gone or the connection is stale.
		}
		// Only a dial that started after this call began can prove the
		// addressed incarnation gone: one already under way may carry
		// an answer from before the incarnation announced itself (a
		// restart on the same port, a fenced node taking a new boot).
		// After the first round, any dial is newer than the call, since
		// the one we waited on had finished.
		d := p.dial
		fresh := d == nil || round > 0
		if d == nil {
			d = &dialing{done: make(chan struct{})}
			p.dial = d
			t.wg.Add(1)
			go t.dial(p, d, self)
		} else {
			t.joins.Add(1)
		}
		t.mu.Unlock()

		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("transport: connect to %s: %w", to.Name, ctx.Err())
		}
		if d.err != nil {
			if !fresh && errors.Is(d.err, wire.ErrGone) {
				continue
			}
			return nil, d.err
		}
		c := d.conn
		if to.Boot != 0 && c.remote.Boot != to.Boot {
			if !fresh {
				continue
			}
			t.mu.Lock()
			p.markGone(to.Boot)
			t.mu.Unlock()
			return nil, fmt.Errorf("transport: %s answers as boot %d, not boot %d: %w", to.Name, c.remote.Boot, to.Boot, wire.ErrGone)
		}
		if c.self == self && !c.isClosed() {
			return c, nil
		}
	}
	return nil, &wire.Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("transport: no stable connection to %s", to.Name)}
}

// dial runs one dial for p and installs the result.
func (t *Transport) dial(p *peer, d *dialing, self wire.NodeID) {
	defer t.wg.Done()
	c, fencedBy, err := t.connect(p.name, self)

	var discard *clientConn
	t.mu.Lock()
	p.dial = nil
	if err == nil {
		old := p.conn
		switch {
		case t.closed:
			discard, c, err = c, nil, fmt.Errorf("transport: connect to %s: %w", p.name, ErrClosed)
		case old == nil || old.isClosed():
			p.conn = c
		case old.self == self && old.remote == c.remote:
			// A probe that found the same incarnation: keep the
			// connection that may have calls in flight.
			discard, c = c, old
		default:
			if old.remote.Boot != c.remote.Boot {
				p.markGone(old.remote.Boot)
			}
			p.conn, discard = c, old
		}
	}
	d.conn, d.err = c, err
	t.mu.Unlock()

	if discard != nil {
		discard.fail(&wire.Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("transport: connection to %s replaced by a newer one", p.name)}, false)
	}
	if fencedBy != nil {
		t.cfg.Peers.FencedBy(*fencedBy)
	}
	close(d.done)
}

// connect dials name and runs the dialer's side of the handshake. On a
// fenced reply it also returns who fenced us.
func (t *Transport) connect(name string, self wire.NodeID) (*clientConn, *wire.NodeID, error) {
	if t.blocked(name) {
		return nil, nil, errBlocked(name)
	}
	addr, ok := t.cfg.Peers.Resolve(name)
	if !ok {
		return nil, nil, &wire.Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("transport: no address known for %s", name)}
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.DialTimeout)
	defer cancel()
	hs, err := handshake(ctx, addr, t.key, &wire.Hello{Version: wire.Version, From: self, To: name})
	if err != nil {
		if t.ctx.Err() != nil {
			err = fmt.Errorf("transport: connect to %s: %w", name, ErrClosed)
		}
		return nil, hs.fencedBy(), err
	}
	if hs.reply.Node.Name != name {
		hs.nc.Close()
		return nil, nil, &wire.Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("transport: %s answers as %s, not %s", addr, hs.reply.Node.Name, name)}
	}
	c := newClientConn(hs, self, t.cfg.RequestTimeout, t.cfg.IdleTimeout/keepalivesPerIdle, t.logf)
	c.blocked = func() bool { return t.blocked(name) }
	c.onClose = t.clientClosed
	t.dials.Add(1)
	c.start(&t.wg)
	return c, nil, nil
}

// clientClosed forgets a closed outbound connection, and reports the broken
// link.
func (t *Transport) clientClosed(c *clientConn, linkDown bool) {
	t.mu.Lock()
	if p := t.peers[c.remote.Name]; p != nil && p.conn == c {
		p.conn = nil
	}
	t.mu.Unlock()
	if linkDown {
		t.logf("%v", c.closeErr()) // "transport: connection to X lost: why"
		t.cfg.Peers.LinkDown(c.remote)
	}
}

// Disconnect closes every connection to and from the node name. It is used
// when the cluster declares that node failed; the next Call dials again,
// and the peer's next Hello meets Fenced.
func (t *Transport) Disconnect(name string) {
	// Calls under way may have been applied: say so (ErrLinkLost), so that
	// a reward re-sent with its id is answered once, not lost or doubled.
	t.disconnect(name, fmt.Errorf("transport: disconnected from %s: %w", name, wire.ErrLinkLost))
}

func (t *Transport) disconnect(name string, why error) {
	var out *clientConn
	var in []*serverConn
	t.mu.Lock()
	if p := t.peers[name]; p != nil {
		out, p.conn = p.conn, nil
	}
	for sc := range t.inbound {
		if !sc.client && sc.from.Name == name {
			in = append(in, sc)
		}
	}
	t.mu.Unlock()
	if out != nil {
		out.fail(why, false)
	}
	for _, sc := range in {
		sc.close()
	}
}

// Close stops accepting, closes every connection, fails pending calls with
// ErrClosed, and returns once every goroutine of the Transport has exited.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return nil
	}
	t.closed = true
	var out []*clientConn
	for _, p := range t.peers {
		if p.conn != nil {
			out = append(out, p.conn)
			p.conn = nil
		}
	}
	in := make([]*serverConn, 0, len(t.inbound))
	for sc := range t.inbound {
		in = append(in, sc)
	}
	t.mu.Unlock()

	t.cancel()
	err := t.ln.Close()
	for _, c := range out {
		c.fail(fmt.Errorf("transport: connection to %s: %w", c.remote.Name, ErrClosed), false)
	}
	for _, sc := range in {
		sc.close()
	}
	t.wg.Wait()
	if err != nil {
		return fmt.Errorf("transport: close listener: %w", err)
	}
	return nil
}

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		nc, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off rather than
			// spin, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.logf("transport: accept failed, retrying in %v: %v", delay, err)
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-t.ctx.Done():
				timer.Stop()
				return
			}
			continue
		}
		delay = 0
		t.stats.accepted.Add(1)
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			nc.Close()
			return
		}
		// Handshakes may fill only a quarter of the slots. When they are
		// full, one gives way to the newcomer: the oldest of the source
		// address with the most handshakes open. A stranger that floods
		// the port from its address then only ever pushes out its own
		// handshakes, and members dialling from elsewhere keep getting
		// in, instead of waiting behind a cap the stranger keeps full.
		if len(t.inbound) >= t.cfg.MaxConns {
			open := len(t.inbound)
			t.mu.Unlock()
			t.stats.overCap.Add(1)
			nc.Close()
			t.noisy.logf("transport: refusing a connection from %s: %d connections open", nc.RemoteAddr(), open)
			continue
		}
		var evict *serverConn
		if len(t.handshaking) >= max(1, t.cfg.MaxConns/4) {
			evict = t.noisiestOldestLocked(nc.RemoteAddr())
		}
		sc := newServerConn(t, nc)
		t.inbound[sc] = struct{}{}
		t.handshaking = append(t.handshaking, sc)
		t.wg.Add(1)
		t.mu.Unlock()
		if evict != nil {
			t.stats.overCap.Add(1)
			t.noisy.logf("transport: dropping the oldest handshake in progress, from %s, to make room", evict.nc.RemoteAddr())
			evict.close()
		}
		go sc.serve()
	}
}

func (t *Transport) blocked(name string) bool {
	return t.cfg.Block != nil && t.cfg.Block(name)
}

func (t *Transport) logf(format string, args ...any) {
	if t.cfg.Logf != nil {
		t.cfg.Logf(format, args...)
	}
}

func errBlocked(name string) error {
	return &wire.Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("transport: link to %s is blocked", name)}
}

func (p *peer) isGone(boot uint64) bool {
	if boot == 0 {
		return false
	}
	for _, b := range p.gone {
		if b == boot {
			return true
		}
	}
	return false
}

func (p *peer) markGone(boot uint64) {
	if boot == 0 || p.isGone(boot) {
		return
	}
	if len(p.gone) < maxGone {
		p.gone = append(p.gone, boot)
		return
	}
	p.gone[p.goneNext] = boot
	p.goneNext = (p.goneNext + 1) % maxGone
}

// noisiestOldestLocked removes from handshaking, and returns, the oldest
// handshake of the source address that has the most open, the newcomer's
// own (from) counting as one more.
func (t *Transport) noisiestOldestLocked(from net.Addr) *serverConn {
	host := func(a net.Addr) string {
		h, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		return h
	}
	count := map[string]int{host(from): 1}
	for _, sc := range t.handshaking {
		count[host(sc.nc.RemoteAddr())]++
	}
	worst, n := "", 0
	for h, c := range count {
		if c > n || (c == n && h < worst) {
			worst, n = h, c
		}
	}
	for i, sc := range t.handshaking {
		if host(sc.nc.RemoteAddr()) == worst {
			t.handshaking = slices.Delete(t.handshaking, i, i+1)
			return sc
		}
	}
	// Only the newcomer's address is the worst: let its oldest go.
	sc := t.handshaking[0]
	t.handshaking = t.handshaking[1:]
	return sc
}

// handshakes counts the inbound connections still in their handshake.
func (t *Transport) handshakes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.handshaking)
}
