package replica

import (
	"sort"

	"github.com/appnode/appnode/wire"
)

// maxTombstones bounds the memory of dead incarnations. Only one that
// comes back (a paused process) needs to be remembered, and only until it
// does; thousands cover any realistic churn.
const maxTombstones = 4096

// View is one node's membership as quorum counts it: who is alive now, the
// membership it last agreed on (the cluster), the incarnations it knows to
// be dead (tombstones), and whether it may serve. It is a plain value: its
// methods take news and return what changed, with no clock, lock or
// network, so the quorum rules are tested on their own (view_test.go). A
// Store keeps one under its lock and acts on what the methods return.
//
// The rules:
//   - the node serves only while it sees a strict majority of the cluster;
//   - growth is taken at once;
//   - a member missing from the live set suspends serving until a confirm
//     round (Confirmed) has reached a majority of the cluster over the
//     network: a node that is itself being cut off often hears of its
//     peers' failures one at a time, and would briefly think it holds a
//     majority. Only then are the missing members tombstoned and the
//     cluster shrunk, so that failures detected one after another keep
//     the cluster serving down to two nodes;
//   - a name that comes back with a higher boot id is a new process: the
//     old incarnation is tombstoned at once.
type View struct {
	self    wire.NodeID
	alive   map[string]wire.NodeID // live members by name, self included, tombstoned excluded
	cluster map[string]wire.NodeID // the membership quorum is counted against, last incarnations
	quorate bool
	// confirming: a member was lost and a confirm round has not yet said
	// whether this node is still in the majority; rewards wait
	// (retryably) rather than fail. confirmWanted: a round must run.
	confirming, confirmWanted bool
	gen                       uint64 // counts changes of alive, so a confirm round knows if it is stale
	tombs                     map[wire.NodeID]bool
	tombOrder                 []wire.NodeID
}

// NewView is the view of a node that knows only itself.
func NewView(self wire.NodeID) View {
	v := View{tombs: map[wire.NodeID]bool{}}
	v.Reset(self)
	return v
}

// Reset forgets every member but self, which becomes the new incarnation.
// Tombstones are kept: the dead stay dead.
func (v *View) Reset(self wire.NodeID) {
	v.self = self
	v.alive = map[string]wire.NodeID{self.Name: self}
	v.cluster = map[string]wire.NodeID{self.Name: self}
	v.quorate = true
	v.confirming, v.confirmWanted = false, false
	v.gen++
}

// Self is this node's incarnation.
func (v *View) Self() wire.NodeID { return v.self }

// Observe takes the live members the failure detector reports (self
// included or not). It returns the incarnations it tombstoned, and the
// zombies: tombstoned incarnations reported alive again (paused or cut
// off, and back), which must be told to rejoin clean. Zombies are named
// only while this node serves: a minority node's verdicts are not the
// cluster's.
func (v *View) Observe(members []wire.NodeID) (tombstoned, zombies []wire.NodeID) {
	next := make(map[string]wire.NodeID, len(members)+1)
	for _, id := range members {
		if id.Name == v.self.Name {
			continue
		}
		if v.tombs[id] {
			if v.quorate {
				zombies = append(zombies, id)
			}
			continue
		}
		if cur, ok := v.alive[id.Name]; ok && cur.Boot > id.Boot {
			// Boot ids grow with each start: a lower one is an older
			// process whose news arrived late.
			continue
		}
		next[id.Name] = id
	}
	next[v.self.Name] = v.self
	return v.setAlive(next), zombies
}

// PeerDead records proof that incarnation id no longer exists (a refused
// connection, a new boot answering under its name). It reports whether
// that was news. A dead process cannot be serving on the far side of a
// partition, so unlike a silent member it leaves the cluster even when
// this node is not in the majority: a two-node cluster whose peer was
// killed can grow again when a node joins.
func (v *View) PeerDead(id wire.NodeID) (tombstoned []wire.NodeID) {
	if v.tombs[id] || id == v.self {
		return nil
	}
	tombstoned = v.tombstone(nil, id)
	if cur, ok := v.alive[id.Name]; !ok || cur == id {
		delete(v.cluster, id.Name)
		next := make(map[string]wire.NodeID, len(v.alive))
		for n, m := range v.alive {
			if n != id.Name {
				next[n] = m
			}
		}
		tombstoned = append(tombstoned, v.setAlive(next)...)
	}
	return tombstoned
}

// setAlive installs a new live set and recomputes quorum.
func (v *View) setAlive(next map[string]wire.NodeID) (tombstoned []wire.NodeID) {
	for name, old := range v.alive {
		if cur, ok := next[name]; ok && cur.Boot > old.Boot {
			// Same name, new boot: the old process is gone for certain.
			tombstoned = v.tombstone(tombstoned, old)
		}
	}
	v.alive = next
	missing := false
	for name := range v.cluster {
		if _, ok := next[name]; !ok {
			missing = true
		}
	}
	v.gen++
	if v.quorate && !missing {
		for name, id := range next {
			v.cluster[name] = id
		}
		return tombstoned
	}
	if v.quorate {
		v.confirming = true
	}
	v.quorate = false
	v.confirmWanted = true
	return tombstoned
}

// ConfirmRound says whether a confirm round is wanted and, if so, its
// generation and the live peers it must ask.
func (v *View) ConfirmRound() (gen uint64, peers []wire.NodeID, wanted bool) {
	if !v.confirmWanted {
		return 0, nil, false
	}
	return v.gen, v.Peers(), true
}

// QuorumChange is what a confirm round changed, for the node to report.
type QuorumChange int

const (
	QuorumSame     QuorumChange = iota
	QuorumLost                  // this node no longer sees a majority
	QuorumRegained              // this node serves again
)

// Confirmed takes the answer of the confirm round of generation gen:
// answered lists the peers that answered it. A round overtaken by a
// change of the view is ignored (the next one decides). On a majority the
// members still missing are tombstoned and the cluster becomes the live
// set.
func (v *View) Confirmed(gen uint64, answered []wire.NodeID) (change QuorumChange, tombstoned []wire.NodeID) {
	if v.gen != gen {
		return QuorumSame, nil
	}
	was := v.quorate || v.confirming
	v.confirmWanted = false
	v.confirming = false
	reached := 0
	if _, ok := v.cluster[v.self.Name]; ok {
		reached++
	}
	for _, p := range answered {
		if _, ok := v.cluster[p.Name]; ok && p.Name != v.self.Name {
			reached++
		}
	}
	if 2*reached <= len(v.cluster) {
		v.confirmWanted = true // keep trying on every repair tick
		if was {
			return QuorumLost, nil
		}
		return QuorumSame, nil
	}
	for name, id := range v.cluster {
		if _, ok := v.alive[name]; !ok {
			tombstoned = v.tombstone(tombstoned, id)
			delete(v.cluster, name)
		}
	}
	for name, id := range v.alive {
		v.cluster[name] = id
	}
	v.quorate = true
	if !was {
		return QuorumRegained, tombstoned
	}
	return QuorumSame, tombstoned
}

func (v *View) tombstone(out []wire.NodeID, id wire.NodeID) []wire.NodeID {
	if v.tombs[id] {
		return out
	}
	v.tombs[id] = true
	v.tombOrder = append(v.tombOrder, id)
	if len(v.tombOrder) > maxTombstones {
		delete(v.tombs, v.tombOrder[0])
		v.tombOrder = v.tombOrder[1:]
	}
	return append(out, id)
}

// Serving returns nil if this node may serve, else why not, as an error
// whose code a client can act on.
func (v *View) Serving() error {
	if v.confirming {
		return wire.Errorf(wire.CodeBusy, "a member was just lost; confirming this node is still in the majority")
	}
	if !v.quorate {
		return wire.Errorf(wire.CodeNoQuorum, "this node sees only %d of the %d cluster members (partition or failures); it refuses rewards until the majority is reachable again", v.seen(), len(v.cluster))
	}
	return nil
}

func (v *View) seen() int {
	n := 0
	for name := range v.cluster {
		if _, ok := v.alive[name]; ok {
			n++
		}
	}
	return n
}

// Quorate says whether this node last found itself in the majority (it
// may still be confirming a loss).
func (v *View) Quorate() bool { return v.quorate }

// ConfirmWanted says whether a loss of members awaits a confirm round.
func (v *View) ConfirmWanted() bool { return v.confirmWanted }

// Fenced says whether id was declared failed: its messages are refused and
// it must come back as a new incarnation.
func (v *View) Fenced(id wire.NodeID) bool { return v.tombs[id] }

// IsAlive says whether id is the live incarnation of its name.
func (v *View) IsAlive(id wire.NodeID) bool {
	cur, ok := v.alive[id.Name]
	return ok && cur == id
}

// Members returns the live members, self included, sorted by name.
func (v *View) Members() []wire.NodeID {
	out := make([]wire.NodeID, 0, len(v.alive))
	for _, id := range v.alive {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Peers returns the live members other than self, sorted by name.
func (v *View) Peers() []wire.NodeID {
	out := make([]wire.NodeID, 0, len(v.alive))
	for _, id := range v.Members() {
		if id.Name != v.self.Name {
			out = append(out, id)
		}
	}
	return out
}

// Size returns how many members are alive and how many the cluster counts.
func (v *View) Size() (alive, cluster int) { return len(v.alive), len(v.cluster) }

// ClusterNames returns the names quorum is counted against, sorted.
func (v *View) ClusterNames() []string {
	out := make([]string, 0, len(v.cluster))
	for name := range v.cluster {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Tombstones counts the dead incarnations remembered.
func (v *View) Tombstones() int { return len(v.tombs) }
