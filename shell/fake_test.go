package shell

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/appnode/appnode/wire"
)

const selfName = "app_node1@host"

// fakeCluster is a whole cluster seen from app_node1@host, kept in memory.
// It behaves like the real one where the console can tell: rewards need a
// second node, points that are not integers crash the primary, and
// app_node2@host and app_node3@host are the only nodes that answer.
// Rewarding the player "panic" panics; connecting to "slow@host" waits for
// the deadline.
type fakeCluster struct {
	mu     sync.Mutex
	peers  []string         // connected nodes, sorted
	totals map[string]int64 // players whose primary runs here
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{totals: map[string]int64{}}
}

func (f *fakeCluster) Name() string { return selfName }

func (f *fakeCluster) Connect(ctx context.Context, target string) error {
	switch target {
	case "app_node2@host", "app_node3@host", "127.0.0.1:4370":
	case "slow@host":
		<-ctx.Done()
		return ctx.Err()
	default:
		return errors.New("connection refused")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.peers, target) {
		f.peers = append(f.peers, target)
		slices.Sort(f.peers)
	}
	return nil
}

func (f *fakeCluster) Reward(_ context.Context, player, points string) (int64, error) {
	if player == "panic" {
		panic("fake cluster exploded")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.peers) == 0 {
		return 0, wire.Errorf(wire.CodeTooFewNodes, "cannot reward %s: fewer than two live nodes", player)
	}
	n, err := strconv.ParseInt(points, 10, 64)
	if err != nil {
		return 0, wire.Errorf(wire.CodeCrashed, "%s: points %q is not an integer (primary restarted, state restored from keeper on %s)", player, points, f.peers[0])
	}
	f.totals[player] += n
	return f.totals[player], nil
}

func (f *fakeCluster) LocalPlayers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.totals))
}

func (f *fakeCluster) Nodes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers)
}

func (f *fakeCluster) Where(_ context.Context, player string) (owner, keeper string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.totals[player]; !ok {
		return "", "", nil
	}
	return selfName, f.peers[0], nil
}

// panicCluster panics in every method, as a buggy node might.
type panicCluster struct{}

func (panicCluster) Name() string                          { panic("boom") }
func (panicCluster) Connect(context.Context, string) error { panic("boom") }
func (panicCluster) Reward(context.Context, string, string) (int64, error) {
	panic(fmt.Errorf("boom"))
}
func (panicCluster) LocalPlayers() []string                                { panic("boom") }
func (panicCluster) Nodes() []string                                       { panic("boom") }
func (panicCluster) Where(context.Context, string) (string, string, error) { panic("boom") }

// HTTPURL makes the fake a node with a front door (shell.HTTPServer).
func (f *fakeCluster) HTTPURL() string { return "http://127.0.0.1:8080" }
