package replica

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/appnode/appnode/wire"
)

// The directory makes a creation cost a few messages however large the
// cluster. Without it, only every member's answer proves that a player is
// new. With it, the player's arbiter (first in its placement order, which
// already serialises racing creators) can vouch for that alone:
//
//   - when a node learns a roster, it tells each member which of the
//     players it holds (or is activating) that member arbitrates under the
//     new roster, then that it has told all (wire.Register, Done);
//   - an arbiter records every player it lets be created;
//   - an arbiter that has heard Done from every member of the roster it
//     holds is complete: a player it arbitrates and does not list has no
//     copy on any member (WhereReply.Absent, Create.Fast).
//
// Why a complete list misses nothing. Copies change hands only from a
// node that keeps one (an owner placing its keeper keeps its primary; a
// keeper granting a claim, or promoting its copy, keeps it), or away from
// a member the roster removed; and the node taking a player (a claimant,
// a creator) does so inside an activation (Store.flights) until it holds
// it. A node lists its activations first, then its tables: so whatever
// it holds or is taking when it learns the roster is listed, and whatever
// it takes after that starts under the new roster, whose arbiter records
// a creation and whose members list anything else. A node whose roster is
// behind is the one gap (it may still create through the old roster's
// arbiter while a newer roster names another), the same gap every decision
// an arbiter takes alone has; the fast creation narrows it by requiring
// the creator and the arbiter to hold the same roster.
//
// Lists are kept per roster epoch: a new roster starts an empty one, and
// no one is complete until every member has spoken again. An entry only
// says that a player may exist, so the arbiter keeps a 64-bit fingerprint
// of the name, not the name: a fingerprint shared by two names costs a
// creation the question to every member, never a wrong answer.
//
// An entry also says which member last said it keeps a copy of the player
// (Register.Kept), so that a node looking for the player finds its keeper
// in two questions however the cluster has grown (WhereReply.Hint,
// askSlots). Placement puts a keeper first or second in its player's
// order, where that node asks anyway; a node that joined since may push
// it down, and then only the arbiter's word leads to it. The hint is never
// trusted alone: the keeper's own answer is.
type directory struct {
	epoch uint64 // the roster epoch it is gathered for
	// listed holds fingerprints of players that may exist, which this
	// node arbitrates; a value other than 0 is 1 + the index in members
	// of the member last heard to keep a copy.
	listed  map[uint64]uint16
	members []wire.NodeID        // the roster's, sorted by name, when it was started
	heard   map[wire.NodeID]bool // members that sent Done for epoch, self included
	// prev is the directory of the roster before, kept for its hints
	// until this one is complete: a failover changes the roster, and the
	// node a request reached looks for the player's keeper before the
	// members have listed their players again.
	prev *directory

	// This node's own Register for epoch: the peers that have it.
	told map[wire.NodeID]bool
}

var dirSeed = maphash.MakeSeed()

func fingerprint(player string) uint64 { return maphash.String(dirSeed, player) }

// dirLocked returns the directory for the roster held now, started over
// if it was gathered for another one (or none: a new incarnation).
func (s *Store) dirLocked() *directory {
	if s.dir.epoch == s.view.Roster().Epoch && s.dir.listed != nil {
		return &s.dir
	}
	var prev *directory
	if s.dir.listed != nil {
		old := s.dir
		old.prev = nil // one roster back is enough
		prev = &old
	}
	s.dir = directory{
		epoch:   s.view.Roster().Epoch,
		listed:  map[uint64]uint16{},
		members: slices.Clone(s.membersLocked()),
		heard:   map[wire.NodeID]bool{},
		told:    map[wire.NodeID]bool{},
		prev:    prev,
	}
	return &s.dir
}

// hint names the member d last heard keeps a copy of the player with
// fingerprint fp, or, if none, the directory before it.
func (d *directory) hint(fp uint64) (wire.NodeID, bool) {
	if i := d.listed[fp]; i != 0 {
		return d.members[i-1], true
	}
	if d.prev != nil {
		return d.prev.hint(fp)
	}
	return wire.NodeID{}, false
}

// list records that player may exist.
func (d *directory) list(player string) {
	fp := fingerprint(player)
	if _, ok := d.listed[fp]; !ok {
		d.listed[fp] = 0
	}
}

// noteKeeper records that member keeps a copy of player, and lists it.
func (d *directory) noteKeeper(player string, member wire.NodeID) {
	i, ok := slices.BinarySearchFunc(d.members, member.Name, func(m wire.NodeID, name string) int {
		return strings.Compare(m.Name, name)
	})
	if !ok || d.members[i] != member || i >= math.MaxUint16 {
		d.list(player)
		return
	}
	d.listed[fingerprint(player)] = uint16(i + 1)
}

// keeperHintLocked names the member this node's directory last heard keeps
// a copy of player, if any (see directory).
func (s *Store) keeperHintLocked(player string) (wire.NodeID, bool) {
	return s.dirLocked().hint(fingerprint(player))
}

// arbitratesLocked says whether this node is player's arbiter under the
// roster it holds.
func (s *Store) arbitratesLocked(player string) bool {
	return arbiterOf(player, s.membersLocked()) == s.view.Self()
}

// arbiterOf is the first member in player's placement order.
func arbiterOf(player string, members []wire.NodeID) wire.NodeID {
	var best wire.NodeID
	var top uint64
	for i, m := range members {
		sc := rendezvous(player, m.Name)
		if i == 0 || sc > top || (sc == top && m.Name < best.Name) {
			best, top = m, sc
		}
	}
	return best
}

// directoryCompleteLocked says whether every member of the roster held
// now has listed its players here.
func (s *Store) directoryCompleteLocked() bool {
	if s.dir.epoch != s.view.Roster().Epoch {
		return false
	}
	for _, m := range s.membersLocked() {
		if !s.dir.heard[m] {
			return false
		}
	}
	return true
}

// dropPrevDirectoryLocked lets the directory of the roster before go once
// this one has heard from every member.
func (s *Store) dropPrevDirectoryLocked() {
	if s.dir.prev != nil && s.directoryCompleteLocked() {
		s.dir.prev = nil
	}
}

// vouchAbsentLocked says whether this node, player's arbiter with a
// complete directory, knows that no member holds a copy of it.
func (s *Store) vouchAbsentLocked(player string) bool {
	if !s.directoryCompleteLocked() || s.primaries.get(player) != nil || s.copies.get(player) != nil {
		return false
	}
	if _, ok := s.dir.listed[fingerprint(player)]; ok {
		return false
	}
	return s.arbitratesLocked(player)
}

// recordPlayerLocked lists player, which this node arbitrates, as one that
// may exist.
func (s *Store) recordPlayerLocked(player string) {
	s.dirLocked().list(player)
}

// handleRegister takes a member's list of players this node arbitrates.
func (s *Store) handleRegister(from wire.NodeID, m *wire.Register) (wire.Msg, error) {
	for _, p := range m.Players {
		if err := ValidatePlayer(p); err != nil {
			return nil, err
		}
	}
	for _, k := range m.Kept {
		if int(k) >= len(m.Players) {
			return nil, wire.Errorf(wire.CodeBadRequest, "register: kept index %d of %d players", k, len(m.Players))
		}
	}
	s.mu.Lock()
	epoch := s.view.Roster().Epoch
	if !s.isMemberLocked(from) || m.Epoch > epoch {
		// This node is behind: it takes the list from the sender's retry,
		// once it holds that roster.
		s.mu.Unlock()
		s.catchUpFrom(from)
		return nil, wire.Errorf(wire.CodeBusy, "%s holds roster %d, before %s's %d; retry once it has caught up", s.Self().Name, epoch, from.Name, m.Epoch)
	}
	defer s.mu.Unlock()
	if m.Epoch < epoch {
		// The sender is behind: it lists its players again once it
		// learns this roster, and only that list counts.
		return &wire.Ack{}, nil
	}
	dir := s.dirLocked()
	for _, p := range m.Players {
		dir.list(p)
	}
	for _, k := range m.Kept {
		dir.noteKeeper(m.Players[k], from)
	}
	if m.Done {
		dir.heard[from] = true
		s.dropPrevDirectoryLocked()
	}
	return &wire.Ack{}, nil
}

// tellArbiters lists this node's players to their arbiters under the
// roster held now (wire.Register). It reports whether every member has
// the list.
func (s *Store) tellArbiters() bool {
	s.mu.Lock()
	epoch, members, self := s.dirLocked().epoch, s.membersLocked(), s.view.Self()
	var untold []wire.NodeID
	for _, m := range members {
		if m != self && !s.dir.told[m] {
			untold = append(untold, m)
		}
	}
	finished := s.dir.heard[self] && len(untold) == 0
	member := s.view.IsMember(self)
	s.mu.Unlock()
	if finished || !member {
		return true // a node not admitted yet holds nothing to tell
	}

	lists, ok := s.listByArbiter(epoch, members)
	if !ok {
		return false // a newer roster: the next call starts over
	}
	var wg sync.WaitGroup
	for _, m := range untold {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.register(m, epoch, lists[m]); err != nil {
				s.logf("replica: could not list players to %s for roster %d yet: %v", m.Name, epoch, err)
				return
			}
			s.mu.Lock()
			if s.dir.epoch == epoch {
				s.dir.told[m] = true
			}
			s.mu.Unlock()
		}()
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir.epoch != epoch {
		return false
	}
	for _, m := range untold {
		if !s.dir.told[m] {
			return false
		}
	}
	return true
}

// arbiterList is what this node tells one arbiter: players, and which of
// them it keeps a copy of (Register.Kept).
type arbiterList struct {
	players []string
	kept    []uint32 // indexes into players
}

// listByArbiter sorts the players held or being activated here by their
// arbiter under members (roster epoch), and records this node's own
// share. Activations are listed first (see directory), then the tables, a
// shard at a time as repair walks them, so rewards go on meanwhile. It
// reports false if the roster changed meanwhile.
func (s *Store) listByArbiter(epoch uint64, members []wire.NodeID) (map[wire.NodeID]*arbiterList, bool) {
	self := s.Self()
	lists := map[wire.NodeID]*arbiterList{}
	add := func(p string, kept bool) {
		a := arbiterOf(p, members)
		l := lists[a]
		if l == nil {
			l = &arbiterList{}
			lists[a] = l
		}
		if kept {
			l.kept = append(l.kept, uint32(len(l.players)))
		}
		l.players = append(l.players, p)
	}
	for i := -1; i < tableShards; i++ {
		s.mu.Lock()
		if s.dir.epoch != epoch {
			s.mu.Unlock()
			return nil, false
		}
		if i < 0 {
			for p := range s.flights {
				add(p, false)
			}
		} else {
			for p := range s.primaries.shard(i) {
				add(p, false)
			}
			for p := range s.copies.shard(i) {
				add(p, true)
			}
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir.epoch != epoch {
		return nil, false
	}
	if own := lists[self]; own != nil {
		for _, p := range own.players {
			s.recordPlayerLocked(p)
		}
	}
	s.dir.heard[self] = true
	s.dropPrevDirectoryLocked()
	return lists, true
}

// register sends peer the players it arbitrates, in pages, the last Done.
func (s *Store) register(peer wire.NodeID, epoch uint64, l *arbiterList) error {
	var players []string
	var kept []uint32
	if l != nil {
		players, kept = l.players, l.kept
	}
	for from := 0; ; {
		to, size := from, 0
		for to < len(players) {
			if size += len(players[to]); size > wire.MaxRegister && to > from {
				break
			}
			to++
		}
		m := &wire.Register{Epoch: epoch, Players: players[from:to], Done: to == len(players)}
		for len(kept) > 0 && int(kept[0]) < to {
			m.Kept = append(m.Kept, kept[0]-uint32(from))
			kept = kept[1:]
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
		_, err := s.callPeer(ctx, peer, m)
		cancel()
		if err != nil {
			return fmt.Errorf("register %d players: %w", to-from, err)
		}
		if m.Done {
			return nil
		}
		from = to
	}
}

// hintArbiterLocked tells player's arbiter that this node now keeps a copy of it,
// if this node is not among the first two in its placement order, where
// anyone looking for the player asks anyway (see directory). It does not
// wait: the hint only saves a search, and the next roster's Register
// carries it again.
func (s *Store) hintArbiterLocked(player string) {
	members := s.membersLocked()
	order := placementOrder(player, members)
	self := s.view.Self()
	if slices.Contains(order[:min(2, len(order))], self) {
		return
	}
	arbiter, epoch := order[0], s.view.Roster().Epoch
	s.spawn(func() {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
		defer cancel()
		_, _ = s.callPeer(ctx, arbiter, &wire.Register{Epoch: epoch, Players: []string{player}, Kept: []uint32{0}})
	})
}

// directoryLoop keeps this node's lists with the arbiters of the roster
// it holds: at once when the roster changes (kickDirectory), again a few
// times within a quarter second if a member could not take them yet (it
// had not learnt the roster), and then on every repairInterval tick, which
// costs a look under the lock once every member has them. It takes every
// tick even while a quick retry is pending, so that a manual clock's
// Advance, which hands each tick over before it moves on, is never kept
// waiting.
func (s *Store) directoryLoop() {
	t := s.cfg.Clock.NewTicker(repairInterval)
	defer t.Stop()
	var retry Timer // the quick retry's, while one is pending
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	retries := 0
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.dirKick:
			retries = 0
		case <-t.C():
		case <-retryC:
		}
		if retry != nil {
			retry.Stop()
			retry, retryC = nil, nil
		}
		if s.tellArbiters() {
			retries = 0
			continue
		}
		if retries < directoryRetries {
			retries++
			retry = s.cfg.Clock.NewTimer(s.backoffDelay(retries + 2))
			retryC = retry.C()
		}
	}
}

// directoryRetries bounds the quick retries of tellArbiters (8 to 64 ms
// apart, jittered).
const directoryRetries = 6

// kickDirectory wakes the directory loop: the roster changed.
func (s *Store) kickDirectory() { wake(s.dirKick) }
