// Package front is a node's front door: an HTTP API with the console's
// semantics for load balancers, game servers and browsers (rewards, reads,
// readiness, a graceful drain), Prometheus metrics, and a live page of the
// cluster.
//
//	POST /players/{id}/reward   {"points":5} or ?points=5; Idempotency-Key
//	GET  /players/{id}          total, owner, keeper (linearizable); 404 if unknown
//	GET  /livez, /readyz        for the balancer
//	GET  /metrics               Prometheus
//	admin (loopback only unless Config.AdminFromAnywhere):
//	GET  /                      the live cluster page
//	GET  /players?node=&cursor=&limit=   a page of a node's players
//	GET  /cluster               members, state, incarnation, counts
//	GET  /cluster/events        Server-Sent Events of the console's reports
//	POST /admin/drain           ready turns false, then the node leaves as after q
//
// Everything is bounded: header and body sizes, timeouts on every phase of
// a request, a per-request deadline, the number of requests served at once
// (a 503 beyond it, never a queue) and of event streams. A slow or hostile
// client holds at most one slot and its own connection.
package front

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appnode/appnode/node"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
)

// Backend is the node as the front door uses it. *node.Node implements it
// through ForNode; tests use fakes.
type Backend interface {
	// Name is the node's full name.
	Name() string
	// RewardWhere adds points (as typed) to player; a non-empty key names
	// the request for deduplication (Idempotency-Key).
	RewardWhere(ctx context.Context, player, points, key string) (total int64, owner, keeper string, err error)
	// Read returns the player's total linearizably; wire.CodeNotFound if
	// no node holds it.
	Read(ctx context.Context, player string) (total int64, owner, keeper string, err error)
	// PlayersPage lists a node's primaries ("" is this node).
	PlayersPage(ctx context.Context, node, cursor string, limit int) ([]wire.PageEntry, string, error)
	// Cluster describes every member, asking each at most timeout.
	Cluster(ctx context.Context, timeout time.Duration) []node.MemberInfo
	// Health is the node's serving state.
	Health() node.Health
	// Subscribe follows the node's events; cancel ends it and closes the
	// channel.
	Subscribe(buf int) (events <-chan replica.Event, cancel func())
	// EventsSince returns kept events after seq, and whether none was
	// forgotten.
	EventsSince(seq uint64) ([]replica.Event, bool)
}

// ForNode adapts a running node to Backend and Source.
func ForNode(n *node.Node) interface {
	Backend
	Source
} {
	return nodeBackend{n}
}

type nodeBackend struct{ *node.Node }

func (b nodeBackend) Subscribe(buf int) (<-chan replica.Event, func()) {
	s := b.Node.Subscribe(buf)
	return s.C, s.Close
}
func (b nodeBackend) Stats() replica.Stats { return b.Node.Store().Stats() }
func (b nodeBackend) Unprotected() int     { return b.Node.Store().Unprotected() }

// Config configures a front door. Only Backend is required.
type Config struct {
	Backend Backend
	// Metrics is served at /metrics; nil serves a registry with only the
	// front door's own metrics and the Go and process collectors.
	Metrics *Metrics
	// Token, if set, is required as "Authorization: Bearer TOKEN" on
	// every endpoint but /livez and /readyz (a browser may give it once
	// as /?token=..., which sets a cookie). Compared in constant time,
	// never logged.
	Token string
	// AdminFromAnywhere serves the admin endpoints (the page, /cluster,
	// /players, /admin/drain) to other hosts too; by default only to
	// loopback clients.
	AdminFromAnywhere bool
	// Drain is called once, on POST /admin/drain, after readiness has
	// turned false and DrainDelay has passed: it must start the graceful
	// exit `q` does. Nil refuses drains.
	Drain func()
	// DrainDelay is how long readiness is false before Drain is called,
	// so that a balancer polling /readyz stops sending first (default 1 s).
	DrainDelay time.Duration
	// RequestTimeout bounds the node's work on one request (default 10 s,
	// the console's own limit).
	RequestTimeout time.Duration
	// MaxInFlight bounds the requests served at once; beyond it the answer
	// is 503 "overloaded" at once (default 512). MaxStreams bounds event
	// streams (default 64).
	MaxInFlight, MaxStreams int
	// MaxBody bounds a request body (default 4 KiB: a reward is a dozen
	// bytes).
	MaxBody int64
	// ClusterTimeout bounds each member's answer for /cluster (default 1 s).
	ClusterTimeout time.Duration
	// Logf receives diagnostics. May be nil.
	Logf func(format string, args ...any)
}

// Server header and time limits: a request's headers must arrive within
// ReadHeaderTimeout, all of it within readTimeout; an idle keep-alive
// connection is closed after idleTimeout.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// streamWrite bounds each write to an event stream, and heartbeat is
	// how often an idle stream gets a comment (so proxies keep it open and
	// a dead client is noticed).
	streamWrite = 10 * time.Second
	heartbeat   = 15 * time.Second
	maxKeyLen   = 255 // Idempotency-Key
	maxPage     = wire.MaxPage
	defaultPage = 50
)

// Front is one node's HTTP front door.
type Front struct {
	cfg      Config
	b        Backend
	metrics  *Metrics
	handler  http.Handler
	tokenSum [32]byte
	sem      chan struct{}
	streams  chan struct{}
	draining atomic.Bool
	drainMu  sync.Once

	done   chan struct{} // closed by Close: event streams end
	wg     sync.WaitGroup
	mu     sync.Mutex
	srv    *http.Server
	closed bool
}

// New builds a front door; Serve starts it.
func New(cfg Config) (*Front, error) {
	if cfg.Backend == nil {
		return nil, errors.New("front: Config.Backend is required")
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.DrainDelay <= 0 {
		cfg.DrainDelay = time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 512
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 64
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 4 << 10
	}
	if cfg.ClusterTimeout <= 0 {
		cfg.ClusterTimeout = time.Second
	}
	f := &Front{
		cfg:     cfg,
		b:       cfg.Backend,
		metrics: cfg.Metrics,
		sem:     make(chan struct{}, cfg.MaxInFlight),
		streams: make(chan struct{}, cfg.MaxStreams),
		done:    make(chan struct{}),
	}
	if cfg.Token != "" {
		f.tokenSum = sha256.Sum256([]byte(cfg.Token))
	}
	f.handler = f.routes()
	return f, nil
}

// Handler is the front door's HTTP handler (for tests and embedding).
func (f *Front) Handler() http.Handler { return f.handler }

// Draining reports whether a drain was asked for.
func (f *Front) Draining() bool { return f.draining.Load() }

// Serve serves HTTP on ln (HTTPS if certFile and keyFile are set) until
// Close. It returns at once; the server runs on a goroutine Close waits for.
func (f *Front) Serve(ln net.Listener, certFile, keyFile string) {
	srv := &http.Server{
		Handler:           f.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		// WriteTimeout covers a request's whole handling: the node's
		// deadline plus time to write. Event streams extend their own.
		WriteTimeout:   f.cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:    idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       nil,
	}
	if f.cfg.Logf != nil {
		srv.ErrorLog = newLogger(f.cfg.Logf)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		ln.Close()
		return
	}
	f.srv = srv
	f.wg.Add(1)
	f.mu.Unlock()
	go func() {
		defer f.wg.Done()
		var err error
		if certFile != "" {
			err = srv.ServeTLS(ln, certFile, keyFile)
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			f.logf("front: HTTP server stopped: %v", err)
		}
	}()
}

// Close stops serving: event streams end, requests under way get until
// ctx ends to finish, then connections are closed.
func (f *Front) Close(ctx context.Context) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	close(f.done)
	srv := f.srv
	f.mu.Unlock()
	var err error
	if srv != nil {
		if err = srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}
	f.wg.Wait()
	return err
}

func (f *Front) logf(format string, args ...any) {
	if f.cfg.Logf != nil {
		f.cfg.Logf(format, args...)
	}
}

// authorized checks the bearer token (header, or the cookie the page
// sets), in constant time.
func (f *Front) authorized(r *http.Request) bool {
	if f.cfg.Token == "" {
		return true
	}
	given := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && (h[:7] == "Bearer " || h[:7] == "bearer ") {
		given = h[7:]
	} else if c, err := r.Cookie(tokenCookie); err == nil {
		given = c.Value
	}
	sum := sha256.Sum256([]byte(given))
	return given != "" && subtle.ConstantTimeCompare(sum[:], f.tokenSum[:]) == 1
}

const tokenCookie = "appnode_token"

// loopback says whether the request came from this host.
func loopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readiness says whether a balancer should send this node requests, and
// if not, why, with the code a request would meet.
func (f *Front) readiness() (ready bool, code, why string) {
	h := f.b.Health()
	switch {
	case f.draining.Load() || h.Leaving:
		return false, codeDraining, "the node is draining: it hands its players over and leaves"
	case h.Resetting:
		return false, Slug(wire.CodeDeclaredDead), "the cluster declared this node failed (it was paused or cut off); it is rejoining as a new incarnation"
	case h.Members < 2:
		return false, Slug(wire.CodeTooFewNodes), "this node has not joined another node: with fewer than two nodes no reward can be kept twice"
	case !h.Quorate:
		return false, Slug(wire.CodeNoQuorum), fmt.Sprintf("this node sees %d members, not a majority of the cluster (partition or failures)", h.Members)
	}
	return true, "", ""
}

// drain turns readiness false, then after DrainDelay starts the graceful
// exit. It reports false if a drain had already begun.
func (f *Front) drain() bool {
	first := false
	f.drainMu.Do(func() {
		first = true
		f.draining.Store(true)
		f.metrics.draining.Set(1)
		f.logf("front: drain asked over HTTP: readiness is false; leaving in %v", f.cfg.DrainDelay)
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			f.cfg.Drain()
			return
		}
		f.wg.Add(1)
		f.mu.Unlock()
		go func() {
			defer f.wg.Done()
			t := time.NewTimer(f.cfg.DrainDelay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-f.done:
			}
			f.cfg.Drain()
		}()
	})
	return first
}
