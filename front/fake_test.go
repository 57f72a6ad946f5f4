package front

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/appnode/appnode/node"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
)

// fake is an in-memory Backend and Source: one node's view with the
// console's reward semantics, and the failures a test sets.
type fake struct {
	mu      sync.Mutex
	name    string
	totals  map[string]int64
	seen    map[string]int64 // idempotency key -> total it produced
	err     error            // every reward and read fails with it, if set
	health  node.Health
	events  []replica.Event
	subs    []chan replica.Event
	block   chan struct{} // rewards wait on it, if set
	drained chan struct{}
}

func newFake() *fake {
	return &fake{
		name:    "app_node1@host",
		totals:  map[string]int64{},
		seen:    map[string]int64{},
		health:  node.Health{Members: 3, Quorate: true},
		drained: make(chan struct{}),
	}
}

func (f *fake) Name() string { return f.name }

func (f *fake) RewardWhere(ctx context.Context, player, points, key string) (int64, string, string, error) {
	if err := replica.ValidatePlayer(player); err != nil {
		return 0, "", "", err
	}
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return 0, "", "", ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, "", "", f.err
	}
	n, notInt, err := replica.ParsePoints(points)
	if err != nil {
		return 0, "", "", err
	}
	if notInt != "" {
		return 0, "", "", wire.Errorf(wire.CodeCrashed, "%s: points %q is not an integer (primary restarted, state restored from keeper on app_node2@host)", player, notInt)
	}
	if t, ok := f.seen[key]; ok && key != "" {
		return t, f.name, "app_node2@host", nil
	}
	f.totals[player] += n
	if key != "" {
		f.seen[key] = f.totals[player]
	}
	f.publishLocked("INFO", player+" rewarded")
	return f.totals[player], f.name, "app_node2@host", nil
}

func (f *fake) Read(ctx context.Context, player string) (int64, string, string, error) {
	if err := replica.ValidatePlayer(player); err != nil {
		return 0, "", "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, "", "", f.err
	}
	t, ok := f.totals[player]
	if !ok {
		return 0, "", "", wire.Errorf(wire.CodeNotFound, "%s: no node holds this player", player)
	}
	return t, f.name, "app_node2@host", nil
}

func (f *fake) PlayersPage(ctx context.Context, node, cursor string, limit int) ([]wire.PageEntry, string, error) {
	if node != f.name {
		return nil, "", wire.Errorf(wire.CodeNotFound, "no live member is named %s", node)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for p := range f.totals {
		if p > cursor {
			names = append(names, p)
		}
	}
	sort.Strings(names)
	next := ""
	if len(names) > limit {
		names = names[:limit]
		next = names[limit-1]
	}
	var out []wire.PageEntry
	for _, p := range names {
		out = append(out, wire.PageEntry{Player: p, Total: f.totals[p], Keeper: "app_node2@host"})
	}
	return out, next, nil
}

func (f *fake) Cluster(ctx context.Context, timeout time.Duration) []node.MemberInfo {
	return []node.MemberInfo{
		{Name: f.name, Boot: 1, Addr: "127.0.0.1:1", State: "alive", Self: true, Primaries: len(f.totals), Quorate: true},
		{Name: "app_node2@host", Boot: 2, Addr: "127.0.0.1:2", State: "alive", Keepers: len(f.totals), Quorate: true},
		{Name: "app_node3@host", Boot: 3, Addr: "127.0.0.1:3", State: "down"},
	}
}

func (f *fake) Health() node.Health {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.health
}

func (f *fake) setHealth(h node.Health) {
	f.mu.Lock()
	f.health = h
	f.mu.Unlock()
}

func (f *fake) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fake) Subscribe(buf int) (<-chan replica.Event, func()) {
	ch := make(chan replica.Event, buf)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			for i, c := range f.subs {
				if c == ch {
					f.subs = append(f.subs[:i], f.subs[i+1:]...)
					close(ch)
					return
				}
			}
		})
	}
}

func (f *fake) publishLocked(level, text string) {
	e := replica.Event{Seq: uint64(len(f.events) + 1), Time: time.Now(), Level: replica.Level(level), Text: text}
	f.events = append(f.events, e)
	for _, c := range f.subs {
		select {
		case c <- e:
		default:
		}
	}
}

func (f *fake) publish(text string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishLocked("WARNING", text)
}

func (f *fake) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fake) EventsSince(seq uint64) ([]replica.Event, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []replica.Event
	for _, e := range f.events {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	return out, true
}

func (f *fake) Stats() replica.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return replica.Stats{Forwards: 3, Creates: uint64(len(f.totals)), Primaries: len(f.totals), Copies: 2, Members: f.health.Members, Cluster: 3, Quorate: f.health.Quorate, Directory: 4, DirectoryComplete: true}
}

func (f *fake) Unprotected() int { return 1 }

func (f *fake) Links() map[string]bool {
	return map[string]bool{"app_node2@host": true, "app_node3@host": false}
}
