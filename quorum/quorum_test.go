package quorum_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/appnode/appnode/quorum"
	"github.com/appnode/appnode/wire"
)

func id(name string, boot uint64) wire.NodeID { return wire.NodeID{Name: name, Boot: boot} }

func TestApplyAdmitsReplacesAndRemoves(t *testing.T) {
	r := quorum.New(7, id("a", 1))
	r = quorum.Apply(r, quorum.Change{Admit: []wire.NodeID{id("b", 1), id("c", 1)}})
	if r.Epoch != 2 || len(r.Members) != 3 || quorum.Majority(r) != 2 {
		t.Fatalf("after admitting b and c: %+v", r)
	}
	// A new incarnation of b replaces the old, which is fenced for good.
	r = quorum.Apply(r, quorum.Change{Admit: []wire.NodeID{id("b", 2)}})
	if !quorum.IsMember(r, id("b", 2)) || !quorum.Fenced(r, id("b", 1)) || quorum.Fenced(r, id("b", 2)) {
		t.Fatalf("restart of b: %+v", r)
	}
	r = quorum.Apply(r, quorum.Change{Remove: []wire.NodeID{id("c", 1)}})
	if _, ok := quorum.Member(r, "c"); ok || !quorum.Fenced(r, id("c", 1)) || quorum.Fenced(r, id("c", 2)) {
		t.Fatalf("removal of c: %+v", r)
	}
	// A removed incarnation is never admitted again; a newer one is.
	if p := quorum.Pending(r, quorum.Change{Admit: []wire.NodeID{id("c", 1)}}); !p.Empty() {
		t.Fatalf("the removed c/1 is still pending admission: %v", p)
	}
	if p := quorum.Pending(r, quorum.Change{Admit: []wire.NodeID{id("c", 3)}}); p.Empty() {
		t.Fatalf("c/3 is not pending admission")
	}
}

func TestAcceptorVotesOncePerBallotOrder(t *testing.T) {
	base := quorum.New(1, id("a", 1))
	base = quorum.Apply(base, quorum.Change{Admit: []wire.NodeID{id("b", 1), id("c", 1)}})
	a := quorum.Acceptor{Roster: base}
	hi, lo := wire.Ballot{N: 2, Name: "b"}, wire.Ballot{N: 2, Name: "a"}
	if p, save := a.Prepare(&wire.Prepare{Slot: 3, Ballot: hi, Base: base}); !p.OK || !save {
		t.Fatalf("first prepare refused: %+v", p)
	}
	if p, _ := a.Prepare(&wire.Prepare{Slot: 3, Ballot: lo, Base: base}); p.OK || p.Promised != hi {
		t.Fatalf("a lower ballot was promised: %+v", p)
	}
	v := quorum.Apply(base, quorum.Change{Remove: []wire.NodeID{id("c", 1)}})
	if r, _ := a.Accept(&wire.Accept{Slot: 3, Ballot: lo, Value: v, Base: base}); r.OK {
		t.Fatalf("accepted under a ballot lower than promised")
	}
	if r, save := a.Accept(&wire.Accept{Slot: 3, Ballot: hi, Value: v, Base: base}); !r.OK || !save {
		t.Fatalf("accept under the promised ballot refused: %+v", r)
	}
	// A later proposer learns the accepted value from the promise.
	p, _ := a.Prepare(&wire.Prepare{Slot: 3, Ballot: wire.Ballot{N: 3, Name: "a"}, Base: base})
	if !p.OK || p.Accepted != hi || p.Value.Epoch != 3 {
		t.Fatalf("promise does not carry the accepted value: %+v", p)
	}
	// Once the slot is decided, a prepare for it gets the decided roster.
	a.Learn(v)
	if p, _ := a.Prepare(&wire.Prepare{Slot: 3, Ballot: wire.Ballot{N: 9, Name: "z"}, Base: base}); p.OK || p.Latest.Epoch != 3 {
		t.Fatalf("prepare of a decided slot: %+v", p)
	}
	// Another cluster's proposer gets no vote.
	other := quorum.New(2, id("a", 1))
	if p, _ := a.Prepare(&wire.Prepare{Slot: 4, Ballot: wire.Ballot{N: 9, Name: "z"}, Base: other}); p.OK {
		t.Fatalf("promised to another cluster")
	}
}

// Safety under any interleaving: proposers with different changes race on
// the same slots, messages to any acceptor are lost at random, and every
// slot is still decided at most one way. A proposer that decides applies
// it, as the real one does, and goes on to the next slot.
func TestNoTwoDecisionsForOneSlot(t *testing.T) {
	for seed := range uint64(300) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { raceProposers(t, seed) })
	}
}

func raceProposers(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	names := []string{"a", "b", "c", "d", "e"}[:3+rng.IntN(3)]
	base := quorum.New(1, id(names[0], 1))
	var all []wire.NodeID
	for _, n := range names[1:] {
		all = append(all, id(n, 1))
	}
	base = quorum.Apply(base, quorum.Change{Admit: all})
	acc := map[string]*quorum.Acceptor{}
	for _, n := range names {
		acc[n] = &quorum.Acceptor{Roster: base}
	}
	decided := map[uint64]wire.Roster{}
	type proposer struct {
		name  string
		known wire.Roster
		n     uint64
	}
	var props []*proposer
	for _, n := range names[:2+rng.IntN(2)] {
		props = append(props, &proposer{name: n, known: base})
	}
	deliver := func() bool { return rng.IntN(4) != 0 }
	for step := 0; step < 60; step++ {
		p := props[rng.IntN(len(props))]
		slot := p.known.Epoch + 1
		p.n++
		b := wire.Ballot{N: p.n, Name: p.name}
		var promises []*wire.Promise
		for _, m := range p.known.Members {
			if acc[m.Name] == nil || !deliver() {
				continue
			}
			r, _ := acc[m.Name].Prepare(&wire.Prepare{Slot: slot, Ballot: b, Base: p.known})
			if r.Latest.Epoch >= slot {
				p.known = r.Latest
			}
			if r.OK {
				promises = append(promises, r)
			}
			if r.Promised.N > p.n {
				p.n = r.Promised.N
			}
		}
		if p.known.Epoch+1 != slot || len(promises) < quorum.Majority(p.known) {
			continue
		}
		// Each proposer wants to remove a different member, or admit one.
		want := quorum.Change{Admit: []wire.NodeID{id(fmt.Sprintf("%s%d", p.name, step), 1)}}
		v := quorum.Choose(promises, quorum.Apply(p.known, want))
		oks := 0
		for _, m := range p.known.Members {
			if acc[m.Name] == nil || !deliver() {
				continue
			}
			if r, _ := acc[m.Name].Accept(&wire.Accept{Slot: slot, Ballot: b, Value: v, Base: p.known}); r.OK {
				oks++
			}
		}
		if oks < quorum.Majority(p.known) {
			continue
		}
		if prev, ok := decided[slot]; ok && !slices.Equal(prev.Members, v.Members) {
			t.Fatalf("slot %d decided twice: %v and %v", slot, prev.Members, v.Members)
		}
		decided[slot] = v
		p.known = v
		for _, m := range v.Members {
			switch a := acc[m.Name]; {
			case a == nil:
				acc[m.Name] = &quorum.Acceptor{Roster: v} // a newcomer starts from the roster that admitted it
			case deliver():
				a.Learn(v)
			}
		}
	}
}

// A proposer of another cluster gets neither a vote nor this cluster's
// roster, whatever the slot numbers say.
func TestAcceptorIgnoresOtherClusters(t *testing.T) {
	mine := quorum.Apply(quorum.New(1, id("a", 1)), quorum.Change{Admit: []wire.NodeID{id("b", 1)}})
	a := quorum.Acceptor{Roster: mine}
	other := quorum.New(2, id("c", 1))
	p, save := a.Prepare(&wire.Prepare{Slot: 1, Ballot: wire.Ballot{N: 5, Name: "c"}, Base: other})
	if p.OK || p.Latest.Epoch != 0 || save {
		t.Fatalf("prepare from another cluster: %+v (save %v)", p, save)
	}
	r, _ := a.Accept(&wire.Accept{Slot: 2, Ballot: wire.Ballot{N: 5, Name: "c"}, Value: quorum.Apply(other, quorum.Change{}), Base: other})
	if r.OK || r.Latest.Epoch != 0 {
		t.Fatalf("accept from another cluster: %+v", r)
	}
}
