package replica_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
)

func isMsg[M wire.Msg](m wire.Msg) bool { _, ok := m.(M); return ok }

// requireRedundant fails unless player gets one primary and a keeper
// copy on another live node naming it within a few seconds, with no
// request to prompt it (repair alone), and still holds total.
func requireRedundant(t *testing.T, c *cluster, player string, total int64) {
	t.Helper()
	if !c.waitRedundant([]string{player}, 5*time.Second) {
		for _, n := range c.names() {
			t.Logf("%s: %s; copies %s", n, c.node(n).store.Describe(), c.node(n).store.DebugCopies())
		}
		owners, keepers := c.holders(player)
		t.Fatalf("%s: primaries %v, keepers %v: two copies were not restored within 5 s", player, owners, keepers)
	}
	owners, _ := c.holders(player)
	c.mustReward(owners[0], player, 0, total)
}

// Issue 11, item 3: the promoting keeper's Adopt reaches the new keeper
// but its reply is lost. The two copies are then identical; the one held
// by the node it names as owner is a promotion half done, which that node
// must finish, not drop.
func TestPromotionWithLostAdoptReply(t *testing.T) {
	c := newCluster(t, "n2", "n3")
	c.mustReward("n2", "p", 5, 5) // primary on n2, keeper on n3
	c.start("n1")
	c.sync()
	c.waitRoster() // n1 is a member: n1 and n3 are a majority once n2 dies
	c.net.LoseNextReply("n3", "n1", isMsg[*wire.Adopt])
	c.kill("n2")
	c.sync()
	requireRedundant(t, c, "p", 5)
}

// Issue 11, item 3, the class: a keeper copy whose named owner is alive
// but runs no primary must be repaired. Here the supervisor's claim (to
// restart a crashed primary from its keeper) is granted, but the grant is
// lost: the keeper names the owner, which stopped its primary.
func TestRestartWithLostClaimReply(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	_, keeper := c.where("n1", "p")
	c.net.LoseNextReply("n1", keeper, isMsg[*wire.Claim])
	if _, err := c.reward("n1", "p", "a"); err == nil {
		t.Fatal("reward with points a succeeded")
	}
	requireRedundant(t, c, "p", 5)
}

// Issue 11, item 4: a Replicate applied by the keeper whose ack is lost
// leaves the outcome unknown. The next reward must build on what the
// keeper holds, not overwrite it: the keeper remembers the first request's
// id, and that memory travels with its copy (a supervisor's restart, a
// promotion), where a re-send of that request is answered as applied. Its
// points must then be in the total.
func TestLostReplicateAckThenResend(t *testing.T) {
	for _, travel := range []string{"restart", "promotion"} {
		t.Run(travel, func(t *testing.T) {
			c := newCluster(t, "n1", "n2", "n3")
			c.mustReward("n1", "p", 1, 1)
			_, keeper := c.where("n1", "p")
			id := wire.ClientReqID("item4")
			c.net.LoseNextReply("n1", keeper, func(m wire.Msg) bool {
				r, ok := m.(*wire.Replicate)
				return ok && r.ID == id
			})
			if _, err := c.node("n1").store.RewardOnce(ctxT(t), "p", "5", id); wire.OutcomeOf(err) != wire.OutcomeUnknown {
				t.Fatalf("reward whose replication ack was lost: %v, want an unknown outcome", err)
			}
			got, err := c.reward("n1", "p", 7)
			if err != nil {
				t.Fatal(err)
			}
			if got != 8 && got != 13 {
				t.Fatalf("reward 7 after an unknown 5 on 1 = %d, want 8 or 13", got)
			}
			at := "n1"
			switch travel {
			case "restart":
				if _, err := c.reward("n1", "p", "a"); err == nil {
					t.Fatal("reward with points a succeeded")
				}
			case "promotion":
				c.kill("n1")
				c.sync()
				at = keeper
			}
			resent, err := c.node(at).store.RewardOnce(ctxT(t), "p", "5", id)
			if err != nil {
				t.Fatalf("re-send of the unknown reward: %v", err)
			}
			total, err := c.reward(at, "p", 0)
			if err != nil {
				t.Fatal(err)
			}
			// Applied once: its points are in the total, once.
			if total != 13 {
				t.Fatalf("after 1, 5 (unknown, re-sent: answered %d), 7: total %d, want 13", resent, total)
			}
		})
	}
}

// Issue 11, item 5: a re-send may arrive after the player applied more
// rewards than it remembers (dedupLen): the entry node's re-sends go on for
// seconds, a busy player takes hundreds a second. Such a re-send must not
// be applied a second time; it is answered "outcome unknown" when the
// player's record no longer reaches back to when it was first sent.
func TestResendOlderThanDedupRecord(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 1, 1) // primary on n1
	id := wire.ClientReqID("item5")
	isR1 := func(m wire.Msg) bool { r, ok := m.(*wire.Reward); return ok && r.ID == id }
	c.net.LoseNextReply("n2", "n1", isR1)
	var sent atomic.Int32
	resend := c.net.Hold("n2", "n1", func(m wire.Msg) bool { return isR1(m) && sent.Add(1) > 1 })
	type result struct {
		total int64
		err   error
	}
	done := make(chan result, 1)
	go func() {
		total, err := c.node("n2").store.RewardOnce(ctxT(t), "p", "5", id)
		done <- result{total, err}
	}()
	testenv.WaitFor(t, 5*time.Second, "the re-send to be on its way", func() bool { return resend.Waiting() > 0 })
	const others = 300 // more than any player remembers
	for i := range others {
		c.mustReward("n1", "p", 1, 1+5+int64(i)+1)
	}
	resend.Release()
	r := <-done
	t.Logf("re-send after %d other rewards: %d, %v", others, r.total, r.err)
	if r.err != nil && wire.OutcomeOf(r.err) != wire.OutcomeUnknown {
		t.Fatalf("re-send: %v, want the total it gave or an unknown outcome", r.err)
	}
	if want := int64(1 + 5 + others); c.mustTotal("n1", "p") != want {
		t.Fatalf("re-send answered (%d, %v): total %d, want %d (applied once)", r.total, r.err, c.mustTotal("n1", "p"), want)
	}
}

func (c *cluster) mustTotal(at, player string) int64 {
	c.t.Helper()
	got, err := c.reward(at, player, 0)
	if err != nil {
		c.t.Fatalf("read %s at %s: %v", player, at, err)
	}
	return got
}

// A copy left behind from an earlier epoch, for an owner that has since
// lost the player (a promotion whose Adopt reply was lost, and which
// another node then claimed), proves nothing about the current owner:
// when the owner's keeper fails, the owner must not step down for it, or
// that leftover, with its old total, becomes the player. Found by the
// nemesis (a kill with lost replies, then a keeper killed).
func TestLeftoverCopyFromEarlierEpoch(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3", "n4")
	c.mustReward("n1", "p", 5, 5) // epoch 1
	_, keeper := c.where("n1", "p")
	var other string
	for _, n := range []string{"n2", "n3", "n4"} {
		if n != keeper {
			other = n
			break
		}
	}
	gone := wire.NodeID{Name: "n9", Boot: 999}
	c.node(other).store.PutCopy("p", gone, 0, 0, 0)
	c.kill(keeper)
	c.sync()
	c.mustReward("n1", "p", 1, 6)
	requireRedundant(t, c, "p", 6)
}

// An Adopt whose reply was lost leaves a copy holding an update its primary
// never applied (the reward was answered "unknown"); when the primary then
// places its keeper elsewhere (the first candidate refusing it for a
// moment) and goes on, the leftover and the real keeper can reach the same
// epoch and sequence number with different totals. When the owner then
// fails, the real keeper's copy, with the acknowledged reward, must win,
// although the leftover's node sorts first.
func TestLeftoverWithSameSeqLosesToTheKeeper(t *testing.T) {
	names := []string{"n1", "n2", "n3", "n4", "n5"}
	c := newCluster(t, names...)
	var player, keeper, first, second string
	for i := range 100 {
		p := fmt.Sprintf("p%d", i)
		var cands []string
		for _, n := range replica.PlacementOrder(p, names) {
			if n != "n1" {
				cands = append(cands, n)
			}
		}
		if cands[1] < cands[2] {
			player, keeper, first, second = p, cands[0], cands[1], cands[2]
			break
		}
	}
	c.mustReward("n1", player, 5, 5)
	if _, k := c.where("n1", player); k != keeper {
		t.Fatalf("%s: keeper on %s, want %s (first in placement order)", player, k, keeper)
	}

	// +100 is held on its way to the keeper, which then fails; the
	// primary's Adopt of it to the next candidate arrives but its reply is
	// lost, and that candidate refuses the Adopts that follow.
	held := c.net.Hold("n1", keeper, isMsg[*wire.Replicate])
	var lost atomic.Bool
	c.net.SetFault("n1", first, replica.LinkFault{
		LoseNext: func(m wire.Msg) bool {
			_, ok := m.(*wire.Adopt)
			if ok {
				lost.Store(true)
			}
			return ok
		},
		RefuseIf: func(m wire.Msg) bool { _, ok := m.(*wire.Adopt); return ok && lost.Load() },
	})
	done := make(chan error, 1)
	go func() { _, err := c.reward("n1", player, 100); done <- err }()
	testenv.WaitFor(t, 5*time.Second, "the update to be on its way to the keeper", func() bool { return held.Waiting() > 0 })
	c.kill(keeper)
	c.sync()
	errU := <-done
	if !lost.Load() {
		t.Fatalf("the Adopt to %s was never sent (reward: %v)", first, errU)
	}
	total, err := c.reward("n1", player, 1)
	if err != nil {
		t.Fatalf("reward %s 1 at n1 (after +100: %v): %v", player, errU, err)
	}
	switch {
	case errU == nil && total != 106, errU != nil && total != 6 && total != 106:
		t.Fatalf("%s = %d after +100 (%v) and +1", player, total, errU)
	}
	t.Logf("+100: %v; +1 acknowledged, total %d; copies on %s: %s; on %s: %s", errU, total, first, c.node(first).store.DebugCopies(), second, c.node(second).store.DebugCopies())

	c.kill("n1")
	c.sync()
	c.waitRemoved("n1", first, second)
	got, err := c.reward(second, player, 0)
	if err != nil {
		t.Fatalf("read %s at %s after its owner failed: %v", player, second, err)
	}
	if got != total {
		t.Fatalf("%s = %d after its owner failed, want %d: an acknowledged reward was lost to a leftover copy", player, got, total)
	}
}
