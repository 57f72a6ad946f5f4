package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/membership"
	"github.com/appnode/appnode/names"
	"github.com/appnode/appnode/quorum"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/transport"
	"github.com/appnode/appnode/wire"
	"github.com/hashicorp/memberlist"
)

// Serf tags every member carries. The boot id in them is how the cluster
// learns that a name came back as a new process with empty memory.
const (
	tagBoot      = "boot"
	tagTransport = "tp"
)

// Config describes one node. Start from DefaultConfig.
type Config struct {
	// Name is "app_node1" or "app_node1@host"; HOST defaults to the short
	// host name, as `erl -sname` does.
	Name string
	// Cookie is the cluster's shared secret (required). Gossip is
	// encrypted with a key derived from it, and every transport
	// connection proves knowledge of it both ways: nodes with different
	// cookies never form a cluster.
	Cookie cookie.Cookie
	// BindAddr is the IP address every listener binds and advertises.
	// 127.0.0.1 by default: other hosts reach a node only when it binds an
	// address they can route to, and then so can anyone on that network
	// who tries (the cookie is what keeps them out).
	BindAddr string
	// GossipPort and TransportPort: 0 reuses the ports this name had last
	// time (from StateDir), else picks free ones. Reusing them lets peers
	// take a restarted node back at once: at a new address they keep the
	// old entry until it is declared dead.
	GossipPort, TransportPort int
	// NamesPort is the per-host name service's port (names.DefaultPort).
	// Every node of a host must agree on it; a second cluster on the same
	// host (a test's) needs its own.
	NamesPort int
	// SpawnNames, if set, starts the host's name service as a process of
	// its own when none answers (see names.Config.Spawn); if nil, the
	// nodes of a host serve it among themselves.
	SpawnNames func() error
	// StateDir keeps the ports of each name across restarts. "" keeps none.
	StateDir string
	// Profile selects failure detection timers: ProfileLocal (the default)
	// notices a kill in about 1.5 s but takes a 1.2 s stall for a
	// failure; see membership.Profile.
	Profile membership.Profile
	// CallTimeout bounds each node-to-node request the replica layer
	// makes (replica.DefaultCallTimeout). Shorter fails over sooner from
	// a peer that stopped answering, but gives up on a peer that is only
	// slow and makes the reward's outcome unknown to its caller.
	CallTimeout time.Duration
	// LinkTimeout bounds each write on a link to a peer, and a call that
	// carries no deadline of its own (transport.DefaultRequestTimeout). A
	// write that times out closes the link and fails what is in flight
	// on it, so it is longer than CallTimeout by default.
	LinkTimeout time.Duration
	// Command runs one console line for `appnode rpc`: out is the answer
	// as the console prints it, err non-nil when it is an error. Nil
	// refuses rpc.
	Command func(ctx context.Context, line string) (out string, err error)
	// Logf receives diagnostics (Serf's chatter among them). May be nil.
	Logf func(format string, args ...any)
	// OwnsProcess says this node is the only one in its process, so it
	// may tune the process's garbage collector: at rest it hands memory
	// back to the OS and sets a soft memory limit (see compactWhenIdle).
	// Leave it off when several nodes share a process, as in tests.
	OwnsProcess bool

	// HTTPPort and HTTPURL are this node's front door, if it has one: the
	// port is registered with the host's name service, the URL is what
	// /cluster shows other nodes. Zero and "" when it serves no HTTP.
	HTTPPort int
	HTTPURL  string
	// Observer receives the reward path's timings (replica.Config). May
	// be nil.
	Observer replica.Observer

	// Test hooks: cut transport links, and replace memberlist's network.
	Block               func(peer string) bool
	MemberlistTransport memberlist.Transport
}

// DefaultConfig is the configuration of the node name (see Config.Name) of
// the cluster whose cookie is c, on 127.0.0.1 and this host's name service
// at its default port, with every knob at its default.
func DefaultConfig(name string, c cookie.Cookie) Config {
	return Config{
		Name:        name,
		Cookie:      c,
		BindAddr:    "127.0.0.1",
		NamesPort:   names.DefaultPort,
		Profile:     membership.ProfileLocal,
		CallTimeout: replica.DefaultCallTimeout,
		LinkTimeout: transport.DefaultRequestTimeout,
	}
}

// Validate says what is missing or wrong in c.
func (c Config) Validate() error {
	full := names.FullName(c.Name)
	if err := names.ValidateName(full); err != nil {
		return err
	}
	switch {
	case c.Cookie.IsZero():
		return fmt.Errorf("start %s: no cookie: nodes join only a cluster whose cookie they know", full)
	case net.ParseIP(c.BindAddr) == nil:
		return fmt.Errorf("start %s: bind address %q is not an IP address", full, c.BindAddr)
	case c.GossipPort < 0 || c.GossipPort > 65535 || c.TransportPort < 0 || c.TransportPort > 65535:
		return fmt.Errorf("start %s: ports %d (gossip) and %d (transport) must be TCP port numbers or 0", full, c.GossipPort, c.TransportPort)
	case c.NamesPort <= 0 || c.NamesPort > 65535:
		return fmt.Errorf("start %s: name service port %d is not a TCP port number", full, c.NamesPort)
	case c.CallTimeout <= 0 || c.LinkTimeout <= 0:
		return fmt.Errorf("start %s: CallTimeout (%v) and LinkTimeout (%v) must be positive", full, c.CallTimeout, c.LinkTimeout)
	}
	return nil
}

// Node is one running appnode process.
type Node struct {
	cfg    Config
	name   string
	self   atomic.Value // wire.NodeID
	store  *replica.Store
	tr     *transport.Transport
	ml     *membership.Membership
	reg    *names.Registration
	events chan replica.Event
	bcast  broadcaster // every event, numbered, for subscribers other than the console

	eventsMu     sync.RWMutex // orders emits before the channel's close
	eventsClosed bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	members   map[string]wire.NodeID // last membership given to the store
	addrs     map[string]string      // name -> transport address
	resetting atomic.Bool
	leaving   atomic.Bool           // a graceful exit is under way: a fence now is its own departure
	ready     atomic.Bool           // n.ml is set; Serf may report changes before Start returns
	fencings  atomic.Uint64         // times this node was declared failed and rejoined
	gone      map[string]goneMember // members lost from the view, for /cluster; guarded by mu
	closeOnce sync.Once
}

type savedPorts struct {
	Gossip    int `json:"gossip"`
	Transport int `json:"transport"`
}

// Start brings a node up: store, transport, membership, name registration.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n, err := newNode(cfg)
	if err != nil {
		return nil, err
	}
	saved := loadPorts(cfg.StateDir, n.name)
	if err := n.listen(saved); err != nil {
		n.store.Close()
		n.cancel()
		return nil, fmt.Errorf("start %s: %w", n.name, err)
	}
	n.reg, err = names.Register(ctx, n.namesConfig())
	if err != nil {
		n.ml.Shutdown()
		n.tr.Close()
		n.store.Close()
		n.cancel()
		return nil, fmt.Errorf("start %s: %w", n.name, err)
	}
	savePorts(cfg.StateDir, n.name, savedPorts{Gossip: n.ml.Port(), Transport: n.tr.Port()})
	n.ready.Store(true)
	n.wg.Add(1)
	go n.watchSerf()
	if cfg.OwnsProcess {
		n.wg.Add(1)
		go n.compactWhenIdle()
	}
	n.membershipChanged()
	return n, nil
}

// newNode makes the node of a valid cfg under a new boot id, with its
// store: everything but the listeners.
func newNode(cfg Config) (*Node, error) {
	full := names.FullName(cfg.Name)
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:     cfg,
		name:    full,
		events:  make(chan replica.Event, 256),
		ctx:     nctx,
		cancel:  cancel,
		members: map[string]wire.NodeID{},
		addrs:   map[string]string{},
		gone:    map[string]goneMember{},
	}
	// Boot ids grow with every start (the replica layer relies on that to
	// tell a late report of an old process from a new one).
	n.self.Store(wire.NodeID{Name: full, Boot: uint64(time.Now().UnixNano())})

	rcfg := replica.DefaultConfig(n.Self(), n)
	rcfg.CallTimeout = cfg.CallTimeout
	rcfg.OnEvent = n.publish
	rcfg.Logf = cfg.Logf
	rcfg.OnDeclaredDead = n.declaredDead
	rcfg.Observer = cfg.Observer
	if cfg.StateDir != "" {
		rcfg.Disk = newRosterDisk(cfg.StateDir, full)
	}
	var err error
	if n.store, err = replica.New(rcfg); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", full, err)
	}
	return n, nil
}

// listen starts the transport and then membership, whose tags carry the
// transport's port. Each listens on the port Config gives, else on the one
// this name used last time (saved), or on a free one if that is taken.
func (n *Node) listen(saved savedPorts) error {
	tport := cmp.Or(n.cfg.TransportPort, saved.Transport)
	var err error
	n.tr, err = n.listenTransport(tport)
	if err != nil && tport != 0 && tport == saved.Transport {
		n.tr, err = n.listenTransport(0)
	}
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	gport := cmp.Or(n.cfg.GossipPort, saved.Gossip)
	n.ml, err = n.startMembership(gport)
	if err != nil && gport != 0 && gport == saved.Gossip {
		n.ml, err = n.startMembership(0)
	}
	if err != nil {
		n.tr.Close()
		return fmt.Errorf("membership: %w", err)
	}
	return nil
}

func (n *Node) listenTransport(port int) (*transport.Transport, error) {
	cfg := transport.DefaultConfig(n.cfg.Cookie, linkPeers{n}, memberHandler{n})
	cfg.BindAddr = n.cfg.BindAddr
	cfg.Port = port
	cfg.Clients = clientHandler{n}
	cfg.Block = n.cfg.Block
	cfg.RequestTimeout = n.cfg.LinkTimeout
	cfg.Logf = n.cfg.Logf
	return transport.Listen(cfg)
}

func (n *Node) startMembership(port int) (*membership.Membership, error) {
	cfg := membership.DefaultConfig(n.name)
	cfg.SecretKey = n.cfg.Cookie.GossipKey()
	cfg.BindAddr = n.cfg.BindAddr
	cfg.Port = port
	cfg.Tags = n.tags()
	cfg.Profile = n.cfg.Profile
	cfg.OnChange = n.membershipChanged
	cfg.Logf = n.cfg.Logf
	cfg.Transport = n.cfg.MemberlistTransport
	return membership.Start(cfg)
}

// namesConfig is the registration of this node, once it listens, with its
// host's name service.
func (n *Node) namesConfig() names.Config {
	cfg := names.DefaultConfig(names.Entry{Name: n.name, GossipPort: n.ml.Port(), TransportPort: n.tr.Port(), Boot: n.Self().Boot, HTTPPort: n.cfg.HTTPPort})
	cfg.BindAddr = n.cfg.BindAddr
	cfg.Port = n.cfg.NamesPort
	cfg.Spawn = n.cfg.SpawnNames
	cfg.Logf = n.cfg.Logf
	return cfg
}

func (n *Node) tags() map[string]string {
	return map[string]string{
		tagBoot:      strconv.FormatUint(n.Self().Boot, 16),
		tagTransport: strconv.Itoa(n.tr.Port()),
	}
}

// Self is this node's current incarnation.
func (n *Node) Self() wire.NodeID { return n.self.Load().(wire.NodeID) }

// Name is this node's full name.
func (n *Node) Name() string { return n.name }

// Store gives tests and tools the replica store.
func (n *Node) Store() *replica.Store { return n.store }

// Events delivers what the console should show as it happens. It is
// closed when the node has stopped.
func (n *Node) Events() <-chan replica.Event { return n.events }

// ListenerStats counts what this node's transport and gossip listeners
// turned away: strangers, peers with another cookie, malformed frames.
type ListenerStats struct {
	Transport transport.Stats
	Gossip    membership.Stats
}

// ListenerStats returns the listeners' counters so far.
func (n *Node) ListenerStats() ListenerStats {
	return ListenerStats{Transport: n.tr.Stats(), Gossip: n.ml.Stats()}
}

// GossipPort and TransportPort are the ports this node listens on.
func (n *Node) GossipPort() int    { return n.ml.Port() }
func (n *Node) TransportPort() int { return n.tr.Port() }

func (n *Node) emit(level replica.Level, format string, args ...any) {
	n.publish(replica.Event{Time: time.Now(), Level: level, Text: fmt.Sprintf(format, args...)})
}

// publish numbers e and hands it to the console, the subscribers
// (Subscribe), and the log.
func (n *Node) publish(e replica.Event) {
	e = n.bcast.publish(e)
	n.eventsMu.RLock()
	if !n.eventsClosed {
		select {
		case n.events <- e:
		default:
			// A console that falls behind loses events rather than
			// stalling the node; the log keeps them.
		}
	}
	n.eventsMu.RUnlock()
	if n.cfg.Logf != nil {
		n.cfg.Logf("[%s] %s", e.Level, e.Text)
	}
}

// Call implements replica.Network over the transport.
func (n *Node) Call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error) {
	return n.tr.Call(ctx, to, m)
}

// CallAsync sends m to the incarnation to without waiting for the reply
// (replica.AsyncNetwork).
func (n *Node) CallAsync(to wire.NodeID, m wire.Msg, timeout time.Duration, done func(wire.Msg, error)) (cancel func(error)) {
	return n.tr.CallAsync(to, m, timeout, done)
}

func (n *Node) resolve(name string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a, ok := n.addrs[name]
	return a, ok
}

// membershipChanged reads Serf's live members and hands them to the store.
// It runs on membership's single notifier goroutine.
func (n *Node) membershipChanged() {
	if !n.ready.Load() {
		return
	}
	alive := n.ml.Alive()
	ids := make([]wire.NodeID, 0, len(alive))
	addrs := make(map[string]string, len(alive))
	for _, m := range alive {
		boot, err1 := strconv.ParseUint(m.Tags[tagBoot], 16, 64)
		port, err2 := strconv.Atoi(m.Tags[tagTransport])
		if err1 != nil || err2 != nil || port <= 0 || port > 65535 {
			n.logf("node: ignoring member %s with malformed tags %v", m.Name, m.Tags)
			continue
		}
		ids = append(ids, wire.NodeID{Name: m.Name, Boot: boot})
		addrs[m.Name] = net.JoinHostPort(m.Addr, strconv.Itoa(port))
	}
	self := n.Self()
	n.mu.Lock()
	old := n.members
	next := make(map[string]wire.NodeID, len(ids))
	for _, id := range ids {
		next[id.Name] = id
	}
	n.members = next
	n.noteGoneLocked(old, next)
	n.noteGoneLocked(old, next)
	for name, a := range addrs {
		n.addrs[name] = a
	}
	n.mu.Unlock()

	n.store.SetMembers(ids)

	var joined []wire.NodeID
	for name, id := range next {
		if name == self.Name {
			continue
		}
		if o, ok := old[name]; !ok {
			n.emit(replica.Info, "node %s up", name)
			joined = append(joined, id)
		} else if o.Boot != id.Boot {
			n.emit(replica.Warning, "node %s restarted as a new incarnation; it lost what it held", name)
			joined = append(joined, id)
		}
	}
	for name := range old {
		if _, ok := next[name]; !ok && name != self.Name {
			n.emit(replica.Warning, "node %s down", name)
			n.tr.Disconnect(name)
		}
	}
	// Dial every newcomer at once: the link's EOF is the fastest sign of
	// its death later, and its handshake tells this node if it was fenced.
	for _, id := range joined {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
			defer cancel()
			if _, err := n.tr.Call(ctx, id, &wire.Ping{}); err != nil {
				n.logf("node: first contact with %s failed: %v", id.Name, err)
			}
		}()
	}
}

// onFenced runs when a peer's handshake says this incarnation was declared
// failed (this process was paused or cut off for too long).
func (n *Node) onFenced(by wire.NodeID) { n.declaredDead(n.Self()) }

// declaredDead drops everything incarnation dead held, if it is still the
// current one, and comes back under a new boot id: what it held has been
// taken over elsewhere.
func (n *Node) declaredDead(dead wire.NodeID) {
	if dead != n.Self() || n.leaving.Load() || !n.resetting.CompareAndSwap(false, true) {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.resetting.Store(false)
		old := n.Self()
		boot := uint64(time.Now().UnixNano())
		if boot <= old.Boot {
			boot = old.Boot + 1
		}
		id := wire.NodeID{Name: old.Name, Boot: boot}
		// The new boot must be ours before anyone hears of it.
		n.self.Store(id)
		n.fencings.Add(1)
		n.store.Reset(id)
		if err := n.ml.SetTags(n.tags()); err != nil {
			n.emit(replica.Error, "could not announce the new incarnation: %v", err)
		}
		n.emit(replica.Warning, "the cluster had declared this node failed (paused or cut off); rejoined as a new incarnation")
		n.membershipChanged()
	}()
}

func (n *Node) watchSerf() {
	defer n.wg.Done()
	select {
	case <-n.ctx.Done():
	case <-n.ml.ShutdownCh():
		n.emit(replica.Error, "cluster membership stopped on its own (name conflict?): this node no longer sees the cluster; restart it")
	}
}

func (n *Node) logf(format string, args ...any) {
	if n.cfg.Logf != nil {
		n.cfg.Logf(format, args...)
	}
}

// ---- what the console asks ----

// Connect joins the cluster of target: "NAME@HOST" (resolved through
// HOST's name service, as Erlang asks epmd) or "HOST:PORT" (a gossip
// address). It returns once target is a live member here.
func (n *Node) Connect(ctx context.Context, target string) error {
	target = strings.TrimSpace(target)
	if target == "" {
		return errors.New("connect: which node? e.g. connect app_node2@" + names.ShortHostname())
	}
	if target == n.name {
		return nil
	}
	var gossip, want string
	if strings.Contains(target, "@") {
		if err := names.ValidateName(target); err != nil {
			return err
		}
		_, host, _ := strings.Cut(target, "@")
		ip, err := n.hostIP(ctx, host)
		if err != nil {
			return fmt.Errorf("cannot connect to %s: %w", target, err)
		}
		if err := n.canReachFrom(target, ip); err != nil {
			return err
		}
		nsAddr := net.JoinHostPort(ip, strconv.Itoa(n.cfg.NamesPort))
		var e names.Entry
		for attempt := 0; ; attempt++ {
			e, err = names.Lookup(ctx, nsAddr, target)
			// Just after the serving node died, the others take a moment
			// to re-register with its successor.
			if err == nil || !errors.Is(err, names.ErrNotFound) || attempt >= 10 || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("cannot connect to %s: %w", target, err)
		}
		gossip = net.JoinHostPort(ip, strconv.Itoa(e.GossipPort))
		want = target
	} else {
		if _, _, err := net.SplitHostPort(target); err != nil {
			return fmt.Errorf("connect %q: give NAME@HOST or HOST:PORT (the node's gossip port)", target)
		}
		gossip = target
	}
	if _, err := n.ml.Join([]string{gossip}); err != nil {
		if errors.Is(err, membership.ErrGossipKey) {
			n.logf("node: connect %s: %v", target, err)
			return fmt.Errorf("cannot connect to %s: cookie mismatch: it gossips with another cookie: %w", target, membership.ErrGossipKey)
		}
		// The name service answered, so the host is up; a node that
		// cannot be joined is gone, paused, or firewalled. A cookie
		// mismatch is reported as such above, but say it is possible.
		return fmt.Errorf("cannot connect to %s: its gossip port did not answer (node unreachable, or a cookie mismatch): %w", target, err)
	}
	return n.waitAdmitted(ctx, target, want)
}

// waitAdmitted waits until want (a node name, "" for any) is a member of
// this node's cluster, with this node: the cluster agreed to take one of
// them in (package quorum). Gossip alone makes them see each other, not
// share players.
func (n *Node) waitAdmitted(ctx context.Context, target, want string) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if want == "" || n.admitted(want) {
			return nil
		}
		select {
		case <-ctx.Done():
			if !n.isMember(want) {
				return fmt.Errorf("cannot connect to %s: joined its gossip address but it never showed up as a member: %w", target, ctx.Err())
			}
			why := n.store.JoinRefused(want)
			if why == "" {
				why = "the cluster has not agreed to admit it yet (is a majority of its members reachable?)"
			}
			return fmt.Errorf("cannot connect to %s: it gossips with this node but is not in its cluster: %s", target, why)
		case <-t.C:
		}
	}
}

// admitted says whether name, at the incarnation gossip reports, and this
// node are both members of the roster this node knows.
func (n *Node) admitted(name string) bool {
	n.mu.Lock()
	id, ok := n.members[name]
	n.mu.Unlock()
	r := n.store.Roster()
	return ok && quorum.IsMember(r, id) && quorum.IsMember(r, n.Self())
}

func (n *Node) isMember(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.members[name]
	return ok
}

// canReachFrom says, before anything is tried, when this node cannot be
// reached from the target's host at all: it listens on loopback (the safe
// default) and the target is on another host.
func (n *Node) canReachFrom(target, ip string) error {
	bind := net.ParseIP(n.cfg.BindAddr)
	far := net.ParseIP(ip)
	if bind == nil || far == nil || !bind.IsLoopback() || far.IsLoopback() {
		return nil
	}
	return fmt.Errorf("cannot connect to %s: this node listens on %s only, which %s cannot reach; restart this node with --bind set to an address of this host that %s can route to (and %s the same way on its host), then connect again", target, n.cfg.BindAddr, ip, ip, target)
}

// hostIP finds where HOST's name service listens: this host's own name
// means the local bind address.
func (n *Node) hostIP(ctx context.Context, host string) (string, error) {
	_, myHost, _ := strings.Cut(n.name, "@")
	if host == myHost || host == "localhost" {
		if n.cfg.BindAddr == "0.0.0.0" || n.cfg.BindAddr == "::" {
			return "127.0.0.1", nil
		}
		return n.cfg.BindAddr, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return host, nil
	}
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil || len(addrs) == 0 {
		return "", fmt.Errorf("cannot resolve host %q: %v", host, err)
	}
	return addrs[0], nil
}

// Reward adds points (as typed) to player and returns the new total.
func (n *Node) Reward(ctx context.Context, player, points string) (int64, error) {
	return n.store.Reward(ctx, player, points)
}

// LocalPlayers lists the players whose primary runs here.
func (n *Node) LocalPlayers() []string { return n.store.LocalPlayers() }

// Nodes lists the other live members, sorted.
func (n *Node) Nodes() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.members))
	for name := range n.members {
		if name != n.name && !n.store.Fenced(n.members[name]) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// Where reports the owner and keeper of player ("" when unknown).
func (n *Node) Where(ctx context.Context, player string) (owner, keeper string, err error) {
	o, k, err := n.store.Where(ctx, player)
	return o.Name, k.Name, err
}

// clientRequestTimeout bounds a reward or where sent by a client (`appnode
// bench`), as the console's own timeout bounds a command typed there.
const clientRequestTimeout = 10 * time.Second

// handleClient serves a non-member: a console line (`appnode rpc`), or a
// reward or where (`appnode bench`), each served as if typed at this
// node's console. A client's reward keeps its id only if the client named
// it with wire.ClientReqID; any other gets this node's own.
func (n *Node) handleClient(ctx context.Context, m wire.Msg) (wire.Msg, error) {
	switch m := m.(type) {
	case *wire.Command:
		if n.cfg.Command == nil {
			return nil, wire.Errorf(wire.CodeBadRequest, "this node does not take commands")
		}
		out, err := n.cfg.Command(ctx, m.Line)
		if err != nil {
			return &wire.CommandReply{Output: out, Failed: true, Code: wire.CodeFor(err), Outcome: wire.OutcomeOf(err)}, nil
		}
		return &wire.CommandReply{Output: out}, nil
	case *wire.Reward:
		// No deadline of its own: the reward path bounds itself (a few
		// attempts, each call within CallTimeout, a wait behind a busy
		// primary within 10 s), and a context per request showed in the
		// profile of a loaded node.
		var total int64
		var err error
		switch {
		case m.ID.FromClient():
			// The client named its request: a retry of it is answered,
			// not applied twice (Idempotency-Key, rpc --id).
			points := m.NotInt
			if points == "" {
				points = strconv.FormatInt(m.Points, 10)
			}
			total, err = n.store.RewardOnce(ctx, m.Player, points, m.ID)
		case m.NotInt != "":
			total, err = n.store.Reward(ctx, m.Player, m.NotInt)
		default:
			total, err = n.store.RewardInt(ctx, m.Player, m.Points)
		}
		if err != nil {
			return nil, err
		}
		return &wire.RewardReply{Total: total}, nil
	case *wire.Where:
		ctx, cancel := context.WithTimeout(ctx, clientRequestTimeout)
		defer cancel()
		owner, keeper, err := n.store.Where(ctx, m.Player)
		if err != nil {
			return nil, err
		}
		return &wire.WhereReply{Role: n.store.Role(m.Player), Owner: owner, Keeper: keeper}, nil
	}
	return nil, wire.Errorf(wire.CodeBadRequest, "a client may send only commands, rewards and wheres, not %s", m.Kind())
}

// ---- stopping ----

// Leave exits gracefully: hand off every primary and keeper copy, tell the
// cluster, then stop.
func (n *Node) Leave(ctx context.Context) error {
	n.leaving.Store(true)
	r := n.store.Leave(ctx)
	n.emit(replica.Info, "leaving: %s", r)
	err := n.ml.Leave()
	n.Close()
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if r.PrimariesFailed+r.CopiesFailed > 0 {
		return fmt.Errorf("leave: %s", r)
	}
	return nil
}

// Close stops the node at once, handing nothing off (as a crash would,
// except that the name is unregistered politely).
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		n.cancel()
		n.reg.Close()
		n.ml.Shutdown()
		n.tr.Close()
		n.store.Close()
		n.wg.Wait()
		n.eventsMu.Lock()
		n.eventsClosed = true
		close(n.events)
		n.eventsMu.Unlock()
		n.bcast.close()
	})
}

func portsFile(dir, name string) string {
	return filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".ports")
}

func loadPorts(dir, name string) savedPorts {
	var p savedPorts
	if dir == "" {
		return p
	}
	b, err := os.ReadFile(portsFile(dir, name))
	if err == nil {
		_ = json.Unmarshal(b, &p)
	}
	return p
}

func savePorts(dir, name string, p savedPorts) {
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	b, _ := json.Marshal(p)
	_ = os.WriteFile(portsFile(dir, name), b, 0o600)
}

var _ replica.AsyncNetwork = (*Node)(nil)
