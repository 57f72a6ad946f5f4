package replica

import (
	"context"
	"fmt"
	"sync"

	"github.com/appnode/appnode/wire"
)

// The directory makes a creation cost a few messages however large the
// cluster. Without it, only every member's answer proves that a player is
// new. With it, the player's arbiter (first in its placement order, which
// already serialises racing creators) can vouch for that alone:
//
//   - when a node learns a roster, it tells each member which of the
//     players it holds that member arbitrates under the new roster, then
//     that it has told all (wire.Register, Done);
//   - an arbiter records every player it lets be created;
//   - an arbiter that has heard Done from every member of the roster it
//     holds is complete: a player it arbitrates and does not list has no
//     copy on any member (WhereReply.Absent, Create.Fast).
//
// Why a complete list misses nothing: copies change hands only from a node
// that keeps one (an owner placing its keeper keeps its primary, a keeper
// granting a claim or promoting keeps its copy) or away from a member the
// roster removed. So within one roster, a player held when the roster was
// learnt stays with a member that listed it; one created since was
// recorded by its arbiter. A node whose roster is behind is the one gap
// (it may still list its players for the old roster's arbiter while a
// newer roster moved them elsewhere), the same gap every decision an
// arbiter takes alone has; the fast creation narrows it by requiring the
// creator and the arbiter to hold the same roster.
//
// Lists are kept per roster epoch: a new roster starts a new one (entries
// the node still arbitrates are kept) and no one is complete until every
// member has spoken again. Entries only tell that a player exists, so an
// extra one costs a survey, never a wrong answer.
type directory struct {
	epoch   uint64               // the roster epoch it is gathered for
	players playerTable[bool]    // players that exist, which this node arbitrates at epoch
	heard   map[wire.NodeID]bool // members that sent Done for epoch, self included

	// This node's own Register for epoch: the peers that have it.
	told map[wire.NodeID]bool
}

// resetDirectoryLocked starts the directory over for the roster held now.
// Entries the node no longer arbitrates are dropped by tellArbiters, a
// shard at a time.
func (s *Store) resetDirectoryLocked() {
	s.dir.epoch = s.view.Roster().Epoch
	s.dir.heard = map[wire.NodeID]bool{}
	s.dir.told = map[wire.NodeID]bool{}
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

// vouchAbsentLocked says whether this node, player's arbiter with a
// complete directory, knows that no member holds a copy of it.
func (s *Store) vouchAbsentLocked(player string) bool {
	return s.primaries.get(player) == nil && s.copies.get(player) == nil &&
		!s.dir.players.get(player) && s.arbitratesLocked(player) && s.directoryCompleteLocked()
}

// recordPlayerLocked lists player, which this node arbitrates, as existing.
func (s *Store) recordPlayerLocked(player string) {
	s.dir.players.put(player, true)
}

// handleRegister takes a member's list of players this node arbitrates.
func (s *Store) handleRegister(from wire.NodeID, m *wire.Register) (wire.Msg, error) {
	for _, p := range m.Players {
		if err := ValidatePlayer(p); err != nil {
			return nil, err
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
	if s.dir.epoch != epoch {
		s.resetDirectoryLocked()
	}
	for _, p := range m.Players {
		// A list for an older roster (the sender is behind, and lists its
		// players again once it learns this one) still says who exists.
		if m.Epoch == epoch || s.arbitratesLocked(p) {
			s.recordPlayerLocked(p)
		}
	}
	if m.Done && m.Epoch == epoch {
		s.dir.heard[from] = true
	}
	return &wire.Ack{}, nil
}

// tellArbiters lists this node's players to their arbiters under the
// roster held now (wire.Register), and drops directory entries for players
// this node no longer arbitrates. It reports whether every member has the
// list.
func (s *Store) tellArbiters() bool {
	s.mu.Lock()
	if s.dir.epoch != s.view.Roster().Epoch {
		s.resetDirectoryLocked()
	}
	epoch, members, self := s.dir.epoch, s.membersLocked(), s.view.Self()
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

// listByArbiter sorts the players held here by their arbiter under
// members (roster epoch), records this node's own share, and drops the
// entries it no longer arbitrates. It walks a table shard at a time, as
// repair does, so rewards go on meanwhile: a player that arrives after
// its shard was walked was created (its arbiter recorded it) or handed
// over by a node that keeps a copy and lists it (see directory). It
// reports false if the roster changed meanwhile.
func (s *Store) listByArbiter(epoch uint64, members []wire.NodeID) (map[wire.NodeID][]string, bool) {
	self := s.Self()
	lists := map[wire.NodeID][]string{}
	for i := range tableShards {
		s.mu.Lock()
		if s.dir.epoch != epoch {
			s.mu.Unlock()
			return nil, false
		}
		for p := range s.primaries.shard(i) {
			a := arbiterOf(p, members)
			lists[a] = append(lists[a], p)
		}
		for p := range s.copies.shard(i) {
			a := arbiterOf(p, members)
			lists[a] = append(lists[a], p)
		}
		for p := range s.dir.players.shard(i) {
			if arbiterOf(p, members) != self {
				s.dir.players.del(p)
			}
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir.epoch != epoch {
		return nil, false
	}
	for _, p := range lists[self] {
		s.recordPlayerLocked(p)
	}
	s.dir.heard[self] = true
	return lists, true
}

// register sends peer the players it arbitrates, in pages, the last Done.
func (s *Store) register(peer wire.NodeID, epoch uint64, players []string) error {
	for {
		page, size := players, 0
		for i, p := range players {
			if size += len(p); size > wire.MaxRegister {
				page = players[:i]
				break
			}
		}
		players = players[len(page):]
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
		_, err := s.callPeer(ctx, peer, &wire.Register{Epoch: epoch, Players: page, Done: len(players) == 0})
		cancel()
		if err != nil {
			return fmt.Errorf("register %d players: %w", len(page), err)
		}
		if len(players) == 0 {
			return nil
		}
	}
}

// directoryLoop keeps this node's lists with the arbiters of the roster
// it holds: at once when the roster changes (kickDirectory), and on every
// repairInterval tick, which costs a look under the lock once every member
// has them.
func (s *Store) directoryLoop() {
	t := s.cfg.Clock.NewTicker(repairInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.dirKick:
		case <-t.C():
		}
		s.tellArbiters()
	}
}

// kickDirectory wakes the directory loop: the roster changed.
func (s *Store) kickDirectory() {
	select {
	case s.dirKick <- struct{}{}:
	default:
	}
}
