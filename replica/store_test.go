package replica_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

func code(err error) wire.Code {
	c, _ := wire.CodeOf(err)
	return c
}

// The walkthrough (connect, reward, the crash on "a", the same total from
// every node, a kill of the owner), on an in-process cluster.
func TestWalkthrough(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "player1", 5, 5)

	_, err := c.reward("n1", "player1", "a")
	if code(err) != wire.CodeCrashed {
		t.Fatalf("reward a: got %v, want a crash", err)
	}
	_, keeper := c.where("n1", "player1")
	if !strings.Contains(err.Error(), `points "a" is not an integer`) || !strings.Contains(err.Error(), "restored from keeper on "+keeper) {
		t.Fatalf("crash message %q does not say what happened", err)
	}
	c.mustReward("n1", "player1", 2, 7)
	if got := c.node("n1").store.LocalPlayers(); !reflect.DeepEqual(got, []string{"player1"}) {
		t.Fatalf("local_players at n1 = %v", got)
	}
	c.mustReward("n2", "player1", 3, 10)
	c.mustReward("n3", "player1", 0, 10)
	if got := c.node("n2").store.LocalPlayers(); len(got) != 0 {
		t.Fatalf("a forwarded request moved the player: n2 has %v", got)
	}

	c.kill("n1")
	c.mustReward("n2", "player1", 1, 11)
	c.sync()
	c.mustReward("n3", "player1", 1, 12)
}

func TestNewPlayerHasKeeperElsewhere(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	for _, p := range []string{"a", "b", "c", "d", "e", "f"} {
		c.mustReward("n2", p, 1, 1)
		owners, keepers := c.holders(p)
		if !reflect.DeepEqual(owners, []string{"n2"}) || len(keepers) != 1 || keepers[0] == "n2" {
			t.Fatalf("%s: owners %v keepers %v; want owner n2 and one keeper elsewhere", p, owners, keepers)
		}
	}
}

// A request reaching a node other than the dead owner's keeper: that node
// becomes the owner and restores from the keeper on another node.
func TestRestoreFromRemoteKeeper(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	_, keeper := c.where("n1", "p")
	other := "n2"
	if keeper == "n2" {
		other = "n3"
	}
	c.killQuietly("n1") // no hints: the request must find the dead owner
	c.mustReward(other, "p", 1, 6)
	// The request found n1 gone and the cluster agreed; the player was
	// restored from its keeper, by the node asked or by the keeper's own
	// repair (the agreement tells both at once).
	owners, keepers := c.holders("p")
	if len(owners) != 1 || len(keepers) != 1 || owners[0] == keepers[0] || (owners[0] != other && owners[0] != keeper) {
		t.Fatalf("owners %v keepers %v; want one owner among %s and %s, and a keeper elsewhere", owners, keepers, other, keeper)
	}
}

// A request reaching the keeper's own node: the keeper copy becomes the
// primary there, and a new keeper is placed on another node.
func TestRestoreFromLocalKeeper(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	_, keeper := c.where("n1", "p")
	c.kill("n1")
	c.mustReward(keeper, "p", 1, 6)
	owners, keepers := c.holders("p")
	if !reflect.DeepEqual(owners, []string{keeper}) || len(keepers) != 1 || keepers[0] == keeper {
		t.Fatalf("owners %v keepers %v; want owner %s and a new keeper elsewhere", owners, keepers, keeper)
	}
}

func TestTooFewNodes(t *testing.T) {
	c := newCluster(t, "n1")
	_, err := c.reward("n1", "p", 5)
	if code(err) != wire.CodeTooFewNodes {
		t.Fatalf("reward on a lone node: %v, want too few nodes", err)
	}
	if got := c.node("n1").store.LocalPlayers(); len(got) != 0 {
		t.Fatalf("a failed reward left a primary: %v", got)
	}

	c2 := newCluster(t, "a", "b")
	c2.mustReward("a", "p", 5, 5)
	c2.kill("b")
	c2.sync()
	if _, err := c2.reward("a", "p", 1); err == nil {
		t.Fatal("reward with one live node succeeded")
	}
	c2.start("b")
	c2.sync()
	testenv.WaitFor(t, 5*time.Second, "the keeper to be re-created on the new b", func() bool {
		_, k := c2.holders("p")
		return len(k) == 1
	})
	c2.mustReward("b", "p", 1, 6)
}

func TestBadInputChangesNothing(t *testing.T) {
	c := newCluster(t, "n1", "n2")
	c.mustReward("n1", "p", 9223372036854775800, 9223372036854775800)
	if _, err := c.reward("n1", "p", 100); code(err) != wire.CodeOverflow {
		t.Fatalf("overflowing reward: %v, want overflow", err)
	}
	if _, err := c.reward("n1", "p", "99999999999999999999"); code(err) != wire.CodeOverflow {
		t.Fatalf("points beyond int64: %v, want overflow", err)
	}
	for _, bad := range []string{"", strings.Repeat("x", 200), "a\x00b", "\xff"} {
		if _, err := c.reward("n1", bad, 1); code(err) != wire.CodeBadRequest {
			t.Fatalf("player %q: %v, want bad request", bad, err)
		}
	}
	c.mustReward("n2", "p", -800, 9223372036854775000)
}

// The owner keeps the player at two copies when its keeper dies.
func TestKeeperRecreatedWhenItsNodeDies(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	_, keeper := c.where("n1", "p")
	c.kill(keeper)
	c.sync()
	testenv.WaitFor(t, 5*time.Second, "a new keeper", func() bool {
		_, k := c.holders("p")
		return len(k) == 1 && k[0] != keeper
	})
	c.mustReward("n1", "p", 1, 6)
}

// An orphaned keeper promotes itself without waiting for a request.
func TestOrphanedKeeperTakesOver(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	_, keeper := c.where("n1", "p")
	c.kill("n1")
	c.sync()
	testenv.WaitFor(t, 5*time.Second, "the keeper to take over with a new keeper", func() bool {
		o, k := c.holders("p")
		return reflect.DeepEqual(o, []string{keeper}) && len(k) == 1
	})
	for _, n := range c.names() {
		c.mustReward(n, "p", 0, 5)
	}
}

// A paused owner that the cluster declared failed must not acknowledge
// anything after it resumes, and must come back clean.
func TestPausedOwnerIsFenced(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	c.net.Pause("n1")
	c.view("n2", "n2", "n3")
	c.view("n3", "n2", "n3")
	c.waitRemoved("n1", "n2", "n3")
	// The survivors serve the player from its keeper.
	c.mustReward("n2", "p", 1, 6)
	oldID := c.node("n1").ID()
	c.net.Resume("n1")
	// n1 still believes it owns p; its write must be refused, and the
	// answer must be the cluster's, not n1's stale total.
	want := int64(6)
	got, err := c.reward("n1", "p", 1)
	if err == nil {
		if got != 7 {
			t.Fatalf("resumed stale owner answered %d, want 7 or an error", got)
		}
		want = 7
	}
	testenv.WaitFor(t, 5*time.Second, "n1 to come back as a new incarnation", func() bool {
		return c.node("n1").store.Self() != oldID
	})
	c.sync()
	c.waitRoster()
	for _, n := range c.names() {
		c.mustReward(n, "p", 0, want)
	}
	if o, _ := c.holders("p"); len(o) != 1 {
		t.Fatalf("owners after the pause: %v, want exactly one", o)
	}
}

// A paused keeper is replaced once the cluster declares it failed, and the
// owner keeps acknowledging rewards; when the keeper comes back with
// nothing, nothing is lost.
func TestPausedKeeperIsReplaced(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 1000, 1000)
	_, keeper := c.where("n1", "p")
	var rest []string
	for _, n := range c.names() {
		if n != keeper {
			rest = append(rest, n)
		}
	}
	oldKeeper := c.node(keeper).ID()
	c.net.Pause(keeper)
	done := make(chan error, 1)
	go func() {
		// Blocks on the paused keeper until the cluster gives up on it.
		_, err := c.reward("n1", "p", 1)
		done <- err
	}()
	// The keeper is declared failed while the replication waits on it,
	// well within the call timeout: the owner must give up on it at once
	// and place a new keeper, not time out.
	testenv.WaitFor(t, 5*time.Second, "the reward's replication to wait on the paused keeper", func() bool {
		return c.net.Stuck() > 0
	})
	for _, n := range rest {
		c.view(n, rest...)
	}
	if err := <-done; err != nil {
		t.Fatalf("reward while the keeper was paused and then declared failed: %v", err)
	}
	c.mustReward("n1", "p", 1, 1002)
	c.net.Resume(keeper)
	c.sync()
	testenv.WaitFor(t, 5*time.Second, "the paused keeper to rejoin as a new incarnation", func() bool {
		return c.node(keeper).store.Self() != oldKeeper
	})
	c.sync()
	c.waitRoster() // admitted: the new incarnation serves
	if o, k := c.holders("p"); len(o) != 1 || len(k) != 1 || o[0] == k[0] {
		t.Fatalf("after the keeper's return: primaries %v keepers %v", o, k)
	}
	for _, n := range c.names() {
		c.mustReward(n, "p", 1, 1003+int64(indexOf(c.names(), n)))
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// A new keeper gets every request the player remembers, plus the one that
// found the old keeper gone, and no more than a message may carry: after
// hundreds of rewards, losing the keeper in the middle of one still works.
func TestKeeperLostMidRewardAfterManyRewards(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	for i := 1; i <= 300; i++ {
		c.mustReward("n1", "p", 1, int64(i))
	}
	owner, keeper := c.where("n1", "p")
	if owner != "n1" {
		t.Fatalf("owner of p is %s, want n1 where it arrived", owner)
	}
	c.killQuietly(keeper) // no hint: the next reward finds it gone
	c.mustReward("n1", "p", 1, 301)
	if _, k := c.where("n1", "p"); k == keeper || k == "" {
		t.Fatalf("keeper of p is %q after %s died", k, keeper)
	}
}
