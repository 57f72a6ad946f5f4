package replica

import (
	"github.com/appnode/appnode/quorum"
	"github.com/appnode/appnode/wire"
)

// View is one node's membership as safety counts it: the roster the
// cluster agreed on (package quorum), who the failure detector says is
// reachable now, and whether this node may serve. It is a plain value: its
// methods take news and return what follows from it, with no clock, lock
// or network, so its rules are tested on their own (view_test.go). A Store
// keeps one under its lock and acts on what the methods return.
//
// The rules:
//   - only the roster says who is a member and who is dead; what the
//     failure detector or a refused connection says is a hint, which the
//     Store turns into a proposal to the roster (suspects, newcomers);
//   - the node serves only while it is a member, at its current
//     incarnation, and sees a strict majority of the roster;
//   - a member missing from the reachable set suspends serving until a
//     confirm round (Confirmed) has reached a majority of the roster over
//     the network: a node that is itself being cut off often hears of its
//     peers' failures one at a time, and would briefly think it holds a
//     majority.
type View struct {
	self    wire.NodeID
	roster  wire.Roster            // agreed; changed only by Learn
	alive   map[string]wire.NodeID // reachable, by name, self included, fenced excluded
	quorate bool                   // the last count reached a majority of the roster
	// confirming: a member was lost and a confirm round has not yet said
	// whether this node is still in the majority; rewards wait
	// (retryably) rather than fail. confirmWanted: a round must run.
	confirming, confirmWanted bool
}

// NewView is the view of self under roster r (its own new roster, or the
// one it saved before a restart).
func NewView(self wire.NodeID, r wire.Roster) View {
	v := View{roster: r}
	v.Reset(self)
	return v
}

// Reset makes self the new incarnation, which reaches nobody yet. The
// roster is kept: the cluster's decisions do not depend on who asks.
func (v *View) Reset(self wire.NodeID) {
	v.self = self
	v.alive = map[string]wire.NodeID{self.Name: self}
	v.quorate, v.confirming, v.confirmWanted = false, false, false
	v.recount()
}

// Self is this node's incarnation.
func (v *View) Self() wire.NodeID { return v.self }

// Roster is the roster this node knows to be agreed.
func (v *View) Roster() wire.Roster { return v.roster }

// Learn takes a roster newer than the one held (or the first of a cluster
// this node joins). It returns the members the change removed or
// replaced: their players may be taken over now.
func (v *View) Learn(r wire.Roster) (removed []wire.NodeID) {
	for _, m := range v.roster.Members {
		if !quorum.IsMember(r, m) && m != v.self {
			removed = append(removed, m)
		}
	}
	v.roster = r
	for name, id := range v.alive {
		if quorum.Fenced(r, id) && id != v.self {
			delete(v.alive, name)
		}
	}
	v.recount()
	return removed
}

// Observe takes the reachable nodes the failure detector reports (self
// included or not). It returns the hints for the roster: suspects are
// members it does not report, newcomers are nodes it reports that are not
// members, zombies are incarnations the roster fenced that it reports
// alive again (paused or cut off, and back), which must be told to rejoin
// clean. Zombies are named only while this node serves: a minority node's
// verdicts are not the cluster's.
func (v *View) Observe(reachable []wire.NodeID) (suspects, newcomers, zombies []wire.NodeID) {
	next := make(map[string]wire.NodeID, len(reachable)+1)
	for _, id := range reachable {
		if id.Name == v.self.Name {
			continue
		}
		if quorum.Fenced(v.roster, id) {
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
		if !quorum.IsMember(v.roster, id) {
			newcomers = append(newcomers, id)
		}
	}
	next[v.self.Name] = v.self
	v.alive = next
	for _, m := range v.roster.Members {
		if m.Name != v.self.Name && !v.reaches(m) {
			suspects = append(suspects, m)
		}
	}
	v.recount()
	return suspects, newcomers, zombies
}

func (v *View) reaches(m wire.NodeID) bool {
	cur, ok := v.alive[m.Name]
	return ok && cur == m
}

// recount decides quorum after a change of the roster or of what is
// reachable: with every member reachable the node serves at once; a
// member missing suspends serving until a confirm round.
func (v *View) recount() {
	missing := false
	for _, m := range v.roster.Members {
		if !v.reaches(m) && m.Name != v.self.Name {
			missing = true
		}
	}
	if !missing {
		v.quorate, v.confirming, v.confirmWanted = true, false, false
		return
	}
	if v.quorate {
		v.confirming = true
	}
	v.quorate = false
	v.confirmWanted = true
}

// ConfirmRound says whether a confirm round is wanted and, if so, the
// reachable members it must ask.
func (v *View) ConfirmRound() (peers []wire.NodeID, wanted bool) {
	if !v.confirmWanted {
		return nil, false
	}
	for _, m := range v.roster.Members {
		if m.Name != v.self.Name && v.reaches(m) {
			peers = append(peers, m)
		}
	}
	return peers, true
}

// QuorumChange is what a confirm round changed, for the node to report.
type QuorumChange int

const (
	QuorumSame     QuorumChange = iota
	QuorumLost                  // this node no longer sees a majority
	QuorumRegained              // this node serves again
)

// Confirmed takes the answer of a confirm round: answered lists the peers
// that answered it. The answers count for the roster held now, whatever
// changed while the round was out (a round is never thrown away: a member
// whose status flaps faster than a round must not keep the node
// refusing). Nor does a round that failed undo what happened while it was
// out, every member seen reachable again (recount): the node then serves
// as it does whenever it sees the whole roster.
func (v *View) Confirmed(answered []wire.NodeID) QuorumChange {
	if !v.confirmWanted {
		return QuorumSame
	}
	was := v.quorate || v.confirming
	v.confirming = false
	reached := 0
	if quorum.IsMember(v.roster, v.self) {
		reached++
	}
	for _, p := range answered {
		if p.Name != v.self.Name && quorum.IsMember(v.roster, p) {
			reached++
		}
	}
	if reached < quorum.Majority(v.roster) {
		v.quorate = false
		v.confirmWanted = true // keep trying on every repair tick
		if was {
			return QuorumLost
		}
		return QuorumSame
	}
	v.quorate = true
	v.confirmWanted = false
	if !was {
		return QuorumRegained
	}
	return QuorumSame
}

// Serving returns nil if this node may serve, else why not, as an error
// whose code a client can act on.
func (v *View) Serving() error {
	switch {
	case !quorum.IsMember(v.roster, v.self):
		return wire.Errorf(wire.CodeNoQuorum, "this node is not a member of the cluster (yet): connect it to a node of the cluster, and it serves once the cluster admits it")
	case quorum.Fresh(v.roster) && len(v.alive) > 1:
		// Alone in a roster of its own while it sees others: it is
		// joining them (or they it), which takes a few round trips.
		return wire.Errorf(wire.CodeBusy, "this node is joining the cluster of the nodes it sees; retry in a moment")
	case v.confirming:
		return wire.Errorf(wire.CodeBusy, "a member was just lost; confirming this node is still in the majority")
	case !v.quorate:
		return wire.Errorf(wire.CodeNoQuorum, "this node sees only %d of the %d cluster members (partition or failures); it refuses rewards until the majority is reachable again", v.seen(), len(v.roster.Members))
	}
	return nil
}

func (v *View) seen() int {
	n := 0
	for _, m := range v.roster.Members {
		if v.reaches(m) {
			n++
		}
	}
	return n
}

// Quorate says whether this node last found itself in the majority (it
// may still be confirming a loss).
func (v *View) Quorate() bool { return v.quorate && quorum.IsMember(v.roster, v.self) }

// ConfirmWanted says whether a loss of members awaits a confirm round.
func (v *View) ConfirmWanted() bool { return v.confirmWanted }

// Fenced says whether the roster removed id: its messages are refused and
// it must come back as a new incarnation.
func (v *View) Fenced(id wire.NodeID) bool { return quorum.Fenced(v.roster, id) }

// IsMember says whether id is a member of the roster at this incarnation.
// A player whose owner or keeper is not a member may be taken over.
func (v *View) IsMember(id wire.NodeID) bool { return quorum.IsMember(v.roster, id) }

// Reachable returns the nodes the failure detector reports, self excluded.
func (v *View) Reachable() []wire.NodeID {
	out := make([]wire.NodeID, 0, len(v.alive))
	for _, id := range v.alive {
		if id.Name != v.self.Name {
			out = append(out, id)
		}
	}
	return out
}

// Reaches says whether the failure detector reports id reachable.
func (v *View) Reaches(id wire.NodeID) bool { return v.reaches(id) }

// Members returns the roster's members, self included if it is one, sorted
// by name.
func (v *View) Members() []wire.NodeID { return v.roster.Members }

// Peers returns the roster's members other than self, sorted by name.
func (v *View) Peers() []wire.NodeID {
	out := make([]wire.NodeID, 0, len(v.roster.Members))
	for _, m := range v.roster.Members {
		if m.Name != v.self.Name {
			out = append(out, m)
		}
	}
	return out
}

// Size returns how many members are reachable and how many the roster has.
func (v *View) Size() (reachable, members int) { return v.seen(), len(v.roster.Members) }
