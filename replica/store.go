// Package replica keeps players alive: one primary per player, serialising
// its updates, and a keeper (backup copy) on another node, written before
// any update is acknowledged. It knows nothing of Serf, TCP or the console:
// the node package feeds it the live membership (SetMembers, LinkDown),
// delivers peer messages to Handle, and carries its calls through Network.
//
// Safety rests on three rules:
//   - ownership changes only through a keeper, which grants a claim only
//     when the current owner is dead (or is the claimant itself), and bumps
//     the player's epoch when it does; a keeper accepts writes only from its
//     recorded owner at its recorded epoch, so a superseded primary can
//     never have a write acknowledged;
//   - an incarnation that the majority declared failed is tombstoned: every
//     node refuses its messages, and it must drop its state and come back
//     with a new boot id (Reset);
//   - a node that does not see a strict majority of the membership it last
//     agreed on serves nothing.
package replica

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appnode/appnode/wire"
)

// Network is how a Store reaches its peers.
type Network interface {
	// Call sends m to the incarnation `to` and waits for the reply. An error
	// wrapping wire.ErrGone is proof that `to` no longer exists and that m
	// was not delivered; a *wire.Error is the peer's answer; any other error
	// leaves the outcome unknown.
	Call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error)
}

// Level says how loudly an event should be shown.
type Level string

const (
	Info    Level = "INFO"
	Warning Level = "WARNING"
	Error   Level = "ERROR"
)

// Event is something a person watching the node should see.
type Event struct {
	Level Level
	Text  string
}

// Config wires a Store.
type Config struct {
	Self wire.NodeID
	Net  Network
	// OnEvent receives events; it must not block (the node drops events
	// when the console falls behind). May be nil.
	OnEvent func(Event)
	// CallTimeout bounds each call to a peer. A keeper that does not
	// answer within it fails the reward with a retryable error rather than
	// stalling the player. Default 2 s.
	CallTimeout time.Duration
	// Logf receives diagnostics. May be nil.
	Logf func(format string, args ...any)
	// Observer receives the reward path's timings, for metrics. May be
	// nil.
	Observer Observer
	// OnDeclaredDead is called when a peer says that dead, an incarnation
	// of this node, was declared failed. If dead is still the current one,
	// the node must take a new boot id and call Reset. It must not block.
	// May be nil.
	OnDeclaredDead func(dead wire.NodeID)
}

// maxTombstones bounds the memory of dead incarnations. Only one that
// comes back (a paused process) needs to be remembered, and only until it
// does; thousands cover any realistic churn.
const maxTombstones = 4096

// Store is one node's share of the players: the primaries it owns and the
// keeper copies it holds for others.
type Store struct {
	cfg    Config
	ctx    context.Context // ends at Close; bounds background work
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // wakes the repair loop
	reqSeq atomic.Uint64 // numbers the rewards entering here (wire.ReqID)
	runq   chan *primary // primaries with mail, for idle workers
	count  counters

	mu      sync.Mutex
	self    wire.NodeID
	alive   map[string]wire.NodeID // live members by name, self included, tombstoned excluded
	cluster map[string]wire.NodeID // the membership quorum is counted against, last incarnations
	quorate bool
	// confirming: a member was lost and quorum is being confirmed; rewards
	// wait (retryably) rather than fail. confirmWanted: confirm must run.
	confirming, confirmWanted bool
	viewGen                   uint64 // counts membership changes
	leaving                   bool
	tombs                     map[wire.NodeID]bool
	tombOrder                 []wire.NodeID
	primaries                 playerTable[*primary]
	copies                    playerTable[*keeperCopy]
	// copyOwners counts the copies by owner, so that repair can tell at a
	// glance whether any copy is orphaned (or half promoted: owned by this
	// node) without walking a million of them. Changed only through
	// putCopyLocked, dropCopyLocked and setCopyOwnerLocked.
	copyOwners map[wire.NodeID]int
	routes     map[string]wire.NodeID // player -> owner, learned; a hint, checked by the owner
	flights    map[string]*flight     // activations in progress on this node
}

// keeperCopy is the backup of a player owned by another node.
type keeperCopy struct {
	owner  wire.NodeID
	epoch  uint64
	seq    uint64
	total  int64
	recent dedup
}

func (s *Store) putCopyLocked(player string, c *keeperCopy) {
	if old := s.copies.get(player); old != nil {
		s.uncountCopyLocked(old.owner)
	}
	s.copies.put(player, c)
	s.copyOwners[c.owner]++
}

func (s *Store) dropCopyLocked(player string) {
	if c := s.copies.get(player); c != nil {
		s.uncountCopyLocked(c.owner)
		s.copies.del(player)
	}
}

// setCopyOwnerLocked changes the owner of c, a copy held in s.copies.
func (s *Store) setCopyOwnerLocked(c *keeperCopy, owner wire.NodeID) {
	s.uncountCopyLocked(c.owner)
	c.owner = owner
	s.copyOwners[owner]++
}

func (s *Store) uncountCopyLocked(owner wire.NodeID) {
	if s.copyOwners[owner]--; s.copyOwners[owner] <= 0 {
		delete(s.copyOwners, owner)
	}
}

// orphansLikelyLocked says whether some copy here may be orphaned: its
// owner is not alive, or is this node (a promotion not finished).
func (s *Store) orphansLikelyLocked() bool {
	for owner := range s.copyOwners {
		if owner == s.self || !s.isAliveLocked(owner) {
			return true
		}
	}
	return false
}

// flight is one activation of a player on this node; concurrent requests
// for the same player wait for it instead of racing it.
type flight struct {
	done  chan struct{}
	owner wire.NodeID
	err   error
}

// New starts a Store. Until SetMembers is called it sees only itself.
func New(cfg Config) *Store {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:        cfg,
		ctx:        ctx,
		cancel:     cancel,
		kick:       make(chan struct{}, 1),
		runq:       make(chan *primary),
		self:       cfg.Self,
		alive:      map[string]wire.NodeID{cfg.Self.Name: cfg.Self},
		cluster:    map[string]wire.NodeID{cfg.Self.Name: cfg.Self},
		quorate:    true,
		tombs:      map[wire.NodeID]bool{},
		copyOwners: map[wire.NodeID]int{},
		routes:     map[string]wire.NodeID{},
		flights:    map[string]*flight{},
	}
	s.wg.Add(1)
	go s.repairLoop()
	return s
}

// Close stops every primary and background task. It does not hand anything
// off: use Leave first for a graceful exit.
func (s *Store) Close() {
	s.cancel()
	s.mu.Lock()
	prims := s.primaryList()
	s.mu.Unlock()
	for _, p := range prims {
		p.stopAndWait()
	}
	s.wg.Wait()
}

// Self returns this node's current incarnation.
func (s *Store) Self() wire.NodeID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.self
}

func (s *Store) emit(level Level, format string, args ...any) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(Event{Level: level, Text: fmt.Sprintf(format, args...)})
	}
}

func (s *Store) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// ---- membership ----

// SetMembers tells the Store which incarnations are alive (self included or
// not). Called by the node on every membership change.
func (s *Store) SetMembers(members []wire.NodeID) {
	s.mu.Lock()
	next := make(map[string]wire.NodeID, len(members)+1)
	var zombies []wire.NodeID
	for _, id := range members {
		if id.Name == s.self.Name {
			continue
		}
		if s.tombs[id] {
			if s.quorate {
				zombies = append(zombies, id)
			}
			continue
		}
		if cur, ok := s.alive[id.Name]; ok && cur.Boot > id.Boot {
			// Boot ids grow with each start: a lower one is an older
			// process whose news arrived late.
			continue
		}
		next[id.Name] = id
	}
	next[s.self.Name] = s.self
	s.applyAliveLocked(next)
	s.mu.Unlock()
	s.noticeZombies(zombies)
	s.kickRepair()
}

// LinkDown is a hint that the connection to peer broke: check at once
// whether it is really gone (a refused connection is proof), instead of
// waiting seconds for the failure detector.
func (s *Store) LinkDown(peer wire.NodeID) {
	if s.ctx.Err() != nil {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
		defer cancel()
		if _, err := s.cfg.Net.Call(ctx, peer, &wire.Ping{}); errors.Is(err, wire.ErrGone) {
			s.declareDead(peer, "its connection closed and it refuses new ones")
		}
	}()
}

// declareDead records proof that incarnation id no longer exists.
func (s *Store) declareDead(id wire.NodeID, why string) {
	s.mu.Lock()
	if s.tombs[id] || id == s.self {
		s.mu.Unlock()
		return
	}
	s.tombstoneLocked(id)
	if cur, ok := s.alive[id.Name]; !ok || cur == id {
		// A dead process cannot be serving on the far side of a
		// partition, so unlike a silent member it leaves the membership
		// that quorum is counted against even when this node is not in
		// the majority: a two-node cluster whose peer was killed can
		// grow again when a node joins.
		delete(s.cluster, id.Name)
		next := make(map[string]wire.NodeID, len(s.alive))
		for n, m := range s.alive {
			if n != id.Name {
				next[n] = m
			}
		}
		s.applyAliveLocked(next)
	}
	s.mu.Unlock()
	s.logf("replica: %s is down: %s", id.Name, why)
	s.kickRepair()
}

// applyAliveLocked installs a new live set and recomputes quorum: the node
// serves only while it sees a strict majority of the membership it last
// agreed on (cluster). Growth is taken at once. A member missing from the
// view is another matter: a node that is itself being cut off often hears
// of its peers' failures one at a time, and would briefly think it holds a
// majority. So a loss suspends serving until confirm has reached a majority
// of the cluster over the transport; only then are the missing members
// tombstoned and the cluster shrunk, so that failures detected one after
// another keep the cluster serving down to two nodes.
func (s *Store) applyAliveLocked(next map[string]wire.NodeID) {
	for name, old := range s.alive {
		if cur, ok := next[name]; ok && cur.Boot > old.Boot {
			// Same name, new boot: the old process is gone for certain.
			s.tombstoneLocked(old)
		}
	}
	s.alive = next
	for p, owner := range s.routes {
		if !s.isAliveLocked(owner) {
			delete(s.routes, p)
		}
	}
	missing := false
	for name := range s.cluster {
		if _, ok := next[name]; !ok {
			missing = true
		}
	}
	s.viewGen++
	if s.quorate && !missing {
		for name, id := range next {
			s.cluster[name] = id
		}
		return
	}
	if s.quorate {
		s.confirming = true
	}
	s.quorate = false
	s.confirmWanted = true
}

// orphansLikely is orphansLikelyLocked for the repair loop.
func (s *Store) orphansLikely() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.orphansLikelyLocked()
}

// confirmPending says whether a loss of members awaits confirm.
func (s *Store) confirmPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.confirmWanted
}

// confirm decides quorum after a change that lost members (or while the
// node is in a minority): it pings every live peer and counts the members
// of the cluster that answer. It runs on the repair loop.
func (s *Store) confirm() {
	s.mu.Lock()
	if !s.confirmWanted {
		s.mu.Unlock()
		return
	}
	gen := s.viewGen
	peers := s.peersLocked()
	clusterSize := len(s.cluster)
	inCluster := make(map[string]bool, len(s.cluster))
	for name := range s.cluster {
		inCluster[name] = true
	}
	self := s.self
	s.mu.Unlock()

	answered := make([]bool, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.call(s.ctx, peer, &wire.Ping{})
			answered[i] = err == nil
		}()
	}
	wg.Wait()
	reached := 0
	if inCluster[self.Name] {
		reached++
	}
	for i, peer := range peers {
		if answered[i] && inCluster[peer.Name] {
			reached++
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.viewGen != gen || s.self != self {
		return // the view moved on: the next round decides
	}
	was := s.quorate || s.confirming
	s.confirmWanted = false
	s.confirming = false
	if 2*reached <= clusterSize {
		if was {
			s.emit(Warning, "lost the majority: this node reaches %d of the %d members it last agreed on; rewards are refused until the cluster heals", reached, clusterSize)
		}
		s.confirmWanted = true // keep trying on every repair tick
		return
	}
	for name, id := range s.cluster {
		if _, ok := s.alive[name]; !ok {
			s.tombstoneLocked(id)
			delete(s.cluster, name)
		}
	}
	for name, id := range s.alive {
		s.cluster[name] = id
	}
	s.quorate = true
	if !was {
		s.emit(Info, "majority regained: serving again with %d live members", len(s.alive))
	}
}

func (s *Store) tombstoneLocked(id wire.NodeID) {
	if s.tombs[id] {
		return
	}
	s.tombs[id] = true
	// Replications waiting on the dead keeper give up now, rather than
	// wait out their timeout. They are looked for a table shard at a time
	// by a goroutine, not here under the lock held over every primary
	// (60 ms at a third of a million): one that starts meanwhile finds
	// the tombstone itself (see replicate).
	if s.ctx.Err() == nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.abandonReplications(id)
		}()
	}
	s.tombOrder = append(s.tombOrder, id)
	if len(s.tombOrder) > maxTombstones {
		delete(s.tombs, s.tombOrder[0])
		s.tombOrder = s.tombOrder[1:]
	}
}

// abandonReplications cuts short the replications in flight to keeper.
func (s *Store) abandonReplications(keeper wire.NodeID) {
	for i := range tableShards {
		s.mu.Lock()
		for _, p := range s.primaries.shard(i) {
			p.mu.Lock()
			if p.act != nil && p.st.keeper == keeper {
				p.act.keeperFailed()
			}
			p.mu.Unlock()
		}
		s.mu.Unlock()
	}
}

// Fenced reports whether id was declared failed: its messages are refused
// and it must come back as a new incarnation.
func (s *Store) Fenced(id wire.NodeID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tombs[id]
}

func (s *Store) isAliveLocked(id wire.NodeID) bool {
	cur, ok := s.alive[id.Name]
	return ok && cur == id
}

// membersLocked returns the live members, self included, sorted by name.
func (s *Store) membersLocked() []wire.NodeID {
	out := make([]wire.NodeID, 0, len(s.alive))
	for _, id := range s.alive {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Store) checkServingLocked() error {
	if s.confirming {
		return wire.Errorf(wire.CodeBusy, "a member was just lost; confirming this node is still in the majority")
	}
	if !s.quorate {
		seen := 0
		for name := range s.cluster {
			if _, ok := s.alive[name]; ok {
				seen++
			}
		}
		return wire.Errorf(wire.CodeNoQuorum, "this node sees only %d of the %d cluster members (partition or failures); it refuses rewards until the majority is reachable again", seen, len(s.cluster))
	}
	if s.leaving {
		return wire.Errorf(wire.CodeBusy, "this node is leaving the cluster")
	}
	return nil
}

// Reset drops everything this node held and takes the new incarnation
// newSelf. The node calls it when a peer says this incarnation was declared
// failed (it was paused or cut off): what it held has since been taken over
// elsewhere, and keeping it could only produce stale answers.
func (s *Store) Reset(newSelf wire.NodeID) {
	s.mu.Lock()
	prims := s.primaryList()
	nCopies := s.copies.len()
	old := s.self
	s.self = newSelf
	s.primaries = playerTable[*primary]{}
	s.copies = playerTable[*keeperCopy]{}
	s.copyOwners = map[wire.NodeID]int{}
	s.routes = map[string]wire.NodeID{}
	s.alive = map[string]wire.NodeID{newSelf.Name: newSelf}
	s.cluster = map[string]wire.NodeID{newSelf.Name: newSelf}
	s.quorate = true
	s.confirming, s.confirmWanted = false, false
	s.mu.Unlock()
	for _, p := range prims {
		p.stopAndWait()
	}
	s.emit(Warning, "this node (boot %x) was declared failed by the cluster while paused or cut off; dropped %d primaries and %d keeper copies, rejoining as a new incarnation (boot %x)", old.Boot, len(prims), nCopies, newSelf.Boot)
}

// ---- queries ----

// LocalPlayers returns the players whose primary runs here, sorted.
func (s *Store) LocalPlayers() []string {
	s.mu.Lock()
	out := make([]string, 0, s.primaries.len())
	for name := range s.primaries.all() {
		out = append(out, name)
	}
	s.mu.Unlock()
	sort.Strings(out)
	return out
}

// Counts returns how many primaries and keeper copies this node holds.
func (s *Store) Counts() (primaries, copies int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primaries.len(), s.copies.len()
}

// Where reports the owner and keeper of player, asking the cluster if this
// node holds neither. A zero owner means the player is unknown.
func (s *Store) Where(ctx context.Context, player string) (owner, keeper wire.NodeID, err error) {
	if err := ValidatePlayer(player); err != nil {
		return owner, keeper, err
	}
	s.mu.Lock()
	if p := s.primaries.get(player); p != nil {
		st := p.snapshot()
		s.mu.Unlock()
		return s.Self(), st.keeper, nil
	}
	if c := s.copies.get(player); c != nil {
		defer s.mu.Unlock()
		return c.owner, s.self, nil
	}
	peers := s.peersLocked()
	s.mu.Unlock()
	replies, err := s.whereAll(ctx, player, peers)
	if err != nil {
		return owner, keeper, err
	}
	for _, r := range replies {
		switch r.reply.Role {
		case wire.RolePrimary:
			return r.from, r.reply.Keeper, nil
		case wire.RoleKeeper:
			owner, keeper = r.reply.Owner, r.from
		}
	}
	return owner, keeper, nil
}

func (s *Store) peersLocked() []wire.NodeID {
	out := make([]wire.NodeID, 0, len(s.alive))
	for _, id := range s.membersLocked() {
		if id.Name != s.self.Name {
			out = append(out, id)
		}
	}
	return out
}

func (s *Store) primaryList() []*primary {
	out := make([]*primary, 0, s.primaries.len())
	for _, p := range s.primaries.all() {
		out = append(out, p)
	}
	return out
}

func (s *Store) call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error) {
	ctx, cancel := withTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	self := s.Self()
	rep, err := s.cfg.Net.Call(ctx, to, m)
	if code, ok := wire.CodeOf(err); ok && code == wire.CodeDeclaredDead {
		s.declaredDead(self)
	}
	return rep, err
}

// withTimeout bounds ctx by d, without a new timer when ctx already ends
// sooner: on the reward path every call would otherwise allocate one.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

func (s *Store) declaredDead(dead wire.NodeID) {
	if s.cfg.OnDeclaredDead != nil {
		s.cfg.OnDeclaredDead(dead)
	}
}

// noticeZombies tells incarnations that are tombstoned here but still
// gossiped as alive (they were paused or cut off and came back) that they
// must rejoin clean. Without it such a node could sit on stale copies until
// it happens to call someone.
func (s *Store) noticeZombies(zombies []wire.NodeID) {
	if s.ctx.Err() != nil {
		return
	}
	for _, z := range zombies {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
			defer cancel()
			_, _ = s.cfg.Net.Call(ctx, z, &wire.DeclaredDead{Target: z})
		}()
	}
}

func (s *Store) kickRepair() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Role reports what this node holds for player, without asking anyone.
func (s *Store) Role(player string) wire.Role {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.primaries.get(player) != nil:
		return wire.RolePrimary
	case s.copies.get(player) != nil:
		return wire.RoleKeeper
	}
	return wire.RoleNone
}

// Describe summarises this node's view for diagnostics.
func (s *Store) Describe() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var alive, cluster []string
	for _, id := range s.membersLocked() {
		alive = append(alive, fmt.Sprintf("%s/%x", id.Name, id.Boot))
	}
	for name := range s.cluster {
		cluster = append(cluster, name)
	}
	sort.Strings(cluster)
	return fmt.Sprintf("self %s/%x alive %v cluster %v quorate %v primaries %d copies %d tombstones %d",
		s.self.Name, s.self.Boot, alive, cluster, s.quorate, s.primaries.len(), s.copies.len(), len(s.tombs))
}
