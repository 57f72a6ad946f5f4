package node_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/membership"
	"github.com/appnode/appnode/node"
	"github.com/appnode/appnode/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCookie is the cookie of the test clusters' nodes.
var testCookie = func() cookie.Cookie {
	c, err := cookie.New("node package test cookie")
	if err != nil {
		panic(err)
	}
	return c
}()

// cluster runs real nodes in this process: real Serf, real TCP, a name
// service on a private port, all on 127.0.0.1.
type cluster struct {
	t         *testing.T
	namesPort int
	stateDir  string
	mu        sync.Mutex
	nodes     map[string]*node.Node
	gossip    map[string]*membership.FaultTransport
	cut       map[[2]string]bool // full node names, both directions listed
	configure func(short string, cfg *node.Config)
	events    []string
}

func newCluster(t *testing.T, names ...string) *cluster {
	return newClusterWith(t, nil, names...)
}

// newClusterWith is newCluster with configure applied to each node's
// Config before it starts.
func newClusterWith(t *testing.T, configure func(short string, cfg *node.Config), names ...string) *cluster {
	c := &cluster{t: t, namesPort: testenv.FreePort(t), stateDir: t.TempDir(), nodes: map[string]*node.Node{},
		gossip: map[string]*membership.FaultTransport{}, cut: map[[2]string]bool{}, configure: configure}
	t.Cleanup(c.closeAll)
	for _, name := range names {
		c.start(name)
	}
	for _, name := range names[1:] {
		c.connect(names[0], name)
	}
	testenv.WaitFor(t, 10*time.Second, "every node to see every other", func() bool {
		for _, name := range names {
			if len(c.n(name).Nodes()) != len(names)-1 {
				return false
			}
		}
		return true
	})
	return c
}

func (c *cluster) start(short string) *node.Node {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gt, err := membership.NewFaultTransport("127.0.0.1")
	if err != nil {
		c.t.Fatal(err)
	}
	full := short + "@testhost"
	cfg := node.DefaultConfig(full, testCookie)
	cfg.NamesPort = c.namesPort
	cfg.StateDir = c.stateDir
	cfg.CallTimeout, cfg.LinkTimeout = time.Second, time.Second
	cfg.MemberlistTransport = gt
	cfg.Block = func(peer string) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.cut[[2]string{full, peer}]
	}
	if c.configure != nil {
		c.configure(short, &cfg)
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", short, err)
	}
	c.mu.Lock()
	c.nodes[short] = n
	c.gossip[short] = gt
	c.mu.Unlock()
	// Keep each node's events; they are shown if the test fails.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range n.Events() {
			c.mu.Lock()
			c.events = append(c.events, fmt.Sprintf("%s %s [%s] %s", e.Time.Format("15:04:05.000000"), short, e.Level, e.Text))
			c.mu.Unlock()
		}
	}()
	c.t.Cleanup(func() {
		n.Close()
		<-done
		if c.t.Failed() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, e := range c.events {
				c.t.Log(e)
			}
			c.events = nil
		}
	})
	return n
}

// partition cuts every link, gossip and transport, between the groups.
func (c *cluster) partition(a, b []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			nx, ny := c.nodes[x], c.nodes[y]
			c.cut[[2]string{nx.Name(), ny.Name()}] = true
			c.cut[[2]string{ny.Name(), nx.Name()}] = true
			c.gossip[x].Block(fmt.Sprintf("127.0.0.1:%d", ny.GossipPort()))
			c.gossip[y].Block(fmt.Sprintf("127.0.0.1:%d", nx.GossipPort()))
		}
	}
}

func (c *cluster) heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = map[[2]string]bool{}
	for _, g := range c.gossip {
		g.UnblockAll()
	}
}

func (c *cluster) n(short string) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[short]
	if n == nil {
		c.t.Fatalf("no node %s", short)
	}
	return n
}

func (c *cluster) connect(from, to string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.n(from).Connect(ctx, to+"@testhost"); err != nil {
		c.t.Fatalf("connect %s -> %s: %v", from, to, err)
	}
}

// kill stops a node abruptly: its sockets close, it hands nothing off.
func (c *cluster) kill(short string) {
	n := c.n(short)
	c.mu.Lock()
	delete(c.nodes, short)
	c.mu.Unlock()
	n.Close()
}

func (c *cluster) closeAll() {
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = map[string]*node.Node{}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Close() }()
	}
	wg.Wait()
}

func (c *cluster) reward(at, player string, points any) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.n(at).Reward(ctx, player, fmt.Sprint(points))
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

func TestConnectByName(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	testenv.WaitFor(t, 5*time.Second, "everyone to see everyone", func() bool {
		for _, n := range []string{"a", "b", "c"} {
			if len(c.n(n).Nodes()) != 2 {
				return false
			}
		}
		return true
	})
	if got := c.n("b").Nodes(); !reflect.DeepEqual(got, []string{"a@testhost", "c@testhost"}) {
		t.Fatalf("nodes at b = %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.n("a").Connect(ctx, "nosuch@testhost")
	if err == nil || !strings.Contains(err.Error(), "nosuch@testhost") {
		t.Fatalf("connect to a missing node: %v", err)
	}
}

// The README's walkthrough over real sockets and Serf: rewards at any node
// reach player1's one primary; a points value that is not an integer
// crashes the primary, which restarts from its keeper with nothing lost;
// after a kill -9 of the owner the next reward at a survivor finds the
// total the keeper held; the killed node restarts under its name and
// rejoins.
func TestWalkthroughOverTheWire(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "player1", 5, 5)
	_, err := c.reward("n1", "player1", "a")
	if code, _ := wire.CodeOf(err); code != wire.CodeCrashed {
		t.Fatalf("reward a = %v, want a crash", err)
	}
	c.mustReward("n1", "player1", 2, 7)
	if got := c.n("n1").LocalPlayers(); !reflect.DeepEqual(got, []string{"player1"}) {
		t.Fatalf("local_players at n1 = %v", got)
	}
	c.mustReward("n2", "player1", 3, 10)
	c.mustReward("n3", "player1", 0, 10)

	killedAt := time.Now()
	c.kill("n1")
	c.mustReward("n2", "player1", 1, 11)
	t.Logf("first reward after the owner was killed answered %v after the kill", time.Since(killedAt))

	// Restart under the same name: it starts, registers and rejoins.
	c.start("n1")
	c.connect("n1", "n2")
	testenv.WaitFor(t, 5*time.Second, "n1 to see both peers", func() bool { return len(c.n("n1").Nodes()) == 2 })
	c.mustReward("n1", "player1", 1, 12)
	c.mustReward("n3", "player1", 1, 13)
}

// Redundancy comes back after a kill without anyone asking for the player.
func TestTwoCopiesAfterKill(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	for i := 0; i < 20; i++ {
		c.mustReward("n1", fmt.Sprintf("p%d", i), i, int64(i))
	}
	c.kill("n1")
	testenv.WaitFor(t, 10*time.Second, "every player to have a primary and a keeper on n2 and n3", func() bool {
		p2, k2 := c.n("n2").Store().Counts()
		p3, k3 := c.n("n3").Store().Counts()
		return p2+p3 == 20 && k2+k3 == 20
	})
	for i := 0; i < 20; i++ {
		c.mustReward("n3", fmt.Sprintf("p%d", i), 1, int64(i+1))
	}
}

// A graceful exit hands everything off first.
func TestLeaveHandsOff(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	for i := 0; i < 10; i++ {
		c.mustReward("n2", fmt.Sprintf("p%d", i), i, int64(i))
	}
	n2 := c.n("n2")
	c.mu.Lock()
	delete(c.nodes, "n2")
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n2.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	// Right after the leave, before any failure detection could matter,
	// both survivors hold every player between them, twice.
	p1, k1 := c.n("n1").Store().Counts()
	p3, k3 := c.n("n3").Store().Counts()
	if p1+p3 != 10 || k1+k3 != 10 {
		t.Fatalf("after leave: primaries %d+%d, copies %d+%d; want 10 and 10", p1, p3, k1, k3)
	}
	for i := 0; i < 10; i++ {
		c.mustReward("n1", fmt.Sprintf("p%d", i), 1, int64(i+1))
	}
}

// A node on loopback asked to connect to another host says what to do
// instead of timing out.
func TestConnectAcrossHostsFromLoopbackSaysWhatToDo(t *testing.T) {
	c := newCluster(t, "n1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.n("n1").Connect(ctx, "n2@10.1.2.3")
	if err == nil || !strings.Contains(err.Error(), "--bind") {
		t.Fatalf("connect to another host from loopback: %v; want advice to use --bind", err)
	}
}
