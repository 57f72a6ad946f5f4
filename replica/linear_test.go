package replica_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/replica/replicatest"
	"github.com/appnode/appnode/wire"
)

// The linearizability check: concurrent clients on every node reward a few
// players while a nemesis kills, restarts, pauses and partitions nodes, and
// makes links lose replies, drop one way and delay; the
// recorded history must be linearizable for a counter per player whose
// reward returns the new total. A call that failed with an error proving
// it was not applied is left out; any other failure counts as maybe
// applied (it never returns, for porcupine).
//
// A third of the rewards are named by their client (RewardOnce, half of
// the attempts through RewardOnceAsync), which sends one again, to any
// node, while its outcome is unknown: the history then holds one
// operation from the first call to the last answer.
//
// APPNODE_SOAK=N runs N schedules instead of the few the normal suite runs;
// APPNODE_SEED=S replays one schedule (as far as the goroutines'
// interleaving allows: the nemesis, the clients, the network's losses and
// the nodes' jitter draw from sources seeded with it).

func TestLinearizableUnderFaults(t *testing.T) {
	schedules := 4
	// A history with many unknown outcomes can take porcupine long; the
	// short run gives it less time (inconclusive then, and counted), the
	// soak more.
	checkFor := 3 * time.Second
	if v := os.Getenv("APPNODE_SOAK"); v != "" {
		checkFor = 10 * time.Second
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("APPNODE_SOAK=%q: %v", v, err)
		}
		schedules = n
	}
	seeds := make([]uint64, schedules)
	for i := range seeds {
		seeds[i] = uint64(time.Now().UnixNano()) + uint64(i)
	}
	if v := os.Getenv("APPNODE_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("APPNODE_SEED=%q: %v", v, err)
		}
		seeds = []uint64{s}
	}
	total, inconclusive, failed := 0, 0, 0
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			defer func() {
				if t.Failed() {
					failed++
				}
			}()
			ops, ok := runSchedule(t, seed, checkFor)
			total += ops
			if !ok {
				inconclusive++
			}
		})
	}
	t.Logf("%d schedules, %d operations, %d failed, %d whose linearizability check timed out", len(seeds), total, failed, inconclusive)
}

// runSchedule runs the schedule of seed and returns how many operations
// it recorded, and false if their check timed out (inconclusive).
func runSchedule(t *testing.T, seed uint64, checkFor time.Duration) (int, bool) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	names := []string{"n1", "n2", "n3", "n4", "n5"}[:3+rng.IntN(3)]
	c := newSeededCluster(t, seed, names...)
	c.net.Seed(seed)
	// Eight players from the start, and eight more that clients start
	// rewarding one at a time as the schedule goes on, so that creations
	// meet the faults too (directory.go): the unknown outcomes that lost
	// replies and one-way links leave are spread thin enough for porcupine
	// to decide.
	players := []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10", "p11", "p12", "p13", "p14", "p15", "p16"}
	h := replicatest.NewHistory()
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()

	var refused refusals
	var clients sync.WaitGroup
	start := time.Now()
	for i := 0; i < 2*len(names); i++ {
		crng := rand.New(rand.NewPCG(seed+uint64(i)+1, 7))
		clients.Add(1)
		go func() {
			defer clients.Done()
			runClient(ctx, c, h, &refused, seed, i, crng, players, start)
		}()
	}

	faults := nemesis(t, c, rng, ctx, players)
	clients.Wait()

	// Heal everything and read every total from every node: they must agree.
	c.net.Heal()
	c.sync()
	checkFinalTotals(t, c, h, seed, players)

	conclusive := true
	if h.Check(t, checkFor) == porcupine.Unknown {
		t.Logf("seed %d: linearizability check timed out (inconclusive)", seed)
		conclusive = false
	}
	if t.Failed() {
		refused.log(t)
		c.logEvents()
		t.Fatalf("seed %d: faults %v; replay with APPNODE_SEED=%d", seed, faults, seed)
	}
	t.Logf("seed %d: %d nodes, ok %d, not applied %d, unknown %d; faults %v",
		seed, len(names), h.OK, h.Failed, h.Unknown, faults)
	if h.OK == 0 {
		t.Fatalf("seed %d: no reward succeeded", seed)
	}
	return h.Len(), conclusive
}

// runClient is client i of a schedule: up to 150 rewards of random
// players at random live nodes, a third of them named and retried while
// their outcome is unknown, each recorded in h. The first eight players
// are there from the start; one more joins them every latePlayerEvery.
func runClient(ctx context.Context, c *cluster, h *replicatest.History, refused *refusals, seed uint64, i int, crng *rand.Rand, players []string, start time.Time) {
	for ops := 0; ops < 150 && ctx.Err() == nil; ops++ {
		// Paced over the schedule, so that the load meets the
		// faults (unpaced, 150 rewards take a few milliseconds).
		// A think time, not synchronisation.
		time.Sleep(time.Duration(crng.IntN(12)) * time.Millisecond)
		live := c.names()
		if len(live) == 0 {
			return
		}
		at := live[crng.IntN(len(live))]
		known := min(len(players), 8+int(time.Since(start)/latePlayerEvery))
		in := replicatest.Input{Player: players[crng.IntN(known)], Delta: int64(crng.IntN(20) - 5)}
		n := c.tryNode(at)
		if n == nil {
			continue
		}
		call := h.Now()
		switch crng.IntN(3) {
		case 1:
			callCtx, cancelCall := context.WithTimeout(context.Background(), time.Second)
			total, err := n.store.RewardInt(callCtx, in.Player, in.Delta)
			cancelCall()
			h.Record(i, in, call, total, err)
			refused.note(h, i, in, call, err)
			continue
		case 2:
			// As a client connection's reward is served when it is not
			// alone: without a waiting goroutine where the primary is
			// here and idle, else the usual way.
			total, err := rewardAsync(n.store, in)
			h.Record(i, in, call, total, err)
			refused.note(h, i, in, call, err)
			continue
		}
		id := wire.ClientReqID(fmt.Sprintf("%d/%d/%d", seed, i, ops))
		total, err := rewardOnce(c, crng, at, in, id)
		h.Record(i, in, call, total, err)
		refused.note(h, i, in, call, err)
	}
}

// rewardAsync rewards through Store.RewardAsync if it takes the reward,
// else through RewardInt. RewardAsync must answer within a few call
// timeouts (an update given up, then served the usual way).
func rewardAsync(s *replica.Store, in replicatest.Input) (int64, error) {
	return eitherPath(fmt.Sprintf("RewardAsync(%s, %d)", in.Player, in.Delta),
		func(done func(int64, error)) bool { return s.RewardAsync(in.Player, in.Delta, done) },
		func(ctx context.Context) (int64, error) { return s.RewardInt(ctx, in.Player, in.Delta) })
}

// rewardOnceAsync is rewardAsync for a reward its client named.
func rewardOnceAsync(s *replica.Store, in replicatest.Input, id wire.ReqID) (int64, error) {
	points := strconv.FormatInt(in.Delta, 10)
	return eitherPath(fmt.Sprintf("RewardOnceAsync(%s, %d)", in.Player, in.Delta),
		func(done func(int64, error)) bool { return s.RewardOnceAsync(in.Player, in.Delta, id, done) },
		func(ctx context.Context) (int64, error) { return s.RewardOnce(ctx, in.Player, points, id) })
}

// eitherPath starts a reward with async, or, if it does not take it,
// serves it with usual; what async takes must answer within 30 s.
func eitherPath(what string, async func(done func(int64, error)) bool, usual func(context.Context) (int64, error)) (int64, error) {
	type answer struct {
		total int64
		err   error
	}
	ch := make(chan answer, 1)
	if !async(func(total int64, err error) { ch <- answer{total, err} }) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return usual(ctx)
	}
	select {
	case a := <-ch:
		return a.total, a.err
	case <-time.After(30 * time.Second):
		panic(what + " never answered")
	}
}

// latePlayerEvery spreads the first rewards of the late players over a
// schedule's 1.2 s.
const latePlayerEvery = 140 * time.Millisecond

// rewardOnce is a client that names its request and, while the outcome
// is unknown, sends it again (to any node): one operation, from its first
// call to its last answer.
func rewardOnce(c *cluster, crng *rand.Rand, at string, in replicatest.Input, id wire.ReqID) (int64, error) {
	var total int64
	var err error
	// Once an attempt's outcome is unknown, only a success settles it: a
	// later attempt refused before it reached the player (a node out of
	// quorum) says nothing of the earlier one, which may have been
	// applied.
	maybe := false
	for try := 0; try < 4; try++ {
		if n := c.tryNode(at); n != nil {
			if crng.IntN(2) == 0 {
				total, err = rewardOnceAsync(n.store, in, id)
			} else {
				callCtx, cancelCall := context.WithTimeout(context.Background(), time.Second)
				total, err = n.store.RewardOnce(callCtx, in.Player, strconv.FormatInt(in.Delta, 10), id)
				cancelCall()
			}
			switch wire.OutcomeOf(err) {
			case wire.OutcomeApplied:
				return total, nil
			case wire.OutcomeUnknown:
				maybe = true
			default:
				if !maybe {
					return total, err
				}
			}
		}
		live := c.names()
		if len(live) == 0 {
			break
		}
		at = live[crng.IntN(len(live))]
	}
	if maybe && err != nil {
		return 0, wire.Errorf(wire.CodeUnknown, "%s: an earlier attempt's outcome is unknown and no later one settled it: %v", in.Player, err)
	}
	return total, err
}

// checkFinalTotals reads every player's total from every node of the
// healed cluster, recording the reads in h, and fails the test if a read
// fails for 5 s or two nodes disagree.
func checkFinalTotals(t *testing.T, c *cluster, h *replicatest.History, seed uint64, players []string) {
	for _, p := range players {
		var first int64
		for j, at := range c.names() {
			var total int64
			var err error
			deadline := time.Now().Add(5 * time.Second)
			for {
				call := h.Now()
				total, err = c.node(at).store.RewardInt(ctxT(t), p, 0)
				h.Record(100+j, replicatest.Input{Player: p}, call, total, err)
				if err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				for _, n := range c.names() {
					t.Logf("%s: %s; copies %s", n, c.node(n).store.Describe(), c.node(n).store.DebugCopies())
				}
				t.Fatalf("seed %d: final read of %s at %s: %v", seed, p, at, err)
			}
			if j == 0 {
				first = total
			} else if total != first {
				t.Fatalf("seed %d: nodes disagree on %s: %d vs %d", seed, p, first, total)
			}
		}
	}
}

func (c *cluster) tryNode(name string) *tnode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name]
}

// nemesis injects faults until ctx ends, within the failure model the
// guarantees cover: one node at a time is killed, paused or cut off, or some
// links lose replies of delivered calls, drop one way, or delay (none of
// which a live node's membership notices), and the next fault comes only
// after the cluster has restored two copies of every player (sequential
// failures). It returns how many of each kind it injected.
func nemesis(t *testing.T, c *cluster, rng *rand.Rand, ctx context.Context, players []string) map[string]int {
	nm := &nemesisRun{c: c, rng: rng, ctx: ctx, faults: map[string]int{}}
	for nm.pause(time.Duration(50+rng.IntN(100)) * time.Millisecond) {
		live := c.names()
		switch k := rng.IntN(7); {
		case k == 0 && len(live) > 2:
			nm.kill(live)
		case k == 1 && len(nm.dead) > 0:
			nm.restart()
		case k == 2 && len(live) > 2:
			nm.pauseNode(live)
		case k == 3 && len(live) > 2:
			nm.partition(live)
		case k == 4 && len(live) > 1:
			nm.loseReplies(live)
		case k == 5 && len(live) > 1:
			nm.oneWay(live)
		case k == 6 && len(live) > 1:
			nm.delay(live)
		}
		if !c.waitRedundant(players, 5*time.Second) {
			for _, n := range c.names() {
				t.Logf("%s: %s; copies %s", n, c.node(n).store.Describe(), c.node(n).store.DebugCopies())
			}
			for _, p := range players {
				o, k := c.holders(p)
				t.Logf("%s: primaries %v keepers %v", p, o, k)
			}
			t.Errorf("two copies of every player were not restored within 5 s after faults %v", nm.faults)
			return nm.faults
		}
	}
	return nm.faults
}

// nemesisRun is the nemesis's state between faults. Each fault kind is a
// method; all of them draw from rng in a fixed order, so that a seed
// replays the same schedule.
type nemesisRun struct {
	c      *cluster
	rng    *rand.Rand
	ctx    context.Context
	faults map[string]int
	dead   []string // killed, in order, to be restarted first to last
}

// pause waits d, and reports false if ctx ended first.
func (nm *nemesisRun) pause(d time.Duration) bool {
	select {
	case <-nm.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// link picks a directed link between two live nodes.
func (nm *nemesisRun) link(live []string) (string, string) {
	i := nm.rng.IntN(len(live))
	j := (i + 1 + nm.rng.IntN(len(live)-1)) % len(live)
	return live[i], live[j]
}

// others is live without victim.
func others(live []string, victim string) []string {
	var rest []string
	for _, n := range live {
		if n != victim {
			rest = append(rest, n)
		}
	}
	return rest
}

// kill kills a node, and sometimes makes the failover meet lost replies.
func (nm *nemesisRun) kill(live []string) {
	c, rng := nm.c, nm.rng
	victim := live[rng.IntN(len(live))]
	lossy := rng.IntN(2) == 0
	if lossy {
		// The failover itself meets lost replies.
		for _, a := range live {
			for _, b := range live {
				if a != b && a != victim && b != victim {
					c.net.LoseReplies(a, b, 0.3)
				}
			}
		}
		nm.faults["kill-lossy"]++
	}
	c.kill(victim)
	nm.dead = append(nm.dead, victim)
	nm.faults["kill"]++
	if rng.IntN(2) == 0 {
		c.sync() // detected now; otherwise only the link hints tell
	}
	if lossy {
		nm.pause(time.Duration(50+rng.IntN(100)) * time.Millisecond)
		c.net.Heal()
	}
}

// restart brings back the node killed longest ago.
func (nm *nemesisRun) restart() {
	name := nm.dead[0]
	nm.dead = nm.dead[1:]
	nm.c.start(name)
	nm.c.sync()
	nm.faults["restart"]++
}

// pauseNode pauses a node while the others see it gone, then resumes it.
func (nm *nemesisRun) pauseNode(live []string) {
	c, rng := nm.c, nm.rng
	victim := live[rng.IntN(len(live))]
	c.net.Pause(victim)
	rest := others(live, victim)
	for _, n := range rest {
		c.view(n, rest...)
	}
	nm.faults["pause"]++
	nm.pause(time.Duration(20+rng.IntN(100)) * time.Millisecond)
	c.net.Resume(victim)
	c.sync()
}

// partition cuts a node off from the others, each side seeing only itself.
func (nm *nemesisRun) partition(live []string) {
	c, rng := nm.c, nm.rng
	victim := live[rng.IntN(len(live))]
	rest := others(live, victim)
	c.net.Partition([]string{victim}, rest)
	c.view(victim, victim)
	for _, n := range rest {
		c.view(n, rest...)
	}
	nm.faults["partition"]++
	nm.pause(time.Duration(50+rng.IntN(100)) * time.Millisecond)
	c.net.Heal()
	c.sync()
}

// loseReplies makes delivered calls lose their replies on a few links.
func (nm *nemesisRun) loseReplies(live []string) {
	for range 1 + nm.rng.IntN(3) {
		a, b := nm.link(live)
		nm.c.net.LoseReplies(a, b, 0.2+0.4*nm.rng.Float64())
	}
	nm.faults["lost-replies"]++
	nm.pause(time.Duration(50+nm.rng.IntN(100)) * time.Millisecond)
	nm.c.net.Heal()
}

// oneWay fails one direction of a link while the other works.
func (nm *nemesisRun) oneWay(live []string) {
	a, b := nm.link(live)
	nm.c.net.Cut(a, b)
	nm.faults["one-way"]++
	nm.pause(time.Duration(50+nm.rng.IntN(100)) * time.Millisecond)
	nm.c.net.Heal()
}

// delay holds, and reorders, the calls to and from one node.
func (nm *nemesisRun) delay(live []string) {
	rng := nm.rng
	victim := live[rng.IntN(len(live))]
	d := time.Duration(5+rng.IntN(60)) * time.Millisecond
	jitter := time.Duration(1+rng.IntN(40)) * time.Millisecond
	for _, o := range live {
		if o != victim {
			nm.c.net.Delay(victim, o, d, jitter)
			nm.c.net.Delay(o, victim, d, jitter)
		}
	}
	nm.faults["delay"]++
	nm.pause(time.Duration(100+rng.IntN(100)) * time.Millisecond)
	nm.c.net.Heal()
}

// waitRedundant waits until every existing player has exactly one primary
// and a keeper copy on another live node that names that primary's node.
func (c *cluster) waitRedundant(players []string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, p := range players {
			owners, keepers := c.holders(p)
			if len(owners) == 0 && len(keepers) == 0 {
				continue // not created yet
			}
			if len(owners) != 1 {
				ok = false
				break
			}
			found := false
			for _, k := range keepers {
				if n := c.tryNode(k); n != nil {
					if o, _, err := n.store.Where(context.Background(), p); err == nil && o.Name == owners[0] {
						found = true
					}
				}
			}
			if !found {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logEvents logs the events every node reported (the first 1024 of each),
// killed ones included, in time order, for a failing schedule.
func (c *cluster) logEvents() {
	c.mu.Lock()
	nodes := append([]*tnode(nil), c.gone...)
	for _, n := range c.nodes {
		nodes = append(nodes, n)
	}
	c.mu.Unlock()
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	for _, n := range nodes {
		for len(n.events) > 0 {
			e := <-n.events
			lines = append(lines, line{e.Time, fmt.Sprintf("%s %s: %s", e.Time.Format("15:04:05.000000"), n.name, e.Text)})
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	for _, l := range lines {
		c.t.Log(l.text)
	}
}

// refusals keeps the rewards that failed as "not applied", which the
// history leaves out, so that a failing schedule can show them: one that
// was applied after all is a way to break linearizability.
type refusals struct {
	mu    sync.Mutex
	lines []string
}

func (r *refusals) note(h *replicatest.History, client int, in replicatest.Input, call int64, err error) {
	if err == nil || !replicatest.NotApplied(err) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf("[%d..%d] c%d reward(%s, %d) not applied: %v", call, h.Now(), client, in.Player, in.Delta, err))
}

func (r *refusals) log(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		t.Log(l)
	}
}
