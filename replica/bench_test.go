package replica_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
)

// Micro-benchmarks of the replica layer on the in-memory network: no TCP,
// but every message goes through the wire's msgpack encoding both ways, so
// they measure the CPU a reward costs in the replica layer and its
// encoding. Run with:
//
//	go test -run XXX -bench . -benchmem ./replica
//	go test -run XXX -bench RewardOwner/parallel -cpuprofile cpu.out ./replica

// benchStores is a cluster of Stores on a MemNetwork, for benchmarks.
type benchStores struct {
	stores map[string]*replica.Store
	ids    map[string]wire.NodeID
}

func newBenchStores(b *testing.B, names ...string) *benchStores {
	b.Helper()
	net := replica.NewMemNetwork()
	bs := &benchStores{stores: map[string]*replica.Store{}, ids: map[string]wire.NodeID{}}
	var members []wire.NodeID
	for i, name := range names {
		id := wire.NodeID{Name: name, Boot: uint64(i + 1)}
		var s *replica.Store
		ep := net.Attach(name, func() wire.NodeID { return id },
			func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
				return s.Handle(ctx, from, m)
			},
			func(id wire.NodeID) bool { return s.Fenced(id) },
			nil)
		var err error
		if s, err = replica.New(replica.DefaultConfig(id, ep)); err != nil {
			b.Fatal(err)
		}
		bs.stores[name], bs.ids[name] = s, id
		members = append(members, id)
	}
	for _, s := range bs.stores {
		s.SetMembers(members)
	}
	b.Cleanup(func() {
		for _, s := range bs.stores {
			s.Close()
		}
	})
	return bs
}

// create gives each of n players its first reward at node `at`, which
// becomes their owner.
func (bs *benchStores) create(b *testing.B, at string, n int) []string {
	b.Helper()
	players := make([]string, n)
	for i := range players {
		players[i] = fmt.Sprintf("player%d", i+1)
		if _, err := bs.stores[at].RewardInt(context.Background(), players[i], 1); err != nil {
			b.Fatal(err)
		}
	}
	return players
}

// BenchmarkRewardOwner is a reward at its owner: the primary's update path
// and the replicate-and-ack to its keeper. serial is one caller on one
// player; parallel is many callers on many players, where batching the
// replication of different players to one keeper would show.
func BenchmarkRewardOwner(b *testing.B) {
	bs := newBenchStores(b, "a", "b", "c")
	players := bs.create(b, "a", 1000)
	a := bs.stores["a"]
	ctx := context.Background()

	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.RewardInt(ctx, players[0], 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(32) // 64 callers on 2 cores
		var next atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(1)
			for pb.Next() {
				i += 7
				if _, err := a.RewardInt(ctx, players[i%uint64(len(players))], 1); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkRewardForwarded is a reward entering at a node that does not
// own the player: one more message pair before the owner's path.
func BenchmarkRewardForwarded(b *testing.B) {
	bs := newBenchStores(b, "a", "b", "c")
	players := bs.create(b, "a", 1)
	c := bs.stores["c"]
	ctx := context.Background()
	if _, err := c.RewardInt(ctx, players[0], 1); err != nil { // learn the route
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.RewardInt(ctx, players[0], 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeeperReplicate is the keeper's side of replication alone: one
// decoded Replicate handled by the Store, no network.
func BenchmarkKeeperReplicate(b *testing.B) {
	bs := newBenchStores(b, "a", "b")
	players := bs.create(b, "a", 1)
	keeper, owner := bs.stores["b"], bs.ids["a"]
	ctx := context.Background()
	rep, err := keeper.Handle(ctx, owner, &wire.Where{Player: players[0]})
	if err != nil {
		b.Fatal(err)
	}
	w := rep.(*wire.WhereReply)
	if w.Role != wire.RoleKeeper {
		b.Fatalf("b holds %v for %s, want a keeper copy", w.Role, players[0])
	}
	seq := w.Seq
	b.ReportAllocs()
	for b.Loop() {
		seq++
		m := &wire.Replicate{Player: players[0], Epoch: w.Epoch, Seq: seq, Total: int64(seq), ID: wire.ReqID{Origin: owner.Boot, Seq: seq}}
		if _, err := keeper.Handle(ctx, owner, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreate is a brand new player's first reward: the activation
// (create at its arbiter, keeper placed) that `appnode bench --populate`
// runs a million times.
func BenchmarkCreate(b *testing.B) {
	bs := newBenchStores(b, "a", "b", "c")
	a := bs.stores["a"]
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		if _, err := a.RewardInt(ctx, fmt.Sprintf("new%d", i), 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlayerMemory reports the live heap one player copy (a primary
// or a keeper copy) costs at rest, the figure behind the bench tool's
// --populate: players are created across three stores, then the heap is
// collected and measured. Run with -benchtime=1x; b.N is ignored.
func BenchmarkPlayerMemory(b *testing.B) {
	const players = 200_000
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for b.Loop() {
		before := heap()
		bs := newBenchStores(b, "a", "b", "c")
		names := []string{"a", "b", "c"}
		for i := range players {
			at := names[i%len(names)]
			// Players named as the bench tool names them, each with a
			// reward id as a client's reward gets.
			if _, err := bs.stores[at].RewardInt(context.Background(), fmt.Sprintf("bench-%07d", i), 1); err != nil {
				b.Fatal(err)
			}
		}
		after := heap()
		b.ReportMetric(float64(after-before)/(2*players), "B/copy")
		runtime.KeepAlive(bs)
	}
}
