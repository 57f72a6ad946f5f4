package replica_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster is an in-process cluster of Stores on a MemNetwork. Membership is
// explicit: sync() plays the failure detector, so a test decides when the
// cluster learns of a failure.
type cluster struct {
	t     *testing.T
	net   *replica.MemNetwork
	mu    sync.Mutex
	nodes map[string]*tnode
	dead  map[string]wire.NodeID // last incarnation of each killed node
	gone  []*tnode               // every node killed, for their events
	boots atomic.Uint64
	seed  uint64                      // seeds the nodes' random sources (APPNODE_SEED replays it)
	clock replica.Clock               // runs the nodes' timers; nil: the real clock
	disks map[string]*replica.MemDisk // each name's vote on the roster, kept across restarts
	syncs sync.Mutex                  // one membership update at a time, as Serf's event loop
	wg    sync.WaitGroup              // fenced-node resets
	// closing, under mu, stops fence from starting resets once close
	// waits for them (a WaitGroup may not grow while it is waited on).
	closing bool
}

type tnode struct {
	name    string
	store   *replica.Store
	id      atomic.Value // wire.NodeID
	events  chan replica.Event
	fencing sync.Mutex
}

func (n *tnode) ID() wire.NodeID { return n.id.Load().(wire.NodeID) }

func newCluster(t *testing.T, names ...string) *cluster {
	t.Helper()
	return newSeededCluster(t, 1, names...)
}

// newClockedCluster is newCluster whose nodes' timers run on clock.
func newClockedCluster(t *testing.T, clock replica.Clock, names ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, net: replica.NewMemNetwork(), nodes: map[string]*tnode{}, dead: map[string]wire.NodeID{}, seed: 1, clock: clock, disks: map[string]*replica.MemDisk{}}
	for _, name := range names {
		c.start(name)
	}
	c.sync()
	t.Cleanup(c.close)
	if clk, ok := clock.(*replica.ManualClock); ok {
		// Two nodes proposing at once back off on the clock: move it
		// a few milliseconds at a time until they agree, well short of
		// the first tick.
		testenv.WaitFor(t, 10*time.Second, "every node to agree on the roster of the live nodes", func() bool {
			if c.rosterAgreed() {
				return true
			}
			if err := clk.Advance(5*time.Millisecond, time.Second); err != nil {
				t.Fatal(err)
			}
			return false
		})
		return c
	}
	c.waitRoster()
	return c
}

// waitRemoved waits until the roster of each node of at has removed gone.
func (c *cluster) waitRemoved(gone string, at ...string) {
	c.t.Helper()
	testenv.WaitFor(c.t, 10*time.Second, "the roster to remove "+gone, func() bool {
		for _, n := range at {
			for _, m := range c.node(n).store.Roster().Members {
				if m.Name == gone {
					return false
				}
			}
		}
		return true
	})
}

// waitRoster waits until every live node has the same roster, of every
// live node: the cluster has formed (or re-formed after a change).
func (c *cluster) waitRoster() {
	c.t.Helper()
	testenv.WaitFor(c.t, 10*time.Second, "every node to agree on the roster of the live nodes", c.rosterAgreed)
}

func (c *cluster) rosterAgreed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first *wire.Roster
	for _, n := range c.nodes {
		r := n.store.Roster()
		if len(r.Members) != len(c.nodes) {
			return false
		}
		for _, m := range r.Members {
			if o := c.nodes[m.Name]; o == nil || o.ID() != m {
				return false
			}
		}
		if first != nil && (first.Cluster != r.Cluster || first.Epoch != r.Epoch) {
			return false
		}
		first = &r
	}
	return true
}

// waitDirectories waits until every live node's directory has heard from
// every member: each arbiter may then vouch that a player is new.
func (c *cluster) waitDirectories() {
	c.t.Helper()
	testenv.WaitFor(c.t, 10*time.Second, "every node to have every member's list of players", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, n := range c.nodes {
			if !n.store.DirectoryComplete() {
				return false
			}
		}
		return true
	})
}

// newSeededCluster is newCluster whose nodes draw their random choices
// (backoff jitter) from seed, so that a schedule replays with it.
func newSeededCluster(t *testing.T, seed uint64, names ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, net: replica.NewMemNetwork(), nodes: map[string]*tnode{}, dead: map[string]wire.NodeID{}, seed: seed, disks: map[string]*replica.MemDisk{}}
	for _, name := range names {
		c.start(name)
	}
	c.sync()
	t.Cleanup(c.close)
	c.waitRoster()
	return c
}

func (c *cluster) start(name string) *tnode {
	n := &tnode{name: name, events: make(chan replica.Event, 1024)}
	n.id.Store(wire.NodeID{Name: name, Boot: c.boots.Add(1)})
	var store *replica.Store
	netw := c.net.Attach(name, n.ID,
		func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
			return store.Handle(ctx, from, m)
		},
		func(id wire.NodeID) bool { return store.Fenced(id) },
		func() { c.fence(n, n.ID()) })
	c.net.ServeAsync(name, func(from wire.NodeID, m wire.Msg, reply func(wire.Msg, error)) bool {
		return store.HandleAsync(from, m, reply)
	})
	cfg := replica.DefaultConfig(n.ID(), netw)
	c.mu.Lock()
	if c.disks[name] == nil {
		c.disks[name] = &replica.MemDisk{}
	}
	cfg.Disk = c.disks[name]
	c.mu.Unlock()
	cfg.OnDeclaredDead = func(dead wire.NodeID) { c.fence(n, dead) }
	cfg.CallTimeout = 300 * time.Millisecond
	if c.clock != nil {
		cfg.Clock = c.clock
	}
	cfg.OnEvent = func(e replica.Event) {
		select {
		case n.events <- e:
		default:
		}
	}
	// The jitter of each node's backoffs replays with the schedule's seed.
	cfg.Rand = rand.NewPCG(c.seed, uint64(len(c.nodes))<<32|c.boots.Load())
	var err error
	if store, err = replica.New(cfg); err != nil {
		c.t.Fatal(err)
	}
	n.store = store
	c.mu.Lock()
	c.nodes[name] = n
	c.mu.Unlock()
	return n
}

// fence does what the node does when a peer says it was declared failed:
// drop everything and come back as a new incarnation.
func (c *cluster) fence(n *tnode, dead wire.NodeID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		n.fencing.Lock()
		defer n.fencing.Unlock()
		if n.ID() != dead {
			return // already rejoined under a new boot
		}
		id := wire.NodeID{Name: n.name, Boot: c.boots.Add(1)}
		n.id.Store(id)
		n.store.Reset(id)
		c.sync()
	}()
}

func (c *cluster) node(name string) *tnode {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[name]
	if n == nil {
		c.t.Fatalf("no live node %s", name)
	}
	return n
}

// sync gives every live node the full live membership.
func (c *cluster) sync() {
	c.syncs.Lock()
	defer c.syncs.Unlock()
	c.mu.Lock()
	var ids []wire.NodeID
	var stores []*replica.Store
	for _, n := range c.nodes {
		ids = append(ids, n.ID())
		stores = append(stores, n.store)
	}
	c.mu.Unlock()
	for _, s := range stores {
		s.SetMembers(ids)
	}
}

// view gives one node a membership of its own (a partition side).
func (c *cluster) view(name string, members ...string) {
	var ids []wire.NodeID
	for _, m := range members {
		ids = append(ids, c.node(m).ID())
	}
	c.node(name).store.SetMembers(ids)
}

// kill is kill -9: the process and its memory are gone; the others get the
// hint of their links breaking, and learn it for sure at the next sync or
// through a refused connection.
func (c *cluster) kill(name string) {
	for _, o := range c.killQuietly(name) {
		o.store.LinkDown(c.lastID(name))
	}
}

func (c *cluster) lastID(name string) wire.NodeID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead[name]
}

// killQuietly is a kill whose peers get no hint (no link to them broke).
func (c *cluster) killQuietly(name string) []*tnode {
	n := c.node(name)
	c.net.Kill(name)
	c.mu.Lock()
	delete(c.nodes, name)
	c.dead[name] = n.ID()
	c.gone = append(c.gone, n)
	var rest []*tnode
	for _, o := range c.nodes {
		rest = append(rest, o)
	}
	c.mu.Unlock()
	n.store.Close()
	if err := n.store.CheckCopyOwners(); err != nil {
		c.t.Error(err)
	}
	return rest
}

func (c *cluster) close() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.wg.Wait()
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = map[string]*tnode{}
	c.mu.Unlock()
	for _, n := range nodes {
		n.store.Close()
		if err := n.store.CheckCopyOwners(); err != nil {
			c.t.Error(err)
		}
	}
}

func (c *cluster) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.nodes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (c *cluster) reward(at, player string, points any) (int64, error) {
	return c.node(at).store.Reward(ctxT(c.t), player, fmt.Sprint(points))
}

func (c *cluster) mustReward(at, player string, points any, want int64) {
	c.t.Helper()
	got, err := c.reward(at, player, points)
	if err != nil {
		c.t.Fatalf("reward %s %v at %s: %v", player, points, at, err)
	}
	if got != want {
		c.t.Fatalf("reward %s %v at %s = %d, want %d", player, points, at, got, want)
	}
}

// where returns owner and keeper names of player as seen from node at.
func (c *cluster) where(at, player string) (string, string) {
	c.t.Helper()
	o, k, err := c.node(at).store.Where(ctxT(c.t), player)
	if err != nil {
		c.t.Fatalf("where %s at %s: %v", player, at, err)
	}
	return o.Name, k.Name
}

// holders lists the nodes holding player as primary and as keeper.
func (c *cluster) holders(player string) (owners, keepers []string) {
	for _, name := range c.names() {
		switch c.node(name).store.Role(player) {
		case wire.RolePrimary:
			owners = append(owners, name)
		case wire.RoleKeeper:
			keepers = append(keepers, name)
		}
	}
	return owners, keepers
}

// amongFirstTwo says whether node is first or second in player's placement
// order among the live nodes.
func (c *cluster) amongFirstTwo(player, node string) bool {
	order := replica.PlacementOrder(player, c.names())
	return slices.Contains(order[:min(2, len(order))], node)
}
