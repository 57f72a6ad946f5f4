package replica

import (
	"fmt"
	"sort"
	"strings"

	"github.com/appnode/appnode/quorum"
	"github.com/appnode/appnode/wire"
)

// DebugCopies describes the keeper copies held here, for failing tests.
func (s *Store) DebugCopies() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for p, c := range s.copies.all() {
		out = append(out, fmt.Sprintf("%s{owner %s/%d alive %v epoch %d placement %d seq %d total %d current %v flight %v}", p, c.owner.Name, c.owner.Boot, s.isMemberLocked(c.owner), c.epoch, c.placement, c.seq, c.total, c.current, s.flights[p] != nil))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// CheckCopyOwners reports a mismatch between the copies held and their
// count by owner, which repair trusts to skip walking every copy.
func (s *Store) CheckCopyOwners() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[wire.NodeID]int{}
	for _, c := range s.copies.all() {
		want[c.owner]++
	}
	if len(want) != len(s.copyOwners) {
		return fmt.Errorf("%s counts copies of %d owners, holds copies of %d: %v vs %v", s.view.Self().Name, len(s.copyOwners), len(want), s.copyOwners, want)
	}
	for o, n := range want {
		if s.copyOwners[o] != n {
			return fmt.Errorf("%s counts %d copies owned by %s/%d, holds %d", s.view.Self().Name, s.copyOwners[o], o.Name, o.Boot, n)
		}
	}
	return nil
}

// AdmitForTest makes ids members of s's roster, as if the cluster had
// agreed it, for tests of one Store without a cluster around it.
func (s *Store) AdmitForTest(ids ...wire.NodeID) {
	s.learnRoster(quorum.Apply(s.Roster(), quorum.Change{Admit: ids}))
}

// SetSpawnHook makes fn run as each goroutine of the Store is about to be
// started, so that a test can interleave Close there.
func (s *Store) SetSpawnHook(fn func()) { s.spawnHook = fn }

// PutCopy makes this node hold a keeper copy of player for owner, as a
// message whose reply was lost leaves behind.
func (s *Store) PutCopy(player string, owner wire.NodeID, epoch, seq uint64, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putCopyLocked(player, &keeperCopy{owner: owner, epoch: epoch, seq: seq, total: total})
}

// PlacementOrder ranks nodes for player as placement does.
func PlacementOrder(player string, nodes []string) []string {
	ids := make([]wire.NodeID, len(nodes))
	for i, n := range nodes {
		ids[i] = wire.NodeID{Name: n}
	}
	var out []string
	for _, id := range placementOrder(player, ids) {
		out = append(out, id.Name)
	}
	return out
}

// PlayerOf names the player a message is about, "" for none.
var PlayerOf = playerOf

// DirectoryComplete says whether every member of s's roster has listed its
// players with s (directory.go): s may then vouch that a player is new.
func (s *Store) DirectoryComplete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.directoryCompleteLocked()
}

// ArbiterOf is the member that arbitrates player's creation.
func ArbiterOf(player string, members []wire.NodeID) wire.NodeID { return arbiterOf(player, members) }
