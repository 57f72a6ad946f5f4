package replica

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appnode/appnode/quorum"
	"github.com/appnode/appnode/wire"
)

// Config wires a Store. Start from DefaultConfig.
type Config struct {
	Self wire.NodeID // this node's incarnation (required)
	Net  Network     // how to reach peers (required)
	// OnEvent receives events; it must not block (the node drops events
	// when the console falls behind). May be nil.
	OnEvent func(Event)
	// CallTimeout bounds each call to a peer. A keeper that does not
	// answer within it fails the reward with an "unknown outcome" error
	// rather than stalling the player; a shorter one fails over sooner
	// from a paused keeper, and gives up sooner on a slow one.
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
	// Clock runs the Store's own timers (repair, idle workers, backoff).
	Clock Clock
	// Rand draws the backoff jitter and a new cluster's id. A seeded
	// source (rand.NewPCG) makes them replay; nil seeds one at random.
	Rand rand.Source
	// Disk keeps this node's vote on the roster across restarts under
	// its name. Nil keeps it in memory (MemDisk): a node restarted without
	// it cannot vote on the change that admits it back, so a cluster of
	// two that loses one such node cannot change its roster until it
	// returns.
	Disk Disk
}

// DefaultCallTimeout is Config.CallTimeout unless set.
const DefaultCallTimeout = 2 * time.Second

// DefaultConfig is the configuration of the Store of self, reaching its
// peers through net, with every knob at its default.
func DefaultConfig(self wire.NodeID, net Network) Config {
	return Config{Self: self, Net: net, CallTimeout: DefaultCallTimeout, Clock: RealClock{}}
}

// Validate says what is missing or wrong in c.
func (c Config) Validate() error {
	switch {
	case c.Self.IsZero():
		return errors.New("replica: Config.Self is required")
	case c.Self.Boot == 0:
		return fmt.Errorf("replica: Config.Self %s needs a boot id", c.Self.Name)
	case c.Net == nil:
		return errors.New("replica: Config.Net is required")
	case c.CallTimeout <= 0:
		return fmt.Errorf("replica: Config.CallTimeout must be positive, not %v", c.CallTimeout)
	case c.Clock == nil:
		return errors.New("replica: Config.Clock is required (RealClock{} outside tests)")
	}
	return nil
}

// Store is one node's share of the players: the primaries it owns and the
// keeper copies it holds for others.
type Store struct {
	cfg    Config
	ctx    context.Context // ends at Close; bounds background work
	cancel context.CancelFunc
	// wg counts the Store's goroutines; only spawn adds to it, under
	// spawnMu, so that none starts once Close waits (a leaf lock: nothing
	// is acquired under it).
	wg      sync.WaitGroup
	spawnMu sync.Mutex
	closing bool
	// spawnHook, set only by tests, runs as spawn begins: where a Close
	// racing the hint that starts a goroutine can interleave.
	spawnHook func()
	kick      chan struct{} // wakes the repair loop
	reqSeq    atomic.Uint64 // numbers the rewards entering here (wire.ReqID)
	runq      chan *primary // primaries with mail, for idle workers
	count     counters
	rand      *lockedRand // backoff jitter, from Config.Rand
	born      time.Time   // Store.now counts from it

	mu      sync.Mutex
	view    View // membership and quorum
	leaving bool
	// The roster: this node's vote (kept on disk), and the hints the
	// roster loop turns into proposals.
	acc          quorum.Acceptor
	disk         Disk
	ballotN      uint64
	suspects     map[wire.NodeID]bool // members that may be down
	admit        map[wire.NodeID]bool // nodes that asked to be admitted
	joiningUntil time.Time            // this node asked a cluster to admit it; see joinWindow
	refusedJoin  map[string]string    // why a node refused to admit this one
	catchingUp   map[string]bool      // senders asked for their roster now
	rosterKick   chan struct{}
	dirKick      chan struct{} // wakes the directory loop
	dir          directory     // the players this node arbitrates (directory.go)
	primaries    playerTable[*primary]
	copies       playerTable[*keeperCopy]
	// copyOwners counts the copies by owner, so that repair can tell at a
	// glance whether any copy is orphaned (or half promoted: owned by this
	// node) without walking a million of them. Changed only through
	// putCopyLocked, dropCopyLocked and setCopyOwnerLocked.
	copyOwners map[wire.NodeID]int
	// unconfirmed holds the players whose copy here names an owner that
	// has not yet shown it runs the primary (by a Replicate, or by
	// answering repair's question): the message that made it the owner (a
	// claim's grant, an Adopt) may have lost its reply, leaving a copy
	// that names a live owner which runs no primary. Repair checks them.
	// Empty at rest.
	unconfirmed map[string]struct{}
	routes      map[string]wire.NodeID // player -> owner, learned; a hint, checked by the owner
	flights     map[string]*flight     // activations in progress on this node
}

// New starts a Store. Until SetMembers is called it sees only itself. It
// takes up the roster vote on its Disk, if there is one (a restart under
// its name); else it starts a cluster of its own.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	disk := cfg.Disk
	if disk == nil {
		disk = &MemDisk{}
	}
	rnd := newLockedRand(cfg.Rand)
	acc, ok, err := disk.Load()
	if err != nil {
		return nil, fmt.Errorf("replica: load this node's roster vote: %w", err)
	}
	if !ok {
		// A cluster of its own, until it joins another or others join it.
		acc = quorum.Acceptor{Roster: quorum.New(rnd.uint64(), cfg.Self)}
		if err := disk.Save(acc); err != nil {
			return nil, fmt.Errorf("replica: save this node's roster vote: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:         cfg,
		ctx:         ctx,
		cancel:      cancel,
		kick:        make(chan struct{}, 1),
		runq:        make(chan *primary),
		view:        NewView(cfg.Self, acc.Roster),
		acc:         acc,
		disk:        disk,
		suspects:    map[wire.NodeID]bool{},
		admit:       map[wire.NodeID]bool{},
		refusedJoin: map[string]string{},
		catchingUp:  map[string]bool{},
		rosterKick:  make(chan struct{}, 1),
		dirKick:     make(chan struct{}, 1),
		copyOwners:  map[wire.NodeID]int{},
		routes:      map[string]wire.NodeID{},
		flights:     map[string]*flight{},
		unconfirmed: map[string]struct{}{},
		rand:        rnd,
		born:        cfg.Clock.Now(),
	}
	s.spawn(s.repairLoop)
	s.spawn(s.rosterLoop)
	s.spawn(s.directoryLoop)
	return s, nil
}

// spawn runs fn on a goroutine of the Store, which Close waits for, and
// reports whether it did: once Close began, it starts nothing. It is the
// only way the Store starts a goroutine that outlives the call that
// starts it; fn must return soon after s.ctx ends.
func (s *Store) spawn(fn func()) bool {
	if s.spawnHook != nil {
		s.spawnHook()
	}
	s.spawnMu.Lock()
	defer s.spawnMu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

// Close stops every primary and background task. It does not hand anything
// off: use Leave first for a graceful exit.
func (s *Store) Close() {
	s.spawnMu.Lock()
	s.closing = true
	s.spawnMu.Unlock()
	s.cancel()
	s.mu.Lock()
	prims := s.primaryList()
	s.mu.Unlock()
	for _, p := range prims {
		p.stopAndWait()
	}
	s.wg.Wait()
}

// now reads the Store's clock as nanoseconds since the Store started: the
// times its records of applied requests keep (dedupRing.since).
func (s *Store) now() int64 { return int64(s.cfg.Clock.Now().Sub(s.born)) }

// Self returns this node's current incarnation.
func (s *Store) Self() wire.NodeID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view.Self()
}

func (s *Store) emit(level Level, format string, args ...any) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(Event{Time: s.cfg.Clock.Now(), Level: level, Text: fmt.Sprintf(format, args...)})
	}
}

func (s *Store) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// ---- membership ----

// Reset drops everything this node held and takes the new incarnation
// newSelf. The node calls it when a peer says this incarnation was declared
// failed (it was paused or cut off): what it held has since been taken over
// elsewhere, and keeping it could only produce stale answers.
func (s *Store) Reset(newSelf wire.NodeID) {
	s.mu.Lock()
	prims := s.primaryList()
	nCopies := s.copies.len()
	old := s.view.Self()
	s.view.Reset(newSelf)
	s.primaries = playerTable[*primary]{}
	s.copies = playerTable[*keeperCopy]{}
	s.copyOwners = map[wire.NodeID]int{}
	s.unconfirmed = map[string]struct{}{}
	s.routes = map[string]wire.NodeID{}
	s.dir = directory{} // the new incarnation has told no one anything
	s.mu.Unlock()
	s.kickDirectory()
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

func (s *Store) primaryList() []*primary {
	out := make([]*primary, 0, s.primaries.len())
	for _, p := range s.primaries.all() {
		out = append(out, p)
	}
	return out
}

func (s *Store) kickRepair() { wake(s.kick) }

// wake makes a loop waiting on ch (capacity 1) run once more: a wake-up
// already pending covers this one.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
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
	var alive []string
	for _, id := range s.membersLocked() {
		alive = append(alive, fmt.Sprintf("%s/%x", id.Name, id.Boot))
	}
	self := s.view.Self()
	r := s.view.Roster()
	return fmt.Sprintf("self %s/%x roster %d %v quorate %v primaries %d copies %d dead %d directory %d complete %v",
		self.Name, self.Boot, r.Epoch, alive, s.view.Quorate(), s.primaries.len(), s.copies.len(), len(r.Dead), len(s.dir.listed), s.directoryCompleteLocked())
}

// removePrimary unregisters p if it is still the registered primary.
func (s *Store) removePrimary(p *primary) {
	s.mu.Lock()
	if s.primaries.get(p.player) == p {
		s.primaries.del(p.player)
	}
	s.mu.Unlock()
}
