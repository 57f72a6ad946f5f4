package replica

import (
	"hash/maphash"
	"iter"
)

// tableShards is how many maps a playerTable splits its players over. At
// a million players a shard of a node's third holds about 5,000, which a
// walk visits in well under a millisecond.
const tableShards = 64

var tableSeed = maphash.MakeSeed()

// playerTable maps player names to V, split by a hash of the name over
// tableShards maps. It is guarded by Store.mu like any other field; the
// split is there so that a walk over every player (repair, which looks for
// primaries without a keeper and copies without an owner) can release the
// lock between shards. In one map a third of a million players took about
// 150 ms to walk, during which no reward on the node made progress.
//
// The zero value is an empty table.
type playerTable[V any] struct {
	shards [tableShards]map[string]V
	n      int
}

func shardOf(player string) int {
	return int(maphash.String(tableSeed, player) % tableShards)
}

// get returns player's value, or the zero V.
func (t *playerTable[V]) get(player string) V {
	return t.shards[shardOf(player)][player]
}

func (t *playerTable[V]) put(player string, v V) {
	i := shardOf(player)
	m := t.shards[i]
	if m == nil {
		m = map[string]V{}
		t.shards[i] = m
	}
	if _, ok := m[player]; !ok {
		t.n++
	}
	m[player] = v
}

func (t *playerTable[V]) del(player string) {
	m := t.shards[shardOf(player)]
	if _, ok := m[player]; ok {
		delete(m, player)
		t.n--
	}
}

func (t *playerTable[V]) len() int { return t.n }

// all visits every player, in no particular order, without releasing the
// lock: for small tables and rare events. A walk that must not stall the
// node goes shard by shard (shard).
func (t *playerTable[V]) all() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, m := range t.shards {
			for k, v := range m {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// shard visits the players of shard i (0 <= i < tableShards).
func (t *playerTable[V]) shard(i int) iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for k, v := range t.shards[i] {
			if !yield(k, v) {
				return
			}
		}
	}
}
