package node

import (
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

// Config describes one node. Only Name and Cookie are required.
type Config struct {
	// Name is "app_node1" or "app_node1@host"; HOST defaults to the short
	// host name, as `erl -sname` does.
	Name string
	// Cookie is the cluster's shared secret (required). Gossip is
	// encrypted with a key derived from it, and every transport
	// connection proves knowledge of it both ways: nodes with different
	// cookies never form a cluster.
	Cookie cookie.Cookie
	// BindAddr is the address every listener binds and advertises.
	// 127.0.0.1 by default: other hosts reach a node only when it binds an
	// address they can route to.
	BindAddr string
	// GossipPort and TransportPort: 0 reuses the ports this name had last
	// time (from StateDir), else picks free ones.
	GossipPort, TransportPort int
	// NamesPort is the per-host name service's port (names.DefaultPort).
	NamesPort int
	// SpawnNames, if set, starts the host's name service as a process of
	// its own when none answers (see names.Config.Spawn); if nil, the
	// nodes of a host serve it among themselves.
	SpawnNames func() error
	// StateDir keeps the ports of each name across restarts. "" keeps none.
	StateDir string
	// Profile selects failure detection timers.
	Profile membership.Profile
	// CallTimeout bounds each node-to-node request (default 2 s).
	CallTimeout time.Duration
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

// Node is one running appnode process.
type Node struct {
	cfg    Config
	name   string
	self   atomic.Value // wire.NodeID
	store  *replica.Store
	tr     *transport.Transport
	ml     *membership.Membership
	reg    *names.Registration
	events chan Event
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

// FullName turns "app_node1" into "app_node1@<short host name>".
func FullName(name string) string {
	if strings.Contains(name, "@") {
		return name
	}
	return name + "@" + ShortHostname()
}

// ShortHostname is the host name up to its first dot, as Erlang uses.
func ShortHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		h = h[:i]
	}
	return h
}

// ValidateName checks a node name before anything listens.
func ValidateName(full string) error {
	name, host, ok := strings.Cut(full, "@")
	if !ok || name == "" || host == "" || strings.Contains(host, "@") {
		return fmt.Errorf("node name %q must look like NAME@HOST", full)
	}
	for _, r := range name {
		if !(r == '_' || r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fmt.Errorf("node name %q: use letters, digits, '_', '-' and '.' only", full)
		}
	}
	if len(full) > 200 {
		return fmt.Errorf("node name %q is too long", full)
	}
	return nil
}

type savedPorts struct {
	Gossip    int `json:"gossip"`
	Transport int `json:"transport"`
}

// Start brings a node up: store, transport, membership, name registration.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	full := FullName(cfg.Name)
	if err := ValidateName(full); err != nil {
		return nil, err
	}
	if cfg.Cookie.IsZero() {
		return nil, fmt.Errorf("start %s: no cookie: nodes join only a cluster whose cookie they know", full)
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = "127.0.0.1"
	}
	if cfg.NamesPort == 0 {
		cfg.NamesPort = names.DefaultPort
	}
	saved := loadPorts(cfg.StateDir, full)
	if cfg.GossipPort == 0 {
		cfg.GossipPort = saved.Gossip
	}
	if cfg.TransportPort == 0 {
		cfg.TransportPort = saved.Transport
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:     cfg,
		name:    full,
		events:  make(chan Event, 256),
		ctx:     nctx,
		cancel:  cancel,
		members: map[string]wire.NodeID{},
		addrs:   map[string]string{},
		gone:    map[string]goneMember{},
	}
	// Boot ids grow with every start (the replica layer relies on that to
	// tell a late report of an old process from a new one).
	n.self.Store(wire.NodeID{Name: full, Boot: uint64(time.Now().UnixNano())})

	n.store = replica.New(replica.Config{
		Self:           n.Self(),
		Net:            n,
		CallTimeout:    cfg.CallTimeout,
		OnEvent:        func(e replica.Event) { n.emit(EventLevel(e.Level), "%s", e.Text) },
		Logf:           cfg.Logf,
		Observer:       cfg.Observer,
		OnDeclaredDead: n.declaredDead,
	})
	var err error
	n.tr, err = listenTransport(n, cfg.TransportPort)
	if err != nil && cfg.TransportPort != 0 && cfg.TransportPort == saved.Transport {
		n.tr, err = listenTransport(n, 0) // the remembered port is taken
	}
	if err != nil {
		n.store.Close()
		cancel()
		return nil, fmt.Errorf("start %s: transport: %w", full, err)
	}
	n.ml, err = n.startMembership(cfg.GossipPort)
	if err != nil && cfg.GossipPort != 0 && cfg.GossipPort == saved.Gossip {
		n.ml, err = n.startMembership(0)
	}
	if err != nil {
		n.tr.Close()
		n.store.Close()
		cancel()
		return nil, fmt.Errorf("start %s: membership: %w", full, err)
	}
	n.reg, err = names.Register(ctx, names.Config{
		Spawn:    cfg.SpawnNames,
		BindAddr: cfg.BindAddr,
		Port:     cfg.NamesPort,
		Entry:    names.Entry{Name: full, GossipPort: n.ml.Port(), TransportPort: n.tr.Port(), Boot: n.Self().Boot, HTTPPort: cfg.HTTPPort},
		Logf:     cfg.Logf,
	})
	if err != nil {
		n.ml.Shutdown()
		n.tr.Close()
		n.store.Close()
		cancel()
		return nil, fmt.Errorf("start %s: %w", full, err)
	}
	savePorts(cfg.StateDir, full, savedPorts{Gossip: n.ml.Port(), Transport: n.tr.Port()})
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

func listenTransport(n *Node, port int) (*transport.Transport, error) {
	return transport.Listen(transport.Config{
		Cookie:         n.cfg.Cookie,
		BindAddr:       n.cfg.BindAddr,
		Port:           port,
		Self:           n.Self,
		Resolve:        n.resolve,
		Handle:         n.handlePeer,
		Inline:         replica.NonBlocking,
		HandleClient:   n.handleClient,
		Fenced:         n.store.Fenced,
		OnFenced:       n.onFenced,
		OnLinkDown:     n.store.LinkDown,
		Block:          n.cfg.Block,
		RequestTimeout: n.cfg.CallTimeout,
		Logf:           n.cfg.Logf,
	})
}

func (n *Node) startMembership(port int) (*membership.Membership, error) {
	return membership.Start(membership.Config{
		Name:      n.name,
		SecretKey: n.cfg.Cookie.GossipKey(),
		BindAddr:  n.cfg.BindAddr,
		Port:      port,
		Tags:      n.tags(),
		Profile:   n.cfg.Profile,
		OnChange:  n.membershipChanged,
		Logf:      n.cfg.Logf,
		Transport: n.cfg.MemberlistTransport,
	})
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
func (n *Node) Events() <-chan Event { return n.events }

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

func (n *Node) emit(level EventLevel, format string, args ...any) {
	e := n.bcast.publish(Event{Time: time.Now(), Level: level, Text: fmt.Sprintf(format, args...)})
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
		n.cfg.Logf("[%s] %s", level, e.Text)
	}
}

// Call implements replica.Network over the transport.
func (n *Node) Call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error) {
	return n.tr.Call(ctx, to, m)
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
			n.emit(LevelInfo, "node %s up", name)
			joined = append(joined, id)
		} else if o.Boot != id.Boot {
			n.emit(LevelWarning, "node %s restarted as a new incarnation; it lost what it held", name)
			joined = append(joined, id)
		}
	}
	for name := range old {
		if _, ok := next[name]; !ok && name != self.Name {
			n.emit(LevelWarning, "node %s down", name)
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
			n.emit(LevelError, "could not announce the new incarnation: %v", err)
		}
		n.emit(LevelWarning, "the cluster had declared this node failed (paused or cut off); rejoined as a new incarnation")
		n.membershipChanged()
	}()
}

func (n *Node) watchSerf() {
	defer n.wg.Done()
	select {
	case <-n.ctx.Done():
	case <-n.ml.ShutdownCh():
		n.emit(LevelError, "cluster membership stopped on its own (name conflict?): this node no longer sees the cluster; restart it")
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
		return errors.New("connect: which node? e.g. connect app_node2@" + ShortHostname())
	}
	if target == n.name {
		return nil
	}
	var gossip, want string
	if strings.Contains(target, "@") {
		if err := ValidateName(target); err != nil {
			return err
		}
		_, host, _ := strings.Cut(target, "@")
		ip, err := n.hostIP(ctx, host)
		if err != nil {
			return fmt.Errorf("cannot connect to %s: %w", target, err)
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
	for {
		if want == "" || n.isMember(want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot connect to %s: joined its gossip address but it never showed up as a member: %w", target, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (n *Node) isMember(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.members[name]
	return ok
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
	n.emit(LevelInfo, "leaving: %s", r)
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
