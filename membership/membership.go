// Package membership tells an appnode process which nodes are alive. It is a
// thin wrapper around hashicorp/serf that fixes the things Serf leaves to its
// user: timers suited to a few processes on one host, restart of a node under
// the same name, an event channel that can never stall Serf, and a clean
// alive-only view of the members.
//
// Membership is advisory and eventually consistent: two nodes may briefly
// disagree about who is alive. Callers that need agreement (who owns a
// player) must build it on top.
package membership

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Config configures a Membership. Name is required; the rest has defaults.
type Config struct {
	// Name is the full node name, "app_node1@host". It must be unique in
	// the cluster.
	Name string

	// BindAddr is the IP address to listen on and to advertise, such as
	// "127.0.0.1" (DefaultConfig's). With "0.0.0.0" memberlist advertises
	// the first private IP address of the host.
	BindAddr string

	// Port is the gossip port, for both TCP and UDP; 0 picks a free one.
	// Pass the port this name used last time: peers accept a restarted
	// node at once only at its old address. At a new address they keep
	// the old entry until it is declared dead, and meanwhile the newcomer
	// loses Serf's name conflict vote and shuts itself down (see
	// ShutdownCh).
	Port int

	// SecretKey encrypts and authenticates all gossip (memberlist's
	// AES-GCM keyring; 16, 24 or 32 bytes). Members with another key, and
	// strangers, can neither read the gossip nor join: every packet and
	// stream that does not decrypt is dropped. Nil gossips in the clear,
	// which only tests should do; appnode derives it from the cookie.
	SecretKey []byte

	// Tags are gossiped to every member, e.g. {"boot": "...", "tp": "7001"}.
	// Encoded, they must fit in 512 bytes.
	Tags map[string]string

	// Profile selects the failure detection timers: ProfileLocal (the
	// default) fails over in about 1.5 s but declares dead a member that
	// stalls for 1.2 s; ProfileLAN tolerates longer stalls and takes 5 to
	// 25 s. See Profile.
	Profile Profile

	// OnChange is called after membership changes (join, failure, leave,
	// tag update), so that the caller can read Alive again. Calls are made
	// one at a time from a single goroutine; changes that happen while a
	// call runs are reported by one more call after it returns, so every
	// change is followed by at least one call, but not necessarily one
	// call per change. OnChange must not call Shutdown, and should return
	// quickly: while it runs, further changes are only recorded.
	OnChange func()

	// Logf receives Serf's and memberlist's log lines, one per call,
	// including their "[LEVEL]" prefix. Nil discards them.
	Logf func(format string, args ...any)

	// Transport, when non-nil, replaces memberlist's UDP+TCP transport
	// (BindAddr and Port are then only advisory; the transport decides
	// where to listen and what to advertise). Tests use it to inject
	// faults. A memberlist.NodeAwareTransport is used as such. Start takes
	// ownership: the transport is shut down by Shutdown, or by Start if it
	// fails.
	Transport memberlist.Transport
}

// DefaultConfig is the configuration of the member named name, gossiping in
// the clear on 127.0.0.1 at any free port with ProfileLocal's timers.
func DefaultConfig(name string) Config {
	return Config{Name: name, BindAddr: "127.0.0.1", Profile: ProfileLocal}
}

// Validate says what is missing or wrong in c.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("membership: node name is required")
	case c.BindAddr == "":
		return fmt.Errorf("membership: %s: Config.BindAddr is required", c.Name)
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("membership: %s: invalid gossip port %d", c.Name, c.Port)
	case c.Profile != ProfileLocal && c.Profile != ProfileLAN:
		return fmt.Errorf("membership: %s: unknown profile %v", c.Name, c.Profile)
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
		return nil
	}
	return fmt.Errorf("membership: %s: a gossip key has 16, 24 or 32 bytes, not %d", c.Name, len(c.SecretKey))
}

// Member is one member of the cluster as seen by this node.
type Member struct {
	Name string
	Addr string // IP address
	Port int    // gossip port
	Tags map[string]string
}

// eventBuffer is the capacity of the channel that receives Serf's events.
// Serf sends while holding its member lock (and memberlist's node lock), so
// a full channel would stall failure detection; the channel is drained by a
// goroutine that does nothing else, and the buffer only absorbs a burst
// while that goroutine waits to be scheduled.
const eventBuffer = 256

// Membership is this node's view of the cluster. Its methods are safe for
// concurrent use.
type Membership struct {
	serf     *serf.Serf
	port     int
	onChange func()
	logger   *log.Logger       // Serf's, so that our lines land with its own
	guard    *guardedTransport // nil when Config.Transport was given

	events  chan serf.Event // Serf -> pump
	changed chan struct{}   // pump -> notifier; capacity 1, so signals coalesce

	// selfShutdown is closed when Serf shuts down without our asking.
	selfShutdown chan struct{}
	// stopping is set before Shutdown stops Serf, so that the pump can
	// tell our shutdown from one Serf decided on.
	stopping atomic.Bool

	// leaveMu keeps Shutdown out while Leave runs: Serf checks its state
	// at the start of Leave only, and memberlist panics on a leave after
	// shutdown.
	leaveMu sync.Mutex

	stopCh       chan struct{} // closed by Shutdown to stop both goroutines
	wg           sync.WaitGroup
	shutdownOnce sync.Once
	shutdownErr  error
}

// Start creates the local member and starts gossiping, or says what is
// wrong with cfg. It does not contact anyone: call Join.
func Start(cfg Config) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := newLogger(cfg.Logf)

	// Serf v0.11 starts a goroutine before it creates memberlist and
	// leaks it when that fails, and memberlist leaks its transport when it
	// fails before its own start. So everything that can fail there is
	// done here first: binding the sockets and choosing the advertised
	// address. After this, serf.Create fails only on a bad configuration.
	tr := cfg.Transport
	var guarded *guardedTransport
	if tr == nil {
		nt, err := listen(cfg.BindAddr, cfg.Port, logger)
		if err != nil {
			return nil, fmt.Errorf("membership: %s: %w", cfg.Name, err)
		}
		guarded = guard(nt)
		tr = guarded
	}
	_, port, err := tr.FinalAdvertiseAddr("", cfg.Port)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("membership: %s: advertise address: %w", cfg.Name, err)
	}

	m := &Membership{
		port:         port,
		onChange:     cfg.OnChange,
		logger:       logger,
		guard:        guarded,
		events:       make(chan serf.Event, eventBuffer),
		changed:      make(chan struct{}, 1),
		selfShutdown: make(chan struct{}),
		stopCh:       make(chan struct{}),
	}
	sc, err := serfConfig(&cfg, tr, logger, m.events, port)
	if err == nil {
		m.serf, err = serf.Create(sc)
	}
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("membership: start %s: %w", cfg.Name, err)
	}

	m.wg.Add(1)
	go m.pump()
	if m.onChange != nil {
		m.wg.Add(1)
		go m.notify()
	}
	return m, nil
}

// listen binds the gossip port, TCP and UDP, as memberlist would.
func listen(bindAddr string, port int, logger *log.Logger) (*memberlist.NetTransport, error) {
	nc := &memberlist.NetTransportConfig{
		BindAddrs: []string{bindAddr},
		BindPort:  port,
		Logger:    logger,
	}
	// With port 0 the kernel picks a free TCP port, and the same number
	// may be taken for UDP; memberlist retries a few times for that race.
	// A given port is tried once: it is busy or it is not.
	attempts := 1
	if port == 0 {
		attempts = 10
	}
	var err error
	for range attempts {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(nc); err == nil {
			return nt, nil
		}
	}
	return nil, fmt.Errorf("listen on %s port %d: %w", bindAddr, port, err)
}

// pump drains Serf's events. It never blocks on anything but its own
// channels: Serf sends events while holding its member lock, inside
// memberlist's node lock, so a slow reader here would stall failure
// detection, and a reader that called back into Serf (Alive takes the
// member lock) could deadlock once the channel is full. Hence the second
// goroutine, notify, which is the one that runs OnChange.
func (m *Membership) pump() {
	defer m.wg.Done()
	serfDown := m.serf.ShutdownCh()
	for {
		select {
		case e := <-m.events:
			// Only member events change what Alive returns. Queries
			// other than Serf's internal ones (which it answers itself)
			// are never issued in appnode and need no answer; user
			// events are not used.
			if _, ok := e.(serf.MemberEvent); ok {
				select {
				case m.changed <- struct{}{}:
				default: // a signal is already pending
				}
			}
		case <-serfDown:
			serfDown = nil // closed for good; stop selecting on it
			if !m.stopping.Load() {
				m.logger.Printf("[ERR] membership: Serf shut itself down; this node is no longer a member")
				close(m.selfShutdown)
			}
			// Keep draining until Shutdown: Serf's query goroutine
			// may still be forwarding an event to us.
		case <-m.stopCh:
			return
		}
	}
}

// notify runs OnChange once per batch of changes.
func (m *Membership) notify() {
	defer m.wg.Done()
	for {
		select {
		case <-m.changed:
			m.onChange()
		case <-m.stopCh:
			return
		}
	}
}

// Port returns the gossip port actually in use (the one picked when
// Config.Port was 0).
func (m *Membership) Port() int {
	return m.port
}

// ErrGossipKey means a join failed because the other side gossips with
// another SecretKey, or with none while this side has one, or the other
// way round: for appnode, a cookie mismatch.
var ErrGossipKey = errors.New("the gossip is encrypted with another key")

// Join contacts the given gossip addresses ("ip:port") and merges this
// node's view of the cluster with theirs. It returns how many were
// reached. The error is non-nil if none was, or (rarely, with n > 0) if
// the join could not be announced to the cluster. It wraps ErrGossipKey
// when a peer could not be joined for want of a common key.
func (m *Membership) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, errors.New("membership: join: no address given")
	}
	// ignoreOld=true: user events sent before this join are not replayed
	// (appnode sends none; this only avoids surprises).
	n, err := m.serf.Join(addrs, true)
	if err != nil {
		return n, fmt.Errorf("membership: join %s: %w", strings.Join(addrs, ", "), joinError(err))
	}
	return n, nil
}

// joinError flattens memberlist's multi-error ("1 error occurred:\n\t* ...")
// into one line, and recognises a key mismatch. Memberlist has no error
// values for it, only these texts, from either side of the exchange: "no
// installed keys could decrypt the message", "remote state is encrypted
// and encryption is not configured", "encryption is configured but remote
// state is not encrypted".
func joinError(err error) error {
	var parts []string
	if me, ok := err.(interface{ WrappedErrors() []error }); ok {
		for _, e := range me.WrappedErrors() {
			parts = append(parts, e.Error())
		}
	}
	if len(parts) == 0 {
		parts = []string{err.Error()}
	}
	text := strings.Join(parts, "; ")
	if strings.Contains(text, "decrypt") || strings.Contains(text, "encrypt") {
		return &joinErr{text: ErrGossipKey.Error() + " (" + text + ")", cause: err, key: true}
	}
	return &joinErr{text: text, cause: err}
}

// joinErr keeps memberlist's error in the chain under a readable text.
type joinErr struct {
	text  string
	cause error
	key   bool
}

func (e *joinErr) Error() string        { return e.text }
func (e *joinErr) Unwrap() error        { return e.cause }
func (e *joinErr) Is(target error) bool { return e.key && target == ErrGossipKey }

// Alive returns the members currently believed alive, this node included
// (unless it has left), sorted by name. Serf keeps failed members for half
// an hour, to reconnect them, and left members as tombstones; neither is
// returned.
func (m *Membership) Alive() []Member {
	var alive []Member
	for _, sm := range m.serf.Members() {
		if sm.Status != serf.StatusAlive {
			continue
		}
		alive = append(alive, Member{
			Name: sm.Name,
			Addr: sm.Addr.String(),
			Port: int(sm.Port),
			Tags: copyTags(sm.Tags),
		})
	}
	slices.SortFunc(alive, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return alive
}

// SetTags replaces this node's tags and gossips them. It waits (bounded by
// the profile's broadcast timeout) until the update has been sent; on a
// timeout the new tags are in effect locally and will still spread, and
// the error says so.
func (m *Membership) SetTags(tags map[string]string) error {
	// Without this check a stopped Serf would queue the update and wait
	// the whole broadcast timeout for a gossip round that never comes.
	if m.serf.State() == serf.SerfShutdown {
		return errors.New("membership: set tags: membership is shut down")
	}
	if err := m.serf.SetTags(copyTags(tags)); err != nil {
		return fmt.Errorf("membership: set tags: %w", err)
	}
	return nil
}

// Leave announces that this node is leaving, so that peers report it as
// left rather than failed, and waits (bounded: a few seconds at most with
// ProfileLocal) for the announcement to spread. Call Shutdown afterwards;
// a node that has left cannot join again.
func (m *Membership) Leave() error {
	m.leaveMu.Lock()
	defer m.leaveMu.Unlock()
	if err := m.serf.Leave(); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossiping at once and waits for this package's
// goroutines. Without Leave first, peers see this node fail, as after a
// crash. A Leave in progress is allowed to finish first. Calling it again
// returns the first call's result.
func (m *Membership) Shutdown() error {
	m.leaveMu.Lock()
	defer m.leaveMu.Unlock()
	m.shutdownOnce.Do(func() {
		m.stopping.Store(true)
		// Serf first: the pump must keep draining while Serf stops, or
		// Serf's query goroutine could block forever forwarding an event.
		if err := m.serf.Shutdown(); err != nil {
			m.shutdownErr = fmt.Errorf("membership: shutdown: %w", err)
		}
		close(m.stopCh)
		m.wg.Wait()
	})
	return m.shutdownErr
}

// ShutdownCh is closed if Serf shuts itself down while this node is
// running. In Serf v0.11 the only cause is losing a name conflict vote:
// another live process at another address holds this node's name. The
// node is then cut off from the cluster and must say so. The channel is
// not closed by Shutdown; still call Shutdown to release everything.
func (m *Membership) ShutdownCh() <-chan struct{} {
	return m.selfShutdown
}

func copyTags(tags map[string]string) map[string]string {
	if tags == nil {
		return map[string]string{}
	}
	return maps.Clone(tags)
}

// Stats counts inbound gossip streams the limits of guard.go turned away.
type Stats struct {
	StreamsRefused int64 // closed at once: too many streams being served
	StreamsTooLong int64 // cut off at the per-stream size limit
}

// Stats returns the gossip port's counters (zero with Config.Transport).
func (m *Membership) Stats() Stats {
	if m.guard == nil {
		return Stats{}
	}
	return Stats{StreamsRefused: m.guard.refused.Load(), StreamsTooLong: m.guard.tooLong.Load()}
}

// newLogger returns the logger given to Serf and memberlist. They write
// one line per Printf; each line becomes one logf call, within a rate
// limit: memberlist logs every packet or stream it cannot decrypt, so a
// stranger sending garbage to the gossip port would otherwise write the
// log as fast as it sends.
func newLogger(logf func(format string, args ...any)) *log.Logger {
	if logf == nil {
		return log.New(io.Discard, "", 0)
	}
	return log.New(&logfWriter{logf: logf, tokens: logBurst}, "", 0)
}

// Log rate limit: a burst of logBurst lines, then logPerSecond.
const (
	logBurst     = 50
	logPerSecond = 10
)

type logfWriter struct {
	logf func(format string, args ...any)

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

func (w *logfWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	now := time.Now()
	if !w.last.IsZero() {
		w.tokens = min(logBurst, w.tokens+now.Sub(w.last).Seconds()*logPerSecond)
	}
	w.last = now
	if w.tokens < 1 {
		w.suppressed++
		w.mu.Unlock()
		return len(p), nil
	}
	w.tokens--
	n := w.suppressed
	w.suppressed = 0
	w.mu.Unlock()
	if n > 0 {
		w.logf("[WARN] membership: %d gossip log lines were dropped (over %d a second: a flood of bad packets?)", n, logPerSecond)
	}
	// A string copy: the logger reuses p once Write returns.
	w.logf("%s", string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
