// Package names is the per-host name service that lets `connect
// app_node2@host` work with no ports given, in the shape of Erlang's epmd.
//
// Every node registers its full name and ports with the name service of its
// own host, and anyone resolves NAME@HOST by asking HOST's service. Nodes
// register over a TCP connection they hold open; an entry lives exactly as
// long as that connection, so a node killed with -9 frees its name at once.
//
// The service runs in one of two ways. With Config.Spawn (what appnode
// does), it is a process of its own, as epmd is: the first node that finds
// none answering starts it (Serve), it is started again if it dies, and it
// exits once no node has been registered for a while. Without Spawn (tests
// of other packages), the nodes serve it among themselves: the first binds
// the port, and when it dies the holders race to bind it and re-register.
// The second way is lighter but a paused (SIGSTOP) serving node keeps its
// socket, so every lookup on the host would hang until it resumed.
package names

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultPort is the well-known port of the name service (epmd uses 4369).
const DefaultPort = 4371

// Entry is one registered node.
type Entry struct {
	Name          string `msgpack:"n"` // full node name, "app_node1@host"
	GossipPort    int    `msgpack:"g"`
	TransportPort int    `msgpack:"t"`
	Boot          uint64 `msgpack:"b"` // the incarnation; 0 if unknown
	// HTTPPort is the node's front door (HTTP API, metrics, page); 0 if
	// it serves none. Older name services drop it.
	HTTPPort int `msgpack:"h,omitempty"`
}

// Config says where the host's name service listens and what to register.
// Start from DefaultConfig.
type Config struct {
	// BindAddr is the IP address the service listens on when this node
	// serves it, and the one it is dialled at: "127.0.0.1" by default.
	// Other hosts look names up here, so a node reachable from other
	// hosts binds an address they can route to; an unspecified address
	// ("0.0.0.0") serves every interface and is dialled over loopback.
	BindAddr string
	// Port is the service's TCP port, the same for every node of a host
	// (DefaultPort). A cluster of its own on the same host, such as a
	// test's, needs a port of its own.
	Port  int
	Entry Entry // what to register
	// Logf reports takeovers and lost connections; it may be nil.
	Logf func(format string, args ...any)
	// Spawn, if set, starts the host's name service as a process of its
	// own (see Serve) when none answers, instead of serving it from this
	// node. That is Erlang's epmd: a paused node (SIGSTOP) keeps its
	// listening socket, so if it served the names, every lookup on the
	// host would hang until it resumed. Spawn must return at once; the
	// registration retries until the new service answers.
	Spawn func() error

	timing *timing // nil: defaultTiming; tests shrink it
}

// DefaultConfig is the configuration that registers e with the name service
// of this host at 127.0.0.1:DefaultPort, served by the nodes themselves.
func DefaultConfig(e Entry) Config {
	return Config{BindAddr: "127.0.0.1", Port: DefaultPort, Entry: e}
}

// Validate says what is missing or wrong in c.
func (c Config) Validate() error {
	if err := c.Entry.validate(); err != nil {
		return fmt.Errorf("register with the name service: %w", err)
	}
	if c.Port <= 0 || c.Port > 65535 {
		return fmt.Errorf("register %s: name service port %d is not a TCP port number", c.Entry.Name, c.Port)
	}
	if net.ParseIP(c.BindAddr) == nil {
		return fmt.Errorf("register %s: name service bind address %q is not an IP address", c.Entry.Name, c.BindAddr)
	}
	return nil
}

// timing holds every timeout of the protocol in one place.
type timing struct {
	ping       time.Duration // a holder pings after this long without traffic
	reply      time.Duration // how long anyone waits for an answer or a write
	idle       time.Duration // an unregistered connection may be silent this long
	holderIdle time.Duration // a registered holder may be silent this long
	clientLife time.Duration // an unregistered connection is closed this long after it opened
	dupGrace   time.Duration // how long a duplicate waits for the old holder to go
	dial       time.Duration
	start      time.Duration // how long Register keeps trying before giving up
	maxConns   int
}

var defaultTiming = timing{
	ping:       time.Second,
	reply:      3 * time.Second,
	idle:       3 * time.Second,
	holderIdle: 5 * time.Second,
	// A lookup or a listing is one round trip; a connection that holds no
	// registration has no reason to stay longer, and a stranger sending
	// a lookup every few seconds must not hold a slot for ever.
	clientLife: 10 * time.Second,
	dupGrace:   time.Second,
	dial:       2 * time.Second,
	start:      10 * time.Second,
	maxConns:   256,
}

// Registration keeps one node's entry alive in its host's name service,
// serving the service itself when no other node does.
type Registration struct {
	entry      Entry
	listenAddr string
	dialAddr   string
	t          *timing
	logf       func(format string, args ...any)

	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	abrupt  atomic.Bool // set by kill: leave without unregistering
	serving atomic.Bool
	once    sync.Once
	wg      sync.WaitGroup

	mu    sync.Mutex
	srv   *server      // set while this node serves
	hold  *holder      // set while this node holds a registration elsewhere
	spawn func() error // see Config.Spawn
}

// holder is a registration held over a connection to another node's
// service.
type holder struct {
	*client
	broken atomic.Bool // the connection may carry a half-finished exchange
}

// Register starts (or joins) the host's name service and registers
// cfg.Entry. It keeps the registration alive, re-registering (and taking
// over serving) if the serving node dies, until Close.
//
// It fails with ErrNameTaken if a live node already holds the name, and
// gives up after about ten seconds (or when ctx ends) if the port is taken
// by something that does not answer as a name service.
func Register(ctx context.Context, cfg Config) (*Registration, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ip := net.ParseIP(cfg.BindAddr)
	// A service bound to every address is reached over loopback, which
	// also marks us as local.
	dialIP := ip
	if ip.IsUnspecified() {
		dialIP = net.IPv4(127, 0, 0, 1)
		if ip.To4() == nil {
			dialIP = net.IPv6loopback
		}
	}
	port := strconv.Itoa(cfg.Port)
	r := &Registration{
		entry:      cfg.Entry,
		listenAddr: net.JoinHostPort(ip.String(), port),
		dialAddr:   net.JoinHostPort(dialIP.String(), port),
		t:          cfg.timing,
		logf:       cfg.Logf,
		spawn:      cfg.Spawn,
	}
	if r.t == nil {
		r.t = &defaultTiming
	}
	if r.logf == nil {
		r.logf = func(string, ...any) {}
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())

	startCtx, cancel := context.WithTimeout(ctx, r.t.start)
	defer cancel()
	if err := r.acquireLoop(startCtx, true); err != nil {
		r.cancel()
		return nil, err
	}
	r.wg.Add(1)
	go r.run()
	return r, nil
}

// Close unregisters, stops serving if this node was the server (the other
// nodes on the host take over), and waits for every goroutine it started.
func (r *Registration) Close() error {
	r.shutdown()
	return nil
}

// Serving tells whether this node currently serves the host's name service.
func (r *Registration) Serving() bool { return r.serving.Load() }

// Addr is the address the host's name service listens on.
func (r *Registration) Addr() string { return r.listenAddr }

func (r *Registration) shutdown() {
	r.once.Do(func() {
		r.cancel()
		r.mu.Lock()
		if h := r.hold; h != nil {
			if r.abrupt.Load() {
				h.close()
			} else {
				// Wake the keepalive loop from its idle read. It
				// leaves the connection clean, so the goodbye
				// below is the only exchange on it.
				h.c.SetReadDeadline(time.Unix(1, 0))
			}
		}
		r.mu.Unlock()
		r.wg.Wait()

		r.mu.Lock()
		srv, h := r.srv, r.hold
		r.srv, r.hold = nil, nil
		r.mu.Unlock()
		r.serving.Store(false)
		if srv != nil {
			srv.close()
		}
		if h != nil {
			if !r.abrupt.Load() && !h.broken.Load() {
				// Closing would free the name too, but only once the
				// service reads our EOF; an acknowledged goodbye
				// makes the name free by the time Close returns.
				if _, err := h.call(context.Background(), request{Op: opUnregister}); err != nil {
					r.logf("name service: unregister %s: %v (closing the connection frees it anyway)", r.entry.Name, err)
				}
			}
			h.close()
		}
	})
}

// run keeps the registration alive until Close.
func (r *Registration) run() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		srv, h := r.srv, r.hold
		r.mu.Unlock()
		var err error
		if srv != nil {
			err = r.watch(srv)
		} else {
			err = r.keepalive(h)
		}
		if r.ctx.Err() != nil {
			return
		}
		r.logf("name service: %v; registering %s again", err, r.entry.Name)
		r.mu.Lock()
		r.srv, r.hold = nil, nil
		r.mu.Unlock()
		r.serving.Store(false)
		if srv != nil {
			srv.close()
		}
		if h != nil {
			h.close()
		}
		if err := r.acquireLoop(r.ctx, false); err != nil {
			return
		}
	}
}

func (r *Registration) watch(srv *server) error {
	select {
	case <-r.ctx.Done():
		return r.ctx.Err()
	case <-srv.failed:
		return fmt.Errorf("stopped serving on %s", r.listenAddr)
	}
}

// keepalive watches a held connection. The service never speaks first, so
// an idle read ends only with a timeout (time to ping), EOF (the serving
// node died: take over) or by Close waking it.
func (r *Registration) keepalive(h *holder) error {
	var b [1]byte
	for {
		// Set the deadline before checking ctx: shutdown cancels, then
		// moves the deadline into the past, so either this check sees
		// the cancellation or the read sees the past deadline.
		if err := h.c.SetReadDeadline(time.Now().Add(r.t.ping)); err != nil {
			return fmt.Errorf("connection to the service at %s broke: %w", r.dialAddr, err)
		}
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		n, err := h.c.Read(b[:])
		if r.ctx.Err() != nil {
			if n > 0 {
				h.broken.Store(true)
			}
			return r.ctx.Err()
		}
		if n > 0 {
			h.broken.Store(true)
			return fmt.Errorf("connection to the service at %s is corrupt: %w", r.dialAddr, errChatter)
		}
		if !isTimeout(err) {
			return fmt.Errorf("connection to the service at %s broke: %w", r.dialAddr, err)
		}
		rep, err := h.call(context.Background(), request{Op: opPing})
		if err == nil && rep.Status != statusOK {
			err = fmt.Errorf("ping answered with status %d", rep.Status)
		}
		if err != nil {
			h.broken.Store(true)
			if r.ctx.Err() != nil {
				return r.ctx.Err()
			}
			return fmt.Errorf("the service at %s stopped answering: %w", r.dialAddr, err)
		}
	}
}

// acquireLoop serves or joins the host's name service, retrying transient
// failures with backoff until it succeeds or ctx ends. The first time
// (initial) a failure that retrying cannot cure is returned at once; later
// every failure is retried, because a name taken by another node or a port
// held by a stranger may yet be freed, and this node is still running.
func (r *Registration) acquireLoop(ctx context.Context, initial bool) error {
	backoff := 10 * time.Millisecond
	var last error
	for {
		err := r.acquire(ctx)
		if err == nil {
			if !initial {
				if r.Serving() {
					r.logf("name service: %s took over serving on %s", r.entry.Name, r.listenAddr)
				} else {
					r.logf("name service: %s registered again with the service at %s", r.entry.Name, r.dialAddr)
				}
			}
			return nil
		}
		if ctx.Err() != nil {
			if last == nil {
				last = err
			}
			return fmt.Errorf("register %s with the name service on %s: %w", r.entry.Name, r.listenAddr, last)
		}
		if initial && !retryable(err) {
			if errors.Is(err, ErrNameTaken) {
				return err // already names the node
			}
			return fmt.Errorf("register %s: %w", r.entry.Name, err)
		}
		if !initial && (last == nil || last.Error() != err.Error()) {
			r.logf("name service: cannot register %s yet: %v; retrying", r.entry.Name, err)
		}
		last = err
		// Jitter keeps holders that lost their server together from
		// retrying in lockstep.
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return fmt.Errorf("register %s with the name service on %s: %w", r.entry.Name, r.listenAddr, last)
		case <-time.After(d):
		}
		if backoff *= 2; backoff > time.Second {
			backoff = time.Second
		}
	}
}

// permanentError marks failures that retrying will not cure.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func retryable(err error) bool {
	var p permanentError
	return !errors.As(err, &p)
}

// acquire makes one attempt: bind the port and serve, or, if it is taken,
// register with whoever serves it.
func (r *Registration) acquire(ctx context.Context) error {
	if r.spawn != nil {
		return r.acquireSpawned(ctx)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", r.listenAddr)
	if err == nil {
		srv := newServer(ln, r.entry, r.t, r.logf)
		if !r.install(srv, nil) {
			srv.close()
			return r.ctx.Err()
		}
		return nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return permanentError{fmt.Errorf("cannot listen on %s for the name service: %w", r.listenAddr, err)}
	}
	c, err := dial(ctx, r.dialAddr, r.t)
	if err != nil {
		// The same words as a holder that connects but never answers:
		// which of the two the last retry met is down to timing.
		return &kindError{kind: ErrNoService, text: fmt.Sprintf("port %s is in use but does not answer as an appnode name service", r.dialAddr), cause: err}
	}
	return r.registerWith(ctx, c)
}

// acquireSpawned registers with the host's name service process, starting
// one when none listens.
func (r *Registration) acquireSpawned(ctx context.Context) error {
	c, err := dial(ctx, r.dialAddr, r.t)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			if serr := r.spawn(); serr != nil {
				return permanentError{fmt.Errorf("start the name service on %s: %w", r.listenAddr, serr)}
			}
			return &kindError{kind: ErrNoService, text: fmt.Sprintf("started the name service on %s; waiting for it", r.listenAddr), cause: err}
		}
		return &kindError{kind: ErrNoService, text: fmt.Sprintf("no name service answers on %s", r.dialAddr), cause: err}
	}
	return r.registerWith(ctx, c)
}

// registerWith registers over c, which it then holds (or closes).
func (r *Registration) registerWith(ctx context.Context, c *client) error {
	h := &holder{client: c}
	stop := h.bound(ctx)
	rep, err := h.call(ctx, request{Op: opRegister, Entry: &r.entry})
	stop()
	if err != nil {
		h.close()
		return &kindError{kind: ErrNoService, text: fmt.Sprintf("port %s is in use but does not answer as an appnode name service", r.dialAddr), cause: err}
	}
	switch rep.Status {
	case statusOK:
	case statusTaken:
		h.close()
		return permanentError{&kindError{kind: ErrNameTaken, text: fmt.Sprintf("a node named %s is already running on this host", r.entry.Name)}}
	case statusRefused, statusBadRequest:
		h.close()
		return permanentError{fmt.Errorf("the name service at %s refused the registration: %s", r.dialAddr, rep.Msg)}
	default:
		h.close()
		return fmt.Errorf("the name service at %s answered with unknown status %d", r.dialAddr, rep.Status)
	}
	if !r.install(nil, h) {
		h.close()
		return r.ctx.Err()
	}
	return nil
}

// install records what acquire obtained, unless Close has begun: shutdown
// cancels before it takes mu, so checking under mu cannot miss it.
func (r *Registration) install(srv *server, h *holder) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return false
	}
	r.srv, r.hold = srv, h
	r.serving.Store(srv != nil)
	return true
}

// Lookup asks the name service at hostPort for name, a full node name such
// as "app_node2@host". The error matches ErrNoService when nothing answers
// as a name service there, and ErrNotFound when no node of that name is
// registered.
func Lookup(ctx context.Context, hostPort string, name string) (Entry, error) {
	if err := validName(name); err != nil {
		return Entry{}, fmt.Errorf("look up node at %s: %w", hostPort, err)
	}
	c, err := open(ctx, hostPort)
	if err != nil {
		return Entry{}, err
	}
	defer c.close()
	stop := c.bound(ctx)
	defer stop()
	rep, err := c.call(ctx, request{Op: opLookup, Name: name})
	if err != nil {
		return Entry{}, noAnswer(hostPort, err)
	}
	switch rep.Status {
	case statusOK:
		if rep.Entry == nil || rep.Entry.Name != name {
			return Entry{}, noAnswer(hostPort, errors.New("reply names another node"))
		}
		return *rep.Entry, nil
	case statusNotFound:
		return Entry{}, &kindError{kind: ErrNotFound, text: fmt.Sprintf("no node named %s is registered with the name service at %s", name, hostPort)}
	case statusBadRequest:
		return Entry{}, fmt.Errorf("look up %s at %s: refused: %s", name, hostPort, rep.Msg)
	default:
		return Entry{}, noAnswer(hostPort, fmt.Errorf("unknown status %d", rep.Status))
	}
}

// Names lists the entries registered with the name service at hostPort,
// sorted by name.
func Names(ctx context.Context, hostPort string) ([]Entry, error) {
	c, err := open(ctx, hostPort)
	if err != nil {
		return nil, err
	}
	defer c.close()
	stop := c.bound(ctx)
	defer stop()
	if err := c.send(ctx, request{Op: opNames}); err != nil {
		return nil, noAnswer(hostPort, err)
	}
	var list []Entry
	for {
		var rep reply
		if err := c.read(ctx, &rep); err != nil {
			return nil, noAnswer(hostPort, err)
		}
		if rep.Status != statusOK {
			return nil, noAnswer(hostPort, fmt.Errorf("unknown status %d", rep.Status))
		}
		if !rep.More {
			return list, nil
		}
		if rep.Entry == nil || len(list) == maxNames {
			return nil, noAnswer(hostPort, errors.New("malformed listing"))
		}
		list = append(list, *rep.Entry)
	}
}

func open(ctx context.Context, hostPort string) (*client, error) {
	c, err := dial(ctx, hostPort, &defaultTiming)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reach the name service at %s: %w", hostPort, ctx.Err())
		}
		return nil, &kindError{kind: ErrNoService, text: fmt.Sprintf("no name service answering at %s (is an appnode node running on that host?)", hostPort), cause: err}
	}
	return c, nil
}

func noAnswer(hostPort string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("ask the name service at %s: %w", hostPort, err)
	}
	return &kindError{kind: ErrNoService, text: fmt.Sprintf("something listens at %s but does not answer as an appnode name service", hostPort), cause: err}
}
