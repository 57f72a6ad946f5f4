// Package quorum is the membership that appnode's safety is counted
// against, and the only way it changes: by agreement of a majority of the
// members before the change. A roster (wire.Roster) lists the members, at
// their current incarnations, and the incarnations removed. Each change is
// one instance of single-decree Paxos whose acceptors are the members of
// the roster before it (a slot is decided before the next is proposed, so
// every slot has exactly one set of acceptors), and whose value is the
// whole next roster.
//
// The package is plain values and pure functions, as etcd's raft core is:
// an Acceptor takes a message and returns its answer and whether its state
// must be saved first; the caller owns the network, the disk and the
// clock. A member's acceptor state must reach its disk before its answer
// leaves: a node restarted under its name answers with the votes it gave,
// or a decided change could be undone.
package quorum

import (
	"slices"
	"strings"

	"github.com/appnode/appnode/wire"
)

// Less orders ballots.
func Less(a, b wire.Ballot) bool {
	if a.N != b.N {
		return a.N < b.N
	}
	return a.Name < b.Name
}

// New is the roster of a cluster that self starts alone.
func New(cluster uint64, self wire.NodeID) wire.Roster {
	return wire.Roster{Cluster: cluster, Epoch: 1, Members: []wire.NodeID{self}}
}

// Fresh says whether r is a cluster of one that never changed: its member
// may join another cluster without losing anything the cluster agreed.
func Fresh(r wire.Roster) bool { return r.Epoch <= 1 && len(r.Members) <= 1 }

// Majority is how many members make a quorum of r.
func Majority(r wire.Roster) int { return len(r.Members)/2 + 1 }

// Member returns the incarnation r lists under name.
func Member(r wire.Roster, name string) (wire.NodeID, bool) {
	for _, m := range r.Members {
		if m.Name == name {
			return m, true
		}
	}
	return wire.NodeID{}, false
}

// IsMember says whether id is a member of r at this very incarnation.
func IsMember(r wire.Roster, id wire.NodeID) bool {
	m, ok := Member(r, id.Name)
	return ok && m == id
}

// Fenced says whether r proves id gone: an older boot of a member, or an
// incarnation no newer than one the roster removed.
func Fenced(r wire.Roster, id wire.NodeID) bool {
	if m, ok := Member(r, id.Name); ok && m.Boot > id.Boot {
		return true
	}
	for _, d := range r.Dead {
		if d.Name == id.Name && d.Boot >= id.Boot {
			return true
		}
	}
	return false
}

// Change is what a proposer wants of the next roster.
type Change struct {
	Admit  []wire.NodeID // members to add, or new incarnations of members (the old ones are removed)
	Remove []wire.NodeID // incarnations to remove
}

func (c Change) Empty() bool { return len(c.Admit) == 0 && len(c.Remove) == 0 }

func (c Change) String() string {
	var parts []string
	for _, id := range c.Admit {
		parts = append(parts, "admit "+id.Name)
	}
	for _, id := range c.Remove {
		parts = append(parts, "remove "+id.Name)
	}
	return strings.Join(parts, ", ")
}

// Pending returns what of c the roster r has not done yet: an admission of
// an incarnation r already lists or has fenced, or a removal of one it no
// longer lists, is done (or moot).
func Pending(r wire.Roster, c Change) Change {
	var out Change
	for _, id := range c.Admit {
		if !IsMember(r, id) && !Fenced(r, id) {
			out.Admit = append(out.Admit, id)
		}
	}
	for _, id := range c.Remove {
		if IsMember(r, id) {
			out.Remove = append(out.Remove, id)
		}
	}
	return out
}

// Apply returns the roster after r with c, at the next epoch. Removed
// incarnations, and those replaced by a newer boot, go to Dead (one entry
// per name, the newest); Dead keeps at most wire.MaxRoster names, the
// oldest entries going first (they are the least likely to come back).
func Apply(r wire.Roster, c Change) wire.Roster {
	next := wire.Roster{Cluster: r.Cluster, Epoch: r.Epoch + 1, Dead: slices.Clone(r.Dead)}
	bury := func(id wire.NodeID) {
		next.Dead = slices.DeleteFunc(next.Dead, func(d wire.NodeID) bool { return d.Name == id.Name && d.Boot <= id.Boot })
		next.Dead = append(next.Dead, id)
	}
	members := map[string]wire.NodeID{}
	for _, m := range r.Members {
		members[m.Name] = m
	}
	for _, id := range c.Remove {
		if m, ok := members[id.Name]; ok && m == id {
			delete(members, id.Name)
			bury(id)
		}
	}
	for _, id := range c.Admit {
		if Fenced(next, id) {
			continue
		}
		if m, ok := members[id.Name]; ok && m.Boot < id.Boot {
			bury(m)
		} else if ok {
			continue
		}
		members[id.Name] = id
	}
	for _, m := range members {
		next.Members = append(next.Members, m)
	}
	slices.SortFunc(next.Members, func(a, b wire.NodeID) int { return strings.Compare(a.Name, b.Name) })
	if over := len(next.Dead) - wire.MaxRoster; over > 0 {
		next.Dead = next.Dead[over:]
	}
	return next
}

// Acceptor is one member's part in deciding the next roster: the latest
// roster it knows to be decided, and its vote for the slot after it.
type Acceptor struct {
	Roster   wire.Roster // the latest decided roster this node knows
	Promised wire.Ballot // for slot Roster.Epoch+1: no lower ballot is accepted
	Accepted wire.Ballot // the ballot under which Value was accepted; zero if none
	Value    wire.Roster // the roster accepted for slot Roster.Epoch+1
}

// Learn takes a decided roster. It reports whether it was news (then the
// state must be saved: the vote for the old slot is done with).
func (a *Acceptor) Learn(r wire.Roster) bool {
	if r.Cluster != a.Roster.Cluster || r.Epoch <= a.Roster.Epoch {
		return false
	}
	*a = Acceptor{Roster: r}
	return true
}

// Prepare answers a Prepare from a proposer. save says the state changed
// and must be saved before the answer is sent.
func (a *Acceptor) Prepare(m *wire.Prepare) (reply *wire.Promise, save bool) {
	if m.Base.Cluster != a.Roster.Cluster {
		return &wire.Promise{}, false // another cluster's vote is none of ours
	}
	save = a.catchUp(m.Base)
	switch {
	case m.Slot <= a.Roster.Epoch:
		return &wire.Promise{Latest: a.Roster}, save
	case m.Slot > a.Roster.Epoch+1:
		// It cannot vote on a slot whose acceptors it does not know.
		return &wire.Promise{Promised: a.Promised}, save
	case Less(m.Ballot, a.Promised):
		return &wire.Promise{Promised: a.Promised}, save
	}
	save = save || a.Promised != m.Ballot
	a.Promised = m.Ballot
	return &wire.Promise{OK: true, Promised: a.Promised, Accepted: a.Accepted, Value: a.Value}, save
}

// Accept answers an Accept from a proposer, as Prepare does.
func (a *Acceptor) Accept(m *wire.Accept) (reply *wire.Accepted, save bool) {
	if m.Base.Cluster != a.Roster.Cluster || m.Value.Cluster != a.Roster.Cluster {
		return &wire.Accepted{}, false
	}
	save = a.catchUp(m.Base)
	switch {
	case m.Slot <= a.Roster.Epoch:
		return &wire.Accepted{Latest: a.Roster}, save
	case m.Slot > a.Roster.Epoch+1:
		return &wire.Accepted{Promised: a.Promised}, save
	case Less(m.Ballot, a.Promised):
		return &wire.Accepted{Promised: a.Promised}, save
	}
	a.Promised, a.Accepted, a.Value = m.Ballot, m.Ballot, m.Value
	return &wire.Accepted{OK: true, Promised: a.Promised}, true
}

// catchUp learns base, the decided roster a proposer built on, when it is
// newer than the acceptor's: a member that missed a decision must vote on
// the next slot with the acceptors that decision named.
func (a *Acceptor) catchUp(base wire.Roster) bool {
	if base.Cluster != a.Roster.Cluster || base.Epoch <= a.Roster.Epoch {
		return false
	}
	return a.Learn(base)
}

// Choose picks the value a proposer must propose after its promises: the
// value accepted under the highest ballot, if any member accepted one
// (it may have been decided), else mine.
func Choose(promises []*wire.Promise, mine wire.Roster) wire.Roster {
	var best *wire.Promise
	for _, p := range promises {
		if p.Accepted == (wire.Ballot{}) {
			continue
		}
		if best == nil || Less(best.Accepted, p.Accepted) {
			best = p
		}
	}
	if best == nil {
		return mine
	}
	return best.Value
}
