package replica_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/appnode/appnode/wire"
)

// The linearizability check: concurrent clients on every node reward a few
// players while a nemesis kills, restarts, pauses and partitions nodes; the
// recorded history must be linearizable for a counter per player whose
// reward returns the new total. A call that failed with an error proving
// it was not applied is left out; any other failure counts as maybe
// applied (it never returns, for porcupine).
//
// APPNODE_SOAK=N runs N schedules instead of the few the normal suite runs;
// APPNODE_SEED=S replays one schedule.

type rewardIn struct {
	Player string
	Delta  int64
}

type rewardOut struct {
	Total   int64
	Unknown bool
}

var counterModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byPlayer := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			p := op.Input.(rewardIn).Player
			if _, ok := byPlayer[p]; !ok {
				order = append(order, p)
			}
			byPlayer[p] = append(byPlayer[p], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, p := range order {
			out = append(out, byPlayer[p])
		}
		return out
	},
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		next := state.(int64) + input.(rewardIn).Delta
		out := output.(rewardOut)
		return out.Unknown || out.Total == next, next
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(rewardIn), output.(rewardOut)
		if out.Unknown {
			return fmt.Sprintf("reward(%s, %d) -> ?", in.Player, in.Delta)
		}
		return fmt.Sprintf("reward(%s, %d) -> %d", in.Player, in.Delta, out.Total)
	},
}

// notApplied reports whether err proves the reward did not happen.
func notApplied(err error) bool {
	if errors.Is(err, wire.ErrGone) {
		return true
	}
	switch code(err) {
	case wire.CodeNotOwner, wire.CodeBusy, wire.CodeNoCopy, wire.CodeTooFewNodes, wire.CodeNoQuorum, wire.CodeBadRequest, wire.CodeOverflow:
		_, isWire := wire.CodeOf(err)
		return isWire
	}
	return false
}

type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
	stats struct{ ok, failed, unknown int }
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) record(client int, in rewardIn, call int64, total int64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil:
		h.stats.ok++
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: rewardOut{Total: total}, Return: h.now()})
	case notApplied(err):
		h.stats.failed++
	default:
		h.stats.unknown++
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: rewardOut{Unknown: true}, Return: 1 << 62})
	}
}

func TestLinearizableUnderFaults(t *testing.T) {
	schedules := 4
	if v := os.Getenv("APPNODE_SOAK"); v != "" {
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
	total := 0
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			total += runSchedule(t, seed)
		})
	}
	t.Logf("%d schedules, %d operations checked", len(seeds), total)
}

func runSchedule(t *testing.T, seed uint64) int {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	names := []string{"n1", "n2", "n3", "n4", "n5"}[:3+rng.IntN(3)]
	c := newCluster(t, names...)
	players := []string{"p1", "p2", "p3"}
	h := &history{start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()

	var clients sync.WaitGroup
	for i := 0; i < 2*len(names); i++ {
		crng := rand.New(rand.NewPCG(seed+uint64(i)+1, 7))
		clients.Add(1)
		go func() {
			defer clients.Done()
			for ops := 0; ops < 150 && ctx.Err() == nil; ops++ {
				live := c.names()
				if len(live) == 0 {
					return
				}
				at := live[crng.IntN(len(live))]
				in := rewardIn{Player: players[crng.IntN(len(players))], Delta: int64(crng.IntN(20) - 5)}
				n := c.tryNode(at)
				if n == nil {
					continue
				}
				callCtx, cancelCall := context.WithTimeout(context.Background(), time.Second)
				call := h.now()
				total, err := n.store.RewardInt(callCtx, in.Player, in.Delta)
				cancelCall()
				h.record(i, in, call, total, err)
			}
		}()
	}

	faults := nemesis(t, c, rng, ctx, players)
	clients.Wait()

	// Heal everything and read every total from every node: they must agree.
	c.net.Heal()
	c.sync()
	for _, p := range players {
		var first int64
		for j, at := range c.names() {
			var total int64
			var err error
			deadline := time.Now().Add(5 * time.Second)
			for {
				call := h.now()
				total, err = c.node(at).store.RewardInt(ctxT(t), p, 0)
				h.record(100+j, rewardIn{Player: p}, call, total, err)
				if err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				for _, n := range c.names() {
					t.Logf("%s: %s", n, c.node(n).store.Describe())
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

	res, info := porcupine.CheckOperationsVerbose(counterModel, h.ops, 10*time.Second)
	if res == porcupine.Illegal {
		path := fmt.Sprintf("%s/history-%d.html", t.TempDir(), seed)
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(counterModel, info, f)
			f.Close()
		}
		dumpHistory(t, h.ops)
		explain(t, h.ops, info)
		t.Fatalf("seed %d: history of %d operations is not linearizable (faults: %v); replay with APPNODE_SEED=%d", seed, len(h.ops), faults, seed)
	}
	if res == porcupine.Unknown {
		t.Logf("seed %d: linearizability check timed out (inconclusive)", seed)
	}
	t.Logf("seed %d: %d nodes, ok %d, not applied %d, unknown %d; faults %v",
		seed, len(names), h.stats.ok, h.stats.failed, h.stats.unknown, faults)
	if h.stats.ok == 0 {
		t.Fatalf("seed %d: no reward succeeded", seed)
	}
	return len(h.ops)
}

func (c *cluster) tryNode(name string) *tnode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name]
}

// nemesis injects faults until ctx ends, within the failure model SPEC.md
// guarantees: one node at a time is killed, paused or cut off, and the next
// fault comes only after the cluster has restored two copies of every
// player (sequential failures). It returns how many of each kind it
// injected.
func nemesis(t *testing.T, c *cluster, rng *rand.Rand, ctx context.Context, players []string) map[string]int {
	faults := map[string]int{}
	var dead []string
	pause := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for pause(time.Duration(50+rng.IntN(100)) * time.Millisecond) {
		live := c.names()
		switch k := rng.IntN(4); {
		case k == 0 && len(live) > 2:
			victim := live[rng.IntN(len(live))]
			c.kill(victim)
			dead = append(dead, victim)
			faults["kill"]++
			if rng.IntN(2) == 0 {
				c.sync() // detected now; otherwise only the link hints tell
			}
		case k == 1 && len(dead) > 0:
			name := dead[0]
			dead = dead[1:]
			c.start(name)
			c.sync()
			faults["restart"]++
		case k == 2 && len(live) > 2:
			victim := live[rng.IntN(len(live))]
			c.net.Pause(victim)
			var rest []string
			for _, n := range live {
				if n != victim {
					rest = append(rest, n)
				}
			}
			for _, n := range rest {
				c.view(n, rest...)
			}
			faults["pause"]++
			pause(time.Duration(20+rng.IntN(100)) * time.Millisecond)
			c.net.Resume(victim)
			c.sync()
		case k == 3 && len(live) > 2:
			victim := live[rng.IntN(len(live))]
			var rest []string
			for _, n := range live {
				if n != victim {
					rest = append(rest, n)
				}
			}
			c.net.Partition([]string{victim}, rest)
			c.view(victim, victim)
			for _, n := range rest {
				c.view(n, rest...)
			}
			faults["partition"]++
			pause(time.Duration(50+rng.IntN(100)) * time.Millisecond)
			c.net.Heal()
			c.sync()
		}
		if !c.waitRedundant(players, 5*time.Second) {
			t.Errorf("two copies of every player were not restored within 5 s after faults %v", faults)
			return faults
		}
	}
	return faults
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

// dumpHistory writes the history, sorted by call time, to a file for study.
func dumpHistory(t *testing.T, ops []porcupine.Operation) {
	sorted := append([]porcupine.Operation(nil), ops...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	f, err := os.CreateTemp("", "appnode-history-*.txt")
	if err != nil {
		return
	}
	defer f.Close()
	for _, op := range sorted {
		fmt.Fprintf(f, "%12d %12d c%-3d %s\n", op.Call, op.Return, op.ClientId, counterModel.DescribeOperation(op.Input, op.Output))
	}
	t.Logf("history written to %s", f.Name())
}

// explain logs, for each player whose history failed, the end of the
// longest linearization porcupine found and the operations it could not
// place after it.
func explain(t *testing.T, ops []porcupine.Operation, info porcupine.LinearizationInfo) {
	for _, part := range info.PartialLinearizationsOperations() {
		var longest []porcupine.Operation
		for _, lin := range part {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
		if len(longest) == 0 {
			continue
		}
		player := longest[0].Input.(rewardIn).Player
		placed := map[[2]int64]bool{}
		for _, op := range longest {
			placed[[2]int64{op.Call, int64(op.ClientId)}] = true
		}
		var rest []porcupine.Operation
		for _, op := range ops {
			if op.Input.(rewardIn).Player == player && !placed[[2]int64{op.Call, int64(op.ClientId)}] {
				rest = append(rest, op)
			}
		}
		if len(rest) == 0 {
			continue
		}
		sort.Slice(rest, func(i, j int) bool { return rest[i].Call < rest[j].Call })
		for _, op := range longest[max(0, len(longest)-8):] {
			t.Logf("  %s linearized: [%d..%d] c%d %s", player, op.Call, op.Return, op.ClientId, counterModel.DescribeOperation(op.Input, op.Output))
		}
		for _, op := range rest[:min(8, len(rest))] {
			t.Logf("  %s not placed: [%d..%d] c%d %s", player, op.Call, op.Return, op.ClientId, counterModel.DescribeOperation(op.Input, op.Output))
		}
	}
}
