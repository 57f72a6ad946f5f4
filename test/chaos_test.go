package test

// TestChaosProcesses: four real node processes, callers in this test
// streaming rewards to every node over client connections (what `appnode
// rpc` uses), and a nemesis that kills (-9) and restarts, or pauses
// (SIGSTOP ... SIGCONT), one node at a time. Every call is recorded; at the
// end every node must agree on every total, the totals must account for
// every acknowledged reward exactly once, and the history must be
// linearizable (porcupine, a counter per player).
//
// APPNODE_CHAOS_SEED=S replays one nemesis schedule (which faults, in which
// order, on which nodes); the processes' timing is not replayed.
// APPNODE_CHAOS_KEEP=DIR keeps, when the test fails, the nodes' logs and
// porcupine's visualization of the history in DIR.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/appnode/appnode/client"
	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/replica/replicatest"
	"github.com/appnode/appnode/wire"
)

const (
	chaosNodes    = 4
	chaosPlayers  = 4
	chaosCallers  = 8                       // half skip paused nodes, as a load balancer with health checks would
	chaosPause    = 2500 * time.Millisecond // how long a paused node stays stopped
	chaosCallWait = 15 * time.Second        // one call, start to answer (bounds a call to a paused node too)
	chaosPace     = 8 * time.Millisecond    // each caller starts at most one call per chaosPace
	chaosKills    = 3
	chaosPauses   = 3
	chaosQuiet    = 300 // rewards acknowledged between a settled cluster and the next fault
)

// chaosOutcome is what one recorded call proved.
type chaosOutcome int

const (
	chaosAcked      chaosOutcome = iota // answered with the new total
	chaosNotApplied                     // failed with an answer that says nothing changed
	chaosUnknown                        // anything else: may or may not have been applied
)

type chaosOp struct {
	client    int
	player    string
	delta     int64
	node      string
	call, ret time.Duration // since the history's start
	outcome   chaosOutcome
	total     int64
	text      string // the failure, as answered
}

type chaosNode struct {
	short, name string
	// The fields below are guarded by chaosCluster.mu.
	proc   *proc
	addr   string // transport address, for client connections
	dead   bool   // killed and not yet restarted
	paused bool
	client *client.Client
}

type chaosCluster struct {
	t     *testing.T
	h     *harness
	self  string // the name the test's client connections announce
	start time.Time

	// Touched by the test's goroutine only.
	players  []string
	where    map[string][2]string // each player's owner and keeper, when last settled
	faults   map[string]int       // how many of each fault
	schedule []string             // the faults, in order, for the log

	mu    sync.Mutex
	nodes []*chaosNode
	ops   []chaosOp
}

func (c *chaosCluster) since() time.Duration { return time.Since(c.start) }

// lookupAddr asks the host's name service for n's transport address, as
// `appnode rpc` does: each incarnation is dialled at the address it
// registered.
func (c *chaosCluster) lookupAddr(name string) string {
	c.t.Helper()
	var addr string
	testenv.Eventually(c.t, settleLimit, "name service knows "+name, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		if addr, err = client.Find(ctx, name, c.h.namesPort); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return addr
}

// client returns n's client connection, dialling it if there is none.
func (c *chaosCluster) client(n *chaosNode) (*client.Client, error) {
	c.mu.Lock()
	if n.client != nil {
		cl := n.client
		c.mu.Unlock()
		return cl, nil
	}
	addr := n.addr
	c.mu.Unlock()
	cl, err := client.DialAddr(context.Background(), n.name, addr, client.Config{Cookie: c.h.cookie(), Self: c.self, DialTimeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if n.client != nil || n.addr != addr || n.dead {
		other := n.client
		c.mu.Unlock()
		cl.Close()
		if other == nil {
			return nil, errors.New("the node changed while dialling")
		}
		return other, nil
	}
	n.client = cl
	c.mu.Unlock()
	return cl, nil
}

// dropClient forgets cl (if it is still n's) and closes it.
func (c *chaosCluster) dropClient(n *chaosNode, cl *client.Client) {
	c.mu.Lock()
	if n.client == cl {
		n.client = nil
	}
	c.mu.Unlock()
	cl.Close()
}

// command runs one console line on n over its client connection.
func (c *chaosCluster) command(n *chaosNode, line string, limit time.Duration) (out string, failed bool, err error) {
	cl, err := c.client(n)
	if err != nil {
		return "", false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cr, err := cl.Command(ctx, line)
	if err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			c.dropClient(n, cl) // the connection is broken: re-dial next time
		}
		return "", false, err
	}
	return cr.Output, cr.Failed, nil
}

// reward runs `reward PLAYER DELTA` on n and records the call. Callers
// with an even number send it as a wire reward instead (client.Reward, as
// the bench and a game server's pooled client do), which a node serves
// without a waiting goroutine when its connection is busy (RewardAsync).
func (c *chaosCluster) reward(client int, n *chaosNode, player string, delta int64) chaosOp {
	op := chaosOp{client: client, player: player, delta: delta, node: n.name}
	cl, err := c.client(n)
	if err != nil {
		// Never sent: nothing to record.
		op.outcome, op.text = chaosNotApplied, "not sent: "+err.Error()
		return op
	}
	ctx, cancel := context.WithTimeout(context.Background(), chaosCallWait)
	defer cancel()
	op.call = c.since()
	if client%2 == 0 {
		c.wireReward(ctx, n, cl, &op)
	} else {
		c.commandReward(ctx, n, cl, &op)
	}
	c.mu.Lock()
	c.ops = append(c.ops, op)
	c.mu.Unlock()
	return op
}

// wireReward sends op's reward as a wire reward and records its answer.
func (c *chaosCluster) wireReward(ctx context.Context, n *chaosNode, cl *client.Client, op *chaosOp) {
	total, err := cl.Reward(ctx, op.player, op.delta)
	op.ret = c.since()
	switch {
	case err == nil:
		op.outcome, op.total = chaosAcked, total
	case wire.OutcomeOf(err) == wire.OutcomeNotApplied:
		op.outcome, op.text = chaosNotApplied, err.Error()
	default:
		op.outcome, op.text = chaosUnknown, "call failed: "+err.Error()
		var we *wire.Error
		if !errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &we) {
			c.dropClient(n, cl)
		}
	}
}

// commandReward runs `reward PLAYER DELTA` for op and records its answer.
func (c *chaosCluster) commandReward(ctx context.Context, n *chaosNode, cl *client.Client, op *chaosOp) {
	cr, err := cl.Command(ctx, fmt.Sprintf("reward %s %d", op.player, op.delta))
	op.ret = c.since()
	switch {
	case err != nil:
		op.outcome, op.text = chaosUnknown, "call failed: "+err.Error()
		if !errors.Is(err, context.DeadlineExceeded) {
			c.dropClient(n, cl)
		}
	case cr.Failed && cr.Outcome == wire.OutcomeNotApplied:
		op.outcome, op.text = chaosNotApplied, cr.Output
	case cr.Failed:
		op.outcome, op.text = chaosUnknown, cr.Output
	default:
		total, perr := strconv.ParseInt(cr.Output, 10, 64)
		if perr != nil {
			c.t.Errorf("reward %s %d at %s succeeded with %q, not a total", op.player, op.delta, n.name, cr.Output)
			op.outcome, op.text = chaosUnknown, cr.Output
		} else {
			op.outcome, op.total = chaosAcked, total
		}
	}
}

// pick chooses the node for a caller's k-th call: round robin over the
// nodes that are not dead (and, for a careful caller, not paused).
func (c *chaosCluster) pick(caller, k int, careful bool) *chaosNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var cands []*chaosNode
	for _, n := range c.nodes {
		if !n.dead && !(careful && n.paused) {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[(caller+k)%len(cands)]
}

func (c *chaosCluster) live() []*chaosNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*chaosNode
	for _, n := range c.nodes {
		if !n.dead && !n.paused {
			out = append(out, n)
		}
	}
	return out
}

var chaosWhereRE = regexp.MustCompile(`^#\{owner => '([^']+)',keeper => '([^']+)'\}$`)

// placement checks that every node of ns answers `where` for every player
// with the same owner and keeper, two distinct nodes of ns, and, with
// members, that every node's `nodes` lists exactly the others. It returns
// each player's owner and keeper.
func (c *chaosCluster) placement(ns []*chaosNode, players []string, members bool) (map[string][2]string, bool, string) {
	in := map[string]bool{}
	for _, n := range ns {
		in[n.name] = true
	}
	if members {
		for _, n := range ns {
			var others []string
			for _, o := range ns {
				if o != n {
					others = append(others, "'"+o.name+"'")
				}
			}
			slices.Sort(others)
			want := "[" + strings.Join(others, ",") + "]"
			out, _, err := c.command(n, "nodes", 5*time.Second)
			if err != nil || out != want {
				return nil, false, fmt.Sprintf("nodes at %s: %q (%v), want %s", n.name, out, err, want)
			}
		}
	}
	where := map[string][2]string{}
	for _, p := range players {
		first := ""
		for _, n := range ns {
			out, _, err := c.command(n, "where "+p, 5*time.Second)
			if err != nil {
				return nil, false, fmt.Sprintf("where %s at %s: %v", p, n.name, err)
			}
			m := chaosWhereRE.FindStringSubmatch(out)
			if m == nil || m[1] == m[2] || !in[m[1]] || !in[m[2]] {
				return nil, false, fmt.Sprintf("where %s at %s: %q, want an owner and a keeper on two distinct live nodes", p, n.name, out)
			}
			if first == "" {
				first = out
				where[p] = [2]string{m[1], m[2]}
			} else if out != first {
				return nil, false, fmt.Sprintf("where %s: %q at %s, but %q elsewhere", p, out, n.name, first)
			}
		}
	}
	return where, true, ""
}

// chaosFault is one fault the nemesis injected.
type chaosFault struct {
	victim     string
	at         time.Duration // SIGKILL or SIGSTOP, since the history's start
	resumed    time.Duration // SIGCONT (pauses)
	owned      []string      // players it owned just before
	kept       []string      // players it kept the copy of just before
	redundancy time.Duration // kills: until every player had two copies on two live nodes
}

func TestChaosProcesses(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("APPNODE_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("APPNODE_CHAOS_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("nemesis seed %d (replay the schedule with APPNODE_CHAOS_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))

	h := newHarness(t)
	chaosKeepLogs(t, h)
	var shorts []string
	for i := 1; i <= chaosNodes; i++ {
		shorts = append(shorts, fmt.Sprintf("app_node%d", i))
	}
	ps := h.startCluster(shorts...)
	c := &chaosCluster{t: t, h: h, self: fmt.Sprintf("chaos-%d@%s", os.Getpid(), h.host), start: time.Now(), faults: map[string]int{}}
	for i, p := range ps {
		c.nodes = append(c.nodes, &chaosNode{short: shorts[i], name: p.name, proc: p, addr: c.lookupAddr(p.name)})
	}
	for i := range chaosPlayers {
		c.players = append(c.players, fmt.Sprintf("chaos%d", i+1))
	}

	stopCallers := c.startCallers(seed)
	// Every player exists, with two copies, before the first fault.
	testenv.Eventually(t, settleLimit, "every player acknowledged once", func() (bool, string) {
		seen := map[string]bool{}
		c.mu.Lock()
		for _, op := range c.ops {
			if op.outcome == chaosAcked {
				seen[op.player] = true
			}
		}
		c.mu.Unlock()
		return len(seen) == len(c.players), fmt.Sprintf("acknowledged: %v", seen)
	})
	c.settle("the cluster settles before the first fault")

	// The nemesis: one fault at a time, each followed by a settled cluster.
	kinds := slices.Repeat([]string{"kill"}, chaosKills)
	kinds = append(kinds, slices.Repeat([]string{"pause"}, chaosPauses)...)
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	var kills, pauses []chaosFault
	for _, kind := range kinds {
		c.waitQuiet()
		switch kind {
		case "kill":
			kills = append(kills, c.killOne(rng))
		case "pause":
			pauses = append(pauses, c.pauseOne(rng))
		}
	}
	stopCallers()
	end := c.since()

	final := c.finalTotals()
	c.checkPrimaries()
	c.mu.Lock()
	ops := slices.Clone(c.ops)
	c.mu.Unlock()
	chaosAccount(t, ops, final, c.players)
	t.Logf("%d calls in %v; faults: %v; schedule: %s", len(ops), end.Round(time.Millisecond), c.faults, strings.Join(c.schedule, "; "))
	chaosMeasure(t, ops, kills, pauses, c.players)
	chaosLinearizable(t, ops)
}

// startCallers starts chaosCallers callers streaming rewards of random
// players to every node, and returns the function that stops them. They
// stop when the test ends too, before its processes are killed.
func (c *chaosCluster) startCallers(seed uint64) (stop func()) {
	done := make(chan struct{})
	var stopOnce sync.Once
	var callers sync.WaitGroup
	closeClients := func() {
		c.mu.Lock()
		var open []*client.Client
		for _, n := range c.nodes {
			if n.client != nil {
				open = append(open, n.client)
				n.client = nil
			}
		}
		c.mu.Unlock()
		for _, cl := range open {
			cl.Close()
		}
	}
	// Before the processes are killed (this cleanup runs first): closing
	// the connections ends the callers' calls at once, then they stop.
	c.t.Cleanup(func() {
		stopOnce.Do(func() { close(done) })
		closeClients()
		callers.Wait()
		closeClients() // those dialled meanwhile
	})
	for i := range chaosCallers {
		crng := rand.New(rand.NewPCG(seed+uint64(i)+1, 11))
		careful := i%2 == 1
		callers.Go(func() {
			// Pacing, not synchronisation: at most one call started per
			// chaosPace, so that the test leaves the machine's other
			// tests some room; each call is still awaited.
			pace := time.NewTicker(chaosPace)
			defer pace.Stop()
			for k := 0; ; k++ {
				select {
				case <-done:
					return
				case <-pace.C:
				}
				if n := c.pick(i, k, careful); n != nil {
					c.reward(i, n, c.players[crng.IntN(len(c.players))], 1)
				}
			}
		})
	}
	return func() {
		stopOnce.Do(func() { close(done) })
		callers.Wait()
	}
}

// settle waits until the live nodes list each other and agree on every
// player's placement, records it, and returns how long that took.
func (c *chaosCluster) settle(what string) time.Duration {
	c.t.Helper()
	return testenv.Eventually(c.t, settleLimit, what, func() (bool, string) {
		w, ok, detail := c.placement(c.live(), c.players, true)
		if ok {
			c.where = w
		}
		return ok, detail
	})
}

// holds lists the players whose owner (role 0) or keeper (role 1) was n
// when the cluster last settled.
func (c *chaosCluster) holds(n *chaosNode, role int) []string {
	var out []string
	for _, p := range c.players {
		if c.where[p][role] == n.name {
			out = append(out, p)
		}
	}
	return out
}

// waitQuiet lets the settled cluster serve chaosQuiet rewards before the
// next fault.
func (c *chaosCluster) waitQuiet() {
	c.mu.Lock()
	from := len(c.ops)
	c.mu.Unlock()
	testenv.Eventually(c.t, settleLimit, "rewards flow between faults", func() (bool, string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		acks := 0
		for _, op := range c.ops[from:] {
			if op.outcome == chaosAcked {
				acks++
			}
		}
		return acks >= chaosQuiet, fmt.Sprintf("%d rewards acknowledged since the cluster settled", acks)
	})
}

// killOne kills (-9) a node, preferring one that owns players (to measure
// their failover), waits until every player has two live copies again,
// then restarts it under the same name and connects it again.
func (c *chaosCluster) killOne(rng *rand.Rand) chaosFault {
	t := c.t
	cands := slices.DeleteFunc(slices.Clone(c.nodes), func(n *chaosNode) bool { return len(c.holds(n, 0)) == 0 })
	if len(cands) == 0 {
		cands = c.nodes
	}
	victim := cands[rng.IntN(len(cands))]
	k := chaosFault{victim: victim.name, owned: c.holds(victim, 0)}
	c.mu.Lock()
	victim.dead = true
	cl := victim.client
	victim.client = nil
	c.mu.Unlock()
	killedAt := victim.proc.kill9()
	k.at = killedAt.Sub(c.start)
	if cl != nil {
		cl.Close()
	}
	testenv.Eventually(t, settleLimit, "two copies of every player on live nodes after kill -9 of "+victim.name, func() (bool, string) {
		_, ok, detail := c.placement(c.live(), c.players, false)
		return ok, detail
	})
	k.redundancy = time.Since(killedAt) // up to the end of the poll that saw it
	c.schedule = append(c.schedule, fmt.Sprintf("kill %s at %v (owned %v)", victim.short, k.at.Round(time.Millisecond), k.owned))

	// Restart it under the same name and connect it again.
	p := c.h.start(victim.short)
	p.waitUp()
	addr := c.lookupAddr(victim.name)
	var other *chaosNode
	for _, n := range c.live() {
		if n != victim {
			other = n
			break
		}
	}
	p.expect("connect "+other.name, "true")
	c.mu.Lock()
	victim.proc, victim.addr, victim.dead = p, addr, false
	c.mu.Unlock()
	c.faults["kill -9"]++
	c.faults["restart"]++
	c.settle(victim.name + " restarted and rejoined")
	return k
}

// pauseOne stops a node (SIGSTOP) for chaosPause, preferring one that
// keeps copies (its owners must re-keep while it is stopped, and it comes
// back without them), resumes it and waits until it has rejoined.
func (c *chaosCluster) pauseOne(rng *rand.Rand) chaosFault {
	cands := slices.DeleteFunc(slices.Clone(c.nodes), func(n *chaosNode) bool { return len(c.holds(n, 1)) == 0 })
	if len(cands) == 0 {
		cands = c.nodes
	}
	victim := cands[rng.IntN(len(cands))]
	owned, kept := c.holds(victim, 0), c.holds(victim, 1)
	p := victim.proc
	c.mu.Lock()
	victim.paused = true
	c.mu.Unlock()
	c.t.Cleanup(func() {
		if !p.Exited() {
			_ = p.Signal(syscall.SIGCONT) // the harness then kills it
		}
	})
	p.signal(syscall.SIGSTOP)
	stoppedAt := c.since()
	time.Sleep(chaosPause) // the fault itself: the node stays stopped this long
	p.signal(syscall.SIGCONT)
	f := chaosFault{victim: victim.name, at: stoppedAt, resumed: c.since(), owned: owned, kept: kept}
	c.mu.Lock()
	victim.paused = false
	c.mu.Unlock()
	c.faults["pause"]++
	c.schedule = append(c.schedule, fmt.Sprintf("pause %s at %v for %v (owned %v, kept %v)", victim.short, stoppedAt.Round(time.Millisecond), chaosPause, owned, kept))
	d := c.settle(victim.name + " resumed and rejoined")
	c.t.Logf("%s rejoined (all four list each other, one placement for every player) %v after SIGCONT", victim.name, d.Round(time.Millisecond))
	return f
}

// finalTotals reads every player's total at every node, with a reward of 0
// (recorded too), and checks that they agree.
func (c *chaosCluster) finalTotals() map[string]int64 {
	t := c.t
	final := map[string]int64{}
	for _, p := range c.players {
		for j, n := range c.nodes {
			var op chaosOp
			testenv.Eventually(t, settleLimit, "reward "+p+" 0 at "+n.name, func() (bool, string) {
				op = c.reward(100+j, n, p, 0)
				return op.outcome == chaosAcked, op.text
			})
			if j == 0 {
				final[p] = op.total
			} else if op.total != final[p] {
				t.Errorf("%s: %s answers %d, %s answered %d", p, n.name, op.total, c.nodes[0].name, final[p])
			}
		}
	}
	return final
}

// checkPrimaries checks that every player has exactly one primary, and
// that no node exited on its own.
func (c *chaosCluster) checkPrimaries() {
	t := c.t
	primaries := map[string][]string{}
	for _, n := range c.nodes {
		out, failed, err := c.command(n, "local_players", 5*time.Second)
		if err != nil || failed {
			t.Fatalf("local_players at %s: %q %v", n.name, out, err)
		}
		for _, p := range c.players {
			if strings.Contains(out, `"`+p+`"`) {
				primaries[p] = append(primaries[p], n.name)
			}
		}
	}
	for _, p := range c.players {
		if len(primaries[p]) != 1 {
			t.Errorf("%s has a primary on %v, want exactly one node", p, primaries[p])
		}
	}
	for _, n := range c.nodes {
		if n.proc.Exited() {
			t.Errorf("%s exited on its own: %v", n.name, n.proc.Err())
		}
	}
}

// chaosAccount checks that every acknowledged reward is in the final
// totals exactly once, and logs how the calls ended.
func chaosAccount(t *testing.T, ops []chaosOp, final map[string]int64, players []string) {
	count := map[chaosOutcome]int{}
	acked, unknown := map[string]int64{}, map[string]int64{}
	texts := map[string]int{}
	for _, op := range ops {
		count[op.outcome]++
		switch op.outcome {
		case chaosAcked:
			acked[op.player] += op.delta
		case chaosUnknown:
			unknown[op.player] += op.delta
		}
		if op.outcome != chaosAcked {
			texts[chaosShape(op.text)]++
		}
	}
	chaosWentBack(t, ops)
	for _, p := range players {
		if final[p] < acked[p] || final[p] > acked[p]+unknown[p] {
			t.Errorf("%s: final total %d, but %d rewards of 1 were acknowledged and %d had an unknown outcome: want %d <= total <= %d",
				p, final[p], acked[p], unknown[p], acked[p], acked[p]+unknown[p])
		}
	}
	t.Logf("%d acknowledged, %d failed with nothing applied, %d unknown; final totals %v (acknowledged %v, unknown %v)",
		count[chaosAcked], count[chaosNotApplied], count[chaosUnknown], final, acked, unknown)
	var shapes []string
	for s, n := range texts {
		shapes = append(shapes, fmt.Sprintf("%dx %s", n, s))
	}
	sort.Strings(shapes)
	t.Logf("failed calls, by answer:\n  %s", strings.Join(shapes, "\n  "))
}

// chaosKeepDir is where a failed run leaves its evidence, from
// APPNODE_CHAOS_KEEP; "" keeps nothing.
func chaosKeepDir(t *testing.T) string {
	dir := os.Getenv("APPNODE_CHAOS_KEEP")
	if dir == "" {
		return ""
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Logf("APPNODE_CHAOS_KEEP: %v", err)
		return ""
	}
	return dir
}

// chaosKeepLogs copies the nodes' logs out of the test's state directory
// when the test fails, once every process has ended (this cleanup runs
// after those of the processes started later).
func chaosKeepLogs(t *testing.T, h *harness) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := chaosKeepDir(t)
		if dir == "" {
			t.Logf("set APPNODE_CHAOS_KEEP=DIR to keep the nodes' whole logs and a visualization of the history")
			return
		}
		logs, _ := filepath.Glob(filepath.Join(h.stateDir, "*.log"))
		for _, l := range logs {
			if b, err := os.ReadFile(l); err == nil {
				_ = os.WriteFile(filepath.Join(dir, filepath.Base(l)), b, 0o600)
			}
		}
		t.Logf("node logs kept in %s", dir)
	})
}

// chaosWentBack logs, for each player, the first acknowledged total that
// is not above one acknowledged before that call was made: a reward lost
// or a stale answer, in the words of the nodes that gave them.
func chaosWentBack(t *testing.T, ops []chaosOp) {
	byPlayer := map[string][]chaosOp{}
	for _, op := range ops {
		if op.outcome == chaosAcked {
			byPlayer[op.player] = append(byPlayer[op.player], op)
		}
	}
	for p, acks := range byPlayer {
		byRet := slices.Clone(acks)
		sort.Slice(byRet, func(i, j int) bool { return byRet[i].ret < byRet[j].ret })
		sort.Slice(acks, func(i, j int) bool { return acks[i].call < acks[j].call })
		var best chaosOp // the highest total among calls returned so far
		r := 0
		for _, op := range acks {
			for ; r < len(byRet) && byRet[r].ret < op.call; r++ {
				if byRet[r].total > best.total {
					best = byRet[r]
				}
			}
			if op.delta > 0 && op.total <= best.total {
				t.Errorf("%s went back: reward %d at %s (called at %v, answered at %v) answered %d, but reward %d at %s had answered %d at %v, before that call",
					p, op.delta, op.node, op.call.Round(time.Millisecond), op.ret.Round(time.Millisecond), op.total, best.delta, best.node, best.total, best.ret.Round(time.Millisecond))
				break
			}
		}
	}
}

// chaosShape shortens an answer to its kind: node names, numbers and
// player names blurred, so that equal kinds count together.
func chaosShape(s string) string {
	s = regexp.MustCompile(`app_node\d@\S+?\b`).ReplaceAllString(s, "NODE")
	s = regexp.MustCompile(`chaos\d+`).ReplaceAllString(s, "P")
	s = regexp.MustCompile(`\d+`).ReplaceAllString(s, "N")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// chaosMeasure logs the longest stall any player saw; for each kill, the
// time to the first reward served for a player the killed node owned, until
// all of them were served, and until redundancy was back; for each pause,
// when the paused owner's players were served again.
func chaosMeasure(t *testing.T, ops []chaosOp, kills, pauses []chaosFault, players []string) {
	byPlayer := map[string][]chaosOp{}
	for _, op := range ops {
		if op.outcome == chaosAcked && op.delta != 0 {
			byPlayer[op.player] = append(byPlayer[op.player], op)
		}
	}
	var worst, worstAt time.Duration
	worstPlayer := ""
	for _, p := range players {
		acks := byPlayer[p]
		sort.Slice(acks, func(i, j int) bool { return acks[i].ret < acks[j].ret })
		for i := 1; i < len(acks); i++ {
			if d := acks[i].ret - acks[i-1].ret; d > worst {
				worst, worstAt, worstPlayer = d, acks[i-1].ret, p
			}
		}
	}
	t.Logf("longest stall: %v between successive acknowledged rewards of %s, from %v on", worst.Round(time.Millisecond), worstPlayer, worstAt.Round(time.Millisecond))

	var firsts, alls, reds []time.Duration
	for _, k := range kills {
		reds = append(reds, k.redundancy)
		if len(k.owned) == 0 {
			t.Logf("kill -9 of %s (owned no player): two live copies of every player again after %v", k.victim, k.redundancy.Round(time.Millisecond))
			continue
		}
		first, all := chaosServed(byPlayer, k, k.owned)
		if first >= 0 {
			firsts = append(firsts, first)
		}
		if all >= 0 {
			alls = append(alls, all)
		}
		t.Logf("kill -9 of %s (owned %v): first of them served %v after the kill, all of them %v; two live copies of every player after %v",
			k.victim, k.owned, first.Round(time.Millisecond), all.Round(time.Millisecond), k.redundancy.Round(time.Millisecond))
	}
	if len(firsts) > 0 {
		t.Logf("kill -9 of an owner to its first player served: median %v of %v", median(firsts).Round(time.Millisecond), roundAll(firsts))
	}
	if len(alls) > 0 {
		t.Logf("kill -9 of an owner to all its players served: median %v of %v", median(alls).Round(time.Millisecond), roundAll(alls))
	}
	if len(reds) > 0 {
		t.Logf("kill -9 to two live copies of every player: median %v of %v", median(reds).Round(time.Millisecond), roundAll(reds))
	}
	chaosLogPauses(t, byPlayer, pauses)
}

// chaosLogPauses logs, for each pause, when the paused node's players were
// served again.
func chaosLogPauses(t *testing.T, byPlayer map[string][]chaosOp, pauses []chaosFault) {
	for _, f := range pauses {
		line := fmt.Sprintf("pause of %s for %v:", f.victim, (f.resumed - f.at).Round(time.Millisecond))
		for _, role := range []struct {
			what    string
			players []string
		}{{"owned", f.owned}, {"kept", f.kept}} {
			if len(role.players) == 0 {
				continue
			}
			first, all := chaosServed(byPlayer, f, role.players)
			line += fmt.Sprintf(" the players it %s %v were served again from %v after SIGSTOP, all of them by %v;",
				role.what, role.players, first.Round(time.Millisecond), all.Round(time.Millisecond))
		}
		t.Log(line)
	}
}

// chaosServed returns, for players, how long after f.at the first of them,
// and the last of them, was served by a call made after f.at (-1: not
// every one was). byPlayer holds each player's acknowledged calls, sorted
// by return.
func chaosServed(byPlayer map[string][]chaosOp, f chaosFault, players []string) (first, all time.Duration) {
	first, all = -1, 0
	for _, p := range players {
		d := time.Duration(-1)
		for _, op := range byPlayer[p] { // sorted by return
			if op.call >= f.at {
				d = op.ret - f.at
				break
			}
		}
		if d < 0 {
			all = -1
			continue
		}
		if first < 0 || d < first {
			first = d
		}
		if all >= 0 && d > all {
			all = d
		}
	}
	return first, all
}

type chaosIn struct {
	Player string
	Delta  int64
}

type chaosOut struct {
	Total   int64
	Unknown bool
}

// chaosState is a player's total, and how many rewards whose outcome is
// unknown have been called and may still take effect.
type chaosState struct {
	Total, Maybe int64
}

// chaosModel is a counter per player whose reward returns the new total.
//
// A reward of unknown outcome may take effect at any moment after it was
// called, or never, as if it never returned. Given to porcupine as an
// operation that never returns, each one multiplies the search (the
// histories here, with a dozen such calls per player, took minutes). It is
// given instead in an equivalent form: an instantaneous operation at its
// call that makes one more increment available (Maybe), and any later
// acknowledged call may consume some of those available increments just
// before its own. The two forms accept the same histories: an unknown
// reward linearized somewhere in the first form can be moved to just
// before the next acknowledged call of that player (nothing observes the
// total in between), which is where the second form consumes it, and the
// second form's placement maps back the same way; one never consumed was
// never applied.
var chaosModel = porcupine.Model{
	Partition: replicatest.ByPlayer(func(in any) string { return in.(chaosIn).Player }),
	Init:      func() any { return chaosState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(chaosState), input.(chaosIn), output.(chaosOut)
		if out.Unknown {
			return true, chaosState{Total: st.Total, Maybe: st.Maybe + in.Delta}
		}
		applied := out.Total - st.Total - in.Delta // unknown rewards that took effect just before
		if applied < 0 || applied > st.Maybe {
			return false, st
		}
		return true, chaosState{Total: out.Total, Maybe: st.Maybe - applied}
	},
	Equal: func(a, b any) bool { return a.(chaosState) == b.(chaosState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(chaosIn), output.(chaosOut)
		if out.Unknown {
			return fmt.Sprintf("reward(%s, %d) -> ? (called here)", in.Player, in.Delta)
		}
		return fmt.Sprintf("reward(%s, %d) -> %d", in.Player, in.Delta, out.Total)
	},
	DescribeState: func(state any) string {
		st := state.(chaosState)
		return fmt.Sprintf("%d (+ up to %d unknown)", st.Total, st.Maybe)
	},
}

// chaosLinearizable checks the history with porcupine: acknowledged calls
// with their total, unknown ones as described at chaosModel; those that
// proved nothing changed are left out.
func chaosLinearizable(t *testing.T, ops []chaosOp) {
	var hist []porcupine.Operation
	for _, op := range ops {
		in := chaosIn{Player: op.player, Delta: op.delta}
		switch op.outcome {
		case chaosAcked:
			hist = append(hist, porcupine.Operation{ClientId: op.client, Input: in, Call: int64(op.call), Output: chaosOut{Total: op.total}, Return: int64(op.ret)})
		case chaosUnknown:
			hist = append(hist, porcupine.Operation{ClientId: op.client, Input: in, Call: int64(op.call), Output: chaosOut{Unknown: true}, Return: int64(op.call) + 1})
		}
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(chaosModel, hist, 30*time.Second)
	t.Logf("porcupine checked %d operations in %v: %s", len(hist), time.Since(start).Round(time.Millisecond), res)
	switch res {
	case porcupine.Illegal:
		if dir := chaosKeepDir(t); dir != "" {
			if f, err := os.Create(filepath.Join(dir, "history.html")); err == nil {
				_ = porcupine.Visualize(chaosModel, info, f)
				f.Close()
				t.Logf("visualization written to %s", f.Name())
			}
		}
		t.Errorf("the history of %d operations is not linearizable", len(hist))
	case porcupine.Unknown:
		t.Errorf("the linearizability check of %d operations did not finish in time (inconclusive)", len(hist))
	}
}
