package replica

import (
	"sort"

	"github.com/appnode/appnode/wire"
)

// Placement uses rendezvous (highest-random-weight) hashing: every node
// ranks the live members for a player the same way, without coordination,
// and removing a member never reorders the others. Two uses follow:
//
//   - the arbiter of a brand new player is the first member in its order;
//     racing creators all ask it, so it serialises them;
//   - a keeper goes to the first member in the order that is not the owner.
//
// Together these mean that, for a new player, the arbiter is either the
// owner or the keeper, so the node that decided is also one that holds it.
func placementOrder(player string, members []wire.NodeID) []wire.NodeID {
	type scored struct {
		id    wire.NodeID
		score uint64
	}
	ss := make([]scored, len(members))
	for i, m := range members {
		ss[i] = scored{m, rendezvous(player, m.Name)}
	}
	sort.Slice(ss, func(i, j int) bool {
		if ss[i].score != ss[j].score {
			return ss[i].score > ss[j].score
		}
		return ss[i].id.Name < ss[j].id.Name
	})
	out := make([]wire.NodeID, len(ss))
	for i, s := range ss {
		out[i] = s.id
	}
	return out
}

// rendezvous scores a (player, node) pair: FNV-1a over both names, then a
// 64-bit finaliser so that similar names do not get similar scores.
func rendezvous(player, node string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(player); i++ {
		h ^= uint64(player[i])
		h *= prime
	}
	h ^= 0
	h *= prime
	for i := 0; i < len(node); i++ {
		h ^= uint64(node[i])
		h *= prime
	}
	// splitmix64 finaliser
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
