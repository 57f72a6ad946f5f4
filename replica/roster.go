package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/appnode/appnode/quorum"
	"github.com/appnode/appnode/wire"
)

// Disk keeps this node's vote on the roster (quorum.Acceptor) across
// restarts under its name. Save must not return before the state is
// durable: the node's answers to proposers depend on it.
type Disk interface {
	Load() (quorum.Acceptor, bool, error)
	Save(quorum.Acceptor) error
}

// MemDisk is a Disk in memory, for tests and for nodes without a state
// directory: such a node forgets its votes when it stops, so when it comes
// back under its name it votes on nothing until it is admitted again.
type MemDisk struct {
	mu    sync.Mutex
	state *quorum.Acceptor
}

func (d *MemDisk) Load() (quorum.Acceptor, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == nil {
		return quorum.Acceptor{}, false, nil
	}
	return *d.state, true, nil
}

func (d *MemDisk) Save(a quorum.Acceptor) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state = &a
	return nil
}

// Timings of the roster's agreement.
const (
	// maxReachTimeout bounds how long a member tries to reach a suspect
	// when asked (Reach): a killed node refuses at once, a paused one is
	// given this long, or half the call timeout if that is shorter, so
	// that the answer beats the asker's own deadline.
	maxReachTimeout = 500 * time.Millisecond
	// rosterRetry is how long the roster loop waits before trying again
	// a change it could not get agreed (no majority reachable, a lost
	// race with another proposer); it doubles up to maxRosterRetry.
	rosterRetry    = 20 * time.Millisecond
	maxRosterRetry = 2 * time.Second
	// proposeRounds bounds the ballots one proposal tries before the loop
	// backs off.
	proposeRounds = 4
	// announceTries bounds how often a decided roster is sent to one
	// member before it is left to learn it otherwise.
	announceTries = 4
	// joinWindow is how long a new node that asked a cluster to admit it
	// refuses to take others in itself: two new nodes must not each
	// start a cluster with the other's joiners.
	joinWindow = 2 * time.Second
)

// joiningLocked says whether this node asked a cluster to admit it lately.
func (s *Store) joiningLocked() bool { return s.cfg.Clock.Now().Before(s.joiningUntil) }

// suspectPeer records a hint that member id may be down (its link broke
// and it refuses connections, the failure detector lost it). The roster
// loop asks the other members and proposes its removal if most of the
// roster cannot reach it either.
func (s *Store) suspectPeer(id wire.NodeID, why string) {
	s.mu.Lock()
	news := s.view.IsMember(id) && !s.suspects[id]
	if news {
		s.suspects[id] = true
	}
	s.mu.Unlock()
	if news {
		s.logf("replica: %s may be down (%s); asking the cluster", id.Name, why)
		s.kickRoster()
	}
}

func (s *Store) kickRoster() { wake(s.rosterKick) }

// rosterLoop turns hints into agreed roster changes, one at a time.
func (s *Store) rosterLoop() {
	wait := rosterRetry
	var retry Timer
	for {
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C()
		}
		select {
		case <-s.ctx.Done():
			if retry != nil {
				retry.Stop()
			}
			return
		case <-s.rosterKick:
		case <-retryC:
		}
		if s.rosterStep() {
			wait = rosterRetry
			if retry != nil {
				retry.Stop()
				retry = nil
			}
			continue
		}
		// Something is left to do: try again later, and less often
		// while it keeps failing.
		// Jitter, so that two nodes proposing at once stop colliding.
		d := wait + s.rand.duration(wait)
		if retry == nil {
			retry = s.cfg.Clock.NewTimer(d)
		} else {
			retry.Reset(d)
		}
		wait = min(2*wait, maxRosterRetry)
	}
}

// rosterStep gathers what the hints justify and proposes it, or, on a
// node not (yet) a member, asks to be admitted. It reports whether
// nothing is left to do.
func (s *Store) rosterStep() (done bool) {
	ctx, cancel := context.WithTimeout(s.ctx, 4*s.cfg.CallTimeout)
	defer cancel()
	s.mu.Lock()
	roster := s.view.Roster()
	self := s.view.Self()
	var suspects []wire.NodeID
	for id := range s.suspects {
		if !quorum.IsMember(roster, id) {
			delete(s.suspects, id)
			continue
		}
		suspects = append(suspects, id)
	}
	var admit []wire.NodeID
	for id := range s.admit {
		if quorum.IsMember(roster, id) || quorum.Fenced(roster, id) {
			delete(s.admit, id)
			continue
		}
		admit = append(admit, id)
	}
	reachable := s.view.Reachable()
	hosting := quorum.Fresh(roster) && len(admit) > 0 && !s.joiningLocked()
	s.mu.Unlock()

	if !quorum.IsMember(roster, self) || (quorum.Fresh(roster) && len(reachable) > 0 && !hosting) {
		return s.askToJoin(ctx, roster, reachable)
	}
	change := quorum.Change{Admit: admit}
	pending := false
	for _, id := range suspects {
		switch s.askWhoReaches(ctx, roster, id) {
		case mostCannot:
			change.Remove = append(change.Remove, id)
		case mostCan:
			// Not dead, just not reachable from here.
			s.count.dismissed.Add(1)
			s.mu.Lock()
			delete(s.suspects, id)
			s.mu.Unlock()
		default:
			pending = true // too few answers either way: ask again
		}
	}
	if change.Empty() {
		return !pending
	}
	if err := s.propose(ctx, change); err != nil {
		s.logf("replica: could not get %s agreed yet: %v", change, err)
		return false
	}
	return !pending
}

// askToJoin gets this node into a cluster: a restarted node asks the
// members of the roster it kept; a new one (alone in a roster of its own)
// probes the nodes it reaches and asks the one it chooses (chooseHost). It
// reports whether it has nothing more to do (it is the host the others
// join, or nobody is there).
func (s *Store) askToJoin(ctx context.Context, roster wire.Roster, reachable []wire.NodeID) bool {
	self := s.Self()
	var hosts []wire.NodeID
	if quorum.Fresh(roster) {
		host, ok := s.chooseHost(ctx, roster, reachable)
		if !ok {
			return true // this node takes the others in
		}
		hosts = []wire.NodeID{host}
	} else {
		for _, m := range roster.Members {
			if m.Name != self.Name {
				hosts = append(hosts, m)
			}
		}
	}
	s.mu.Lock()
	s.joiningUntil = s.cfg.Clock.Now().Add(joinWindow)
	s.mu.Unlock()
	for _, h := range hosts {
		rep, err := s.callPeer(ctx, wire.NodeID{Name: h.Name}, &wire.JoinAsk{})
		if jr, ok := rep.(*wire.JoinReply); err == nil && ok {
			if !jr.OK {
				s.noteRefusal(h.Name, jr.Why)
				continue
			}
			if quorum.IsMember(jr.Roster, self) {
				// Admitted already: the announcement did not get here.
				s.takeAdmission(jr.Roster)
				return true
			}
			return false // admitted once the host's proposal is decided
		}
	}
	return false
}

// chooseHost picks the cluster a new node joins: of the nodes it reaches,
// one whose cluster already has members (the largest, then the lowest
// cluster id, so that every new node picks the same); else the new node
// with the smallest name, which may be this one (ok false).
func (s *Store) chooseHost(ctx context.Context, mine wire.Roster, reachable []wire.NodeID) (host wire.NodeID, ok bool) {
	self := s.Self()
	var best *wire.Roster
	smallest := self
	for _, id := range reachable {
		rep, err := s.callPeer(ctx, id, &wire.JoinAsk{Probe: true})
		jr, isReply := rep.(*wire.JoinReply)
		if err != nil || !isReply {
			continue
		}
		r := jr.Roster
		if quorum.Fresh(r) {
			if id.Name < smallest.Name {
				smallest = id
			}
			continue
		}
		if best == nil || len(r.Members) > len(best.Members) || (len(r.Members) == len(best.Members) && r.Cluster < best.Cluster) {
			best, host = &r, id
		}
	}
	if best != nil {
		return host, true
	}
	if smallest == self {
		return wire.NodeID{}, false
	}
	return smallest, true
}

func (s *Store) noteRefusal(name, why string) {
	s.logf("replica: %s does not admit this node: %s", name, why)
	s.mu.Lock()
	s.refusedJoin[name] = why
	s.mu.Unlock()
}

// verdict is what the roster says of a suspect.
type verdict int

const (
	undecided  verdict = iota
	mostCannot         // a majority of the roster cannot reach it
	mostCan            // a majority can
)

// askWhoReaches asks every other member whether it reaches suspect, and
// tries itself. A member that does not answer counts for neither side.
func (s *Store) askWhoReaches(ctx context.Context, roster wire.Roster, suspect wire.NodeID) verdict {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	need := quorum.Majority(roster)
	var mu sync.Mutex
	cannot, can := 0, 1 // the suspect reaches itself
	v := undecided
	var wg sync.WaitGroup
	for _, m := range roster.Members {
		if m.Name == suspect.Name {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var reached bool
			if m.Name == s.Self().Name {
				reached = s.reach(ctx, suspect)
			} else {
				rep, err := s.callPeer(ctx, m, &wire.Reach{Target: suspect})
				rr, ok := rep.(*wire.ReachReply)
				if err != nil || !ok {
					return
				}
				reached = rr.Reachable
			}
			mu.Lock()
			defer mu.Unlock()
			if v != undecided {
				return // decided: an answer cut short by the cancel below counts for nothing
			}
			if reached {
				can++
			} else {
				cannot++
			}
			switch {
			case cannot >= need:
				v = mostCannot
			case can >= need:
				v = mostCan
			default:
				return
			}
			cancel() // the others need not be waited for
		}()
	}
	wg.Wait()
	return v
}

// reach says whether this node can reach id now.
func (s *Store) reach(ctx context.Context, id wire.NodeID) bool {
	ctx, cancel := context.WithTimeout(ctx, min(maxReachTimeout, s.cfg.CallTimeout/2))
	defer cancel()
	_, err := s.cfg.Net.Call(ctx, id, &wire.Ping{})
	return err == nil
}

// propose gets change agreed: one Paxos instance per slot, with every
// member of the roster before it as acceptor (this node's own vote is
// taken locally). If another proposal wins the slot, this one goes on to
// the next with what is still pending.
func (s *Store) propose(ctx context.Context, change quorum.Change) error {
	var last error
	for range proposeRounds {
		s.mu.Lock()
		base := s.acc.Roster
		s.mu.Unlock()
		pending := quorum.Pending(base, change)
		if pending.Empty() {
			return nil
		}
		mine := quorum.Apply(base, pending)
		ballot := s.nextBallot()
		slot := base.Epoch + 1
		promises, err := s.prepareAll(ctx, base, slot, ballot)
		if err != nil {
			last = err
			continue
		}
		v := quorum.Choose(promises, mine)
		if err := s.acceptAll(ctx, base, slot, ballot, v); err != nil {
			last = err
			continue
		}
		s.learnRoster(v)
		s.announce(v, base)
	}
	if last == nil {
		return errors.New("the slot kept going to other proposals")
	}
	return last
}

// nextBallot is a ballot above every one this node has seen.
func (s *Store) nextBallot() wire.Ballot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ballotN = max(s.ballotN, s.acc.Promised.N) + 1
	return wire.Ballot{N: s.ballotN, Name: s.view.Self().Name}
}

func (s *Store) sawBallot(b wire.Ballot) {
	s.mu.Lock()
	s.ballotN = max(s.ballotN, b.N)
	s.mu.Unlock()
}

// askMembers sends m to every member of roster (this node's own acceptor
// answers through local) and returns the answers, as soon as enough says
// they suffice or every member answered: a paused member must not hold up
// a decision the others can make. Members are addressed by name alone: a
// process restarted under a member's name answers with the votes that
// name gave, which it keeps on disk.
func (s *Store) askMembers(ctx context.Context, roster wire.Roster, m wire.Msg, local func() wire.Msg, enough func([]wire.Msg) bool) []wire.Msg {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	self := s.Self().Name
	replies := make(chan wire.Msg, len(roster.Members))
	var wg sync.WaitGroup
	for _, mem := range roster.Members {
		if mem.Name == self {
			replies <- local()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := s.callPeer(ctx, wire.NodeID{Name: mem.Name}, m)
			if err != nil {
				rep = nil
			}
			replies <- rep
		}()
	}
	var out []wire.Msg
	for range roster.Members {
		if rep := <-replies; rep != nil {
			out = append(out, rep)
		}
		if enough(out) {
			break
		}
	}
	cancel()
	wg.Wait() // the calls still out end at once, cancelled
	return out
}

func (s *Store) prepareAll(ctx context.Context, base wire.Roster, slot uint64, b wire.Ballot) ([]*wire.Promise, error) {
	req := &wire.Prepare{Slot: slot, Ballot: b, Base: base}
	enough := func(rs []wire.Msg) bool {
		oks := 0
		for _, r := range rs {
			if p, ok := r.(*wire.Promise); ok && (p.OK || p.Latest.Epoch >= slot) {
				oks++
			}
		}
		return oks >= quorum.Majority(base)
	}
	replies := s.askMembers(ctx, base, req, func() wire.Msg { return s.votePrepare(req) }, enough)
	var promises []*wire.Promise
	for _, r := range replies {
		p, ok := r.(*wire.Promise)
		if !ok {
			continue
		}
		if p.Latest.Epoch >= slot {
			s.learnRoster(p.Latest)
			return nil, fmt.Errorf("slot %d was already decided", slot)
		}
		s.sawBallot(p.Promised)
		if p.OK {
			promises = append(promises, p)
		}
	}
	if len(promises) < quorum.Majority(base) {
		return nil, fmt.Errorf("%d of %d members promised ballot %d, %d needed", len(promises), len(base.Members), b.N, quorum.Majority(base))
	}
	return promises, nil
}

func (s *Store) acceptAll(ctx context.Context, base wire.Roster, slot uint64, b wire.Ballot, v wire.Roster) error {
	req := &wire.Accept{Slot: slot, Ballot: b, Value: v, Base: base}
	enough := func(rs []wire.Msg) bool {
		oks := 0
		for _, r := range rs {
			if a, ok := r.(*wire.Accepted); ok && (a.OK || a.Latest.Epoch >= slot) {
				oks++
			}
		}
		return oks >= quorum.Majority(base)
	}
	replies := s.askMembers(ctx, base, req, func() wire.Msg { return s.voteAccept(req) }, enough)
	oks := 0
	for _, r := range replies {
		a, ok := r.(*wire.Accepted)
		if !ok {
			continue
		}
		if a.Latest.Epoch >= slot {
			s.learnRoster(a.Latest)
			return fmt.Errorf("slot %d was already decided", slot)
		}
		s.sawBallot(a.Promised)
		if a.OK {
			oks++
		}
	}
	if oks < quorum.Majority(base) {
		return fmt.Errorf("%d of %d members accepted, %d needed", oks, len(base.Members), quorum.Majority(base))
	}
	return nil
}

// votePrepare is this node's acceptor answering a Prepare; the vote is on
// disk before the answer leaves.
func (s *Store) votePrepare(m *wire.Prepare) wire.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.acc
	rep, save := s.acc.Prepare(m)
	if save && !s.saveVoteLocked(was) {
		return &wire.Promise{Promised: was.Promised}
	}
	return rep
}

func (s *Store) voteAccept(m *wire.Accept) wire.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.acc
	rep, save := s.acc.Accept(m)
	if save && !s.saveVoteLocked(was) {
		return &wire.Accepted{Promised: was.Promised}
	}
	return rep
}

// saveVoteLocked puts the acceptor's state on disk, or puts back was and
// reports false: a vote that is not durable is not given. A roster
// learnt on the way (a proposer's base) is taken in.
func (s *Store) saveVoteLocked(was quorum.Acceptor) bool {
	if err := s.disk.Save(s.acc); err != nil {
		s.acc = was
		s.logf("replica: cannot save this node's vote on the roster: %v", err)
		return false
	}
	if s.acc.Roster.Epoch != s.view.Roster().Epoch || s.acc.Roster.Cluster != s.view.Roster().Cluster {
		s.takeRosterLocked(s.acc.Roster)
	}
	return true
}

// learnRoster takes a decided roster, if it is news.
func (s *Store) learnRoster(r wire.Roster) {
	s.mu.Lock()
	was := s.acc
	if !s.acc.Learn(r) {
		s.mu.Unlock()
		return
	}
	if err := s.disk.Save(s.acc); err != nil {
		// The decision stands whether or not this node remembers it;
		// it only votes with what it remembers.
		s.acc = was
		s.mu.Unlock()
		s.logf("replica: cannot save the roster of epoch %d: %v", r.Epoch, err)
		return
	}
	s.takeRosterLocked(r)
	s.mu.Unlock()
	s.afterRosterChange()
}

// takeRosterLocked installs r in the view and acts on who it removed.
func (s *Store) takeRosterLocked(r wire.Roster) {
	removed := s.view.Learn(r)
	for _, id := range removed {
		delete(s.suspects, id)
	}
	s.joiningUntil = time.Time{}
	s.viewChangedLocked(removed)
	s.emit(Info, "cluster roster %d: %s", r.Epoch, rosterText(r))
}

// afterRosterChange is what follows a new roster, outside the lock: the
// repair loop takes over the removed members' players, and a node the
// roster fenced rejoins as a new incarnation.
func (s *Store) afterRosterChange() {
	s.kickRepair()
	s.kickDirectory()
	s.kickRoster()
	self := s.Self()
	s.mu.Lock()
	fenced := s.view.Fenced(self)
	s.mu.Unlock()
	if fenced {
		s.fencedByCluster(self)
	}
}

func rosterText(r wire.Roster) string {
	out := ""
	for i, m := range r.Members {
		if i > 0 {
			out += ", "
		}
		out += m.Name
	}
	return out
}

// catchUpFrom asks from, a node that acts as a member although this node's
// roster does not list it, for its roster: this node may have missed a
// decision (its announcement lost). One question per sender at a time.
func (s *Store) catchUpFrom(from wire.NodeID) {
	s.mu.Lock()
	if s.catchingUp[from.Name] {
		s.mu.Unlock()
		return
	}
	s.catchingUp[from.Name] = true
	s.mu.Unlock()
	s.spawn(func() {
		defer func() {
			s.mu.Lock()
			delete(s.catchingUp, from.Name)
			s.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
		defer cancel()
		rep, err := s.callPeer(ctx, from, &wire.JoinAsk{Probe: true})
		if jr, ok := rep.(*wire.JoinReply); err == nil && ok {
			s.learnRoster(jr.Roster) // taken only if it is this cluster's and newer
		}
	})
}

// announce tells every member of the new roster and of the one before it
// that v was decided. It is best effort: a member that misses it learns v
// from the next proposer (Prepare carries its base) or its repair loop.
func (s *Store) announce(v, base wire.Roster) {
	seen := map[string]bool{s.Self().Name: true}
	var to []wire.NodeID
	for _, r := range []wire.Roster{v, base} {
		for _, m := range r.Members {
			if !seen[m.Name] {
				seen[m.Name] = true
				to = append(to, m)
			}
		}
	}
	for _, m := range to {
		s.spawn(func() {
			// A few tries: a node just admitted may not be reachable
			// by name here yet (its address comes with the gossip).
			for try := range announceTries {
				if try > 0 && s.backoff(s.ctx, 3+try) != nil {
					return
				}
				ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
				_, err := s.callPeer(ctx, m, &wire.Decided{Roster: v})
				cancel()
				if err == nil {
					return
				}
			}
		})
	}
}

// handleDecided learns a decided roster from a proposer.
func (s *Store) handleDecided(m *wire.Decided) (wire.Msg, error) {
	if err := s.takeAdmission(m.Roster); err != nil {
		return nil, err
	}
	return &wire.Ack{}, nil
}

// takeAdmission learns r, a decided roster: one of this node's cluster, or
// the first roster of the cluster that admitted this node (new to any
// cluster, it asked to join one).
func (s *Store) takeAdmission(r wire.Roster) error {
	s.mu.Lock()
	mine := s.acc.Roster
	if r.Cluster == mine.Cluster {
		s.mu.Unlock()
		s.learnRoster(r)
		return nil
	}
	if !quorum.IsMember(r, s.view.Self()) || !quorum.Fresh(mine) {
		s.mu.Unlock()
		return wire.Errorf(wire.CodeBadRequest, "%s belongs to another cluster", s.view.Self().Name)
	}
	// Joining: the new cluster's vote starts empty here.
	was := s.acc
	s.acc = quorum.Acceptor{Roster: r}
	if err := s.disk.Save(s.acc); err != nil {
		s.acc = was
		s.mu.Unlock()
		return fmt.Errorf("cannot save the roster of the cluster joined: %w", err)
	}
	s.takeRosterLocked(r)
	s.mu.Unlock()
	s.afterRosterChange()
	return nil
}

// handleJoinAsk answers a node that asks to be admitted (or, Probe, for
// this node's roster).
func (s *Store) handleJoinAsk(from wire.NodeID, m *wire.JoinAsk) (wire.Msg, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := s.acc.Roster
	self := s.view.Self()
	switch {
	case m.Probe:
		return &wire.JoinReply{Roster: mine}, nil
	case !quorum.IsMember(mine, self):
		return &wire.JoinReply{Roster: mine, Why: self.Name + " is not a member of its cluster itself (it is being admitted again)"}, nil
	case quorum.Fresh(mine) && s.joiningLocked():
		return &wire.JoinReply{Roster: mine, Why: self.Name + " is joining a cluster itself"}, nil
	case quorum.Fenced(mine, from):
		return &wire.JoinReply{Roster: mine, Why: "this incarnation of " + from.Name + " was removed; a new one must ask"}, nil
	case quorum.IsMember(mine, from):
		return &wire.JoinReply{OK: true, Roster: mine}, nil // it missed the news
	}
	s.admit[from] = true
	s.kickRoster() // does not block: fine under the lock
	return &wire.JoinReply{OK: true, Roster: mine}, nil
}

// handleReach answers a proposer asking whether this node reaches target.
func (s *Store) handleReach(ctx context.Context, m *wire.Reach) (wire.Msg, error) {
	return &wire.ReachReply{Reachable: s.reach(ctx, m.Target)}, nil
}

// Roster returns the roster this node knows to be agreed.
func (s *Store) Roster() wire.Roster {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view.Roster()
}

// JoinRefused returns why name refused to join this node's cluster, if
// it did.
func (s *Store) JoinRefused(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusedJoin[name]
}
