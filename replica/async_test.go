package replica_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

type asyncAnswer struct {
	total int64
	err   error
}

// rewardAsyncAt starts RewardAsync at node at and returns where its answer
// will come, or fails the test if the Store did not take the reward.
func (c *cluster) rewardAsyncAt(at, player string, points int64) <-chan asyncAnswer {
	c.t.Helper()
	ch := make(chan asyncAnswer, 1)
	if !c.node(at).store.RewardAsync(player, points, func(total int64, err error) { ch <- asyncAnswer{total, err} }) {
		c.t.Fatalf("RewardAsync(%s, %d) at %s did not take the reward", player, points, at)
	}
	return ch
}

func waitAnswer(t *testing.T, ch <-chan asyncAnswer) asyncAnswer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("RewardAsync never answered")
		return asyncAnswer{}
	}
}

func isReplicate(m wire.Msg) bool { _, ok := m.(*wire.Replicate); return ok }

// A reward at an idle primary is answered when its keeper acknowledges,
// and the keeper holds the new total by then; while it is out, the
// primary is busy and a second reward takes the usual path.
func TestRewardAsyncAnswersOnTheKeepersAck(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	owners, keepers := c.holders("p")
	if len(owners) != 1 || owners[0] != "n1" || len(keepers) != 1 {
		t.Fatalf("p: primaries on %v, copies on %v", owners, keepers)
	}
	hold := c.net.Hold("n1", keepers[0], isReplicate)
	ch := c.rewardAsyncAt("n1", "p", 3)
	testenv.WaitFor(t, 5*time.Second, "the update to be on its way", func() bool { return hold.Waiting() == 1 })
	if c.node("n1").store.RewardAsync("p", 1, func(int64, error) {}) {
		t.Fatal("a second RewardAsync was taken while the primary waited for its keeper")
	}
	hold.Release()
	if a := waitAnswer(t, ch); a.err != nil || a.total != 8 {
		t.Fatalf("RewardAsync answered %d, %v; want 8", a.total, a.err)
	}
	c.mustReward(keepers[0], "p", 1, 9)
}

// An update whose ack is lost was applied by the keeper: the reward is
// served again the usual way, which learns that from the keeper and
// answers it as applied, once.
func TestRewardAsyncLostAckIsAppliedOnce(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	_, keepers := c.holders("p")
	c.net.LoseNextReply("n1", keepers[0], isReplicate)
	if a := waitAnswer(t, c.rewardAsyncAt("n1", "p", 3)); a.err != nil || a.total != 8 {
		t.Fatalf("RewardAsync answered %d, %v; want 8 (applied once)", a.total, a.err)
	}
	c.mustReward("n1", "p", 1, 9)
}

// A keeper the roster removes while an update waits for it does not hold
// the reward up: the update is given up at once and the reward served the
// usual way, which places a new keeper. Whatever the answer, the total
// after it agrees with it.
func TestRewardAsyncKeeperRemovedMidUpdate(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3", "n4")
	c.mustReward("n1", "p", 5, 5)
	_, keepers := c.holders("p")
	keeper := keepers[0]
	hold := c.net.Hold("n1", keeper, isReplicate)
	defer hold.Release()
	ch := c.rewardAsyncAt("n1", "p", 3)
	testenv.WaitFor(t, 5*time.Second, "the update to be on its way", func() bool { return hold.Waiting() == 1 })
	c.kill(keeper)
	c.sync()
	a := waitAnswer(t, ch)
	var rest []string
	for _, n := range c.names() {
		if n != "n1" {
			rest = append(rest, n)
		}
	}
	switch {
	case a.err == nil && a.total == 8:
		c.mustReward(rest[0], "p", 1, 9)
	case wire.OutcomeOf(a.err) == wire.OutcomeUnknown:
		total, err := c.reward(rest[0], "p", 1)
		if err != nil || (total != 6 && total != 9) {
			t.Fatalf("after an unknown outcome, the next reward gave %d, %v; want 6 or 9", total, err)
		}
	default:
		t.Fatalf("RewardAsync answered %d, %v; want 8, or an unknown outcome", a.total, a.err)
	}
}

func isReward(m wire.Msg) bool { _, ok := m.(*wire.Reward); return ok }

// A node that knows a player's owner elsewhere forwards a reward and
// answers with the owner's reply, and the owner holds the new total. A
// forward whose reply is lost may have been applied: the usual path
// sends the same request again, and the owner answers it from its record
// instead of applying it twice.
func TestRewardAsyncForwardsToTheOwner(t *testing.T) {
	for _, lose := range []bool{false, true} {
		t.Run(fmt.Sprintf("reply lost=%v", lose), func(t *testing.T) {
			c := newCluster(t, "n1", "n2", "n3")
			c.mustReward("n1", "p", 5, 5)
			c.mustReward("n2", "p", 1, 6) // n2 learns where p lives
			if lose {
				c.net.LoseNextReply("n2", "n1", isReward)
			}
			if a := waitAnswer(t, c.rewardAsyncAt("n2", "p", 3)); a.err != nil || a.total != 9 {
				t.Fatalf("RewardAsync at n2 answered %d, %v; want 9 (applied once)", a.total, a.err)
			}
			c.mustReward("n1", "p", 1, 10)
		})
	}
}

// An owner serving a forwarded reward without a waiting goroutine leaves
// one it has applied already to the usual path, which answers it with the
// total it produced: a re-send is never applied twice.
func TestHandleAsyncLeavesAnAppliedRequestToHandle(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	owner, from := c.node("n1").store, c.node("n2").ID()
	req := &wire.Reward{Player: "p", Points: 3, ID: wire.ReqID{Origin: from.Boot, Seq: 1 << 40}}
	serve := func() (wire.Msg, error) {
		ch := make(chan asyncAnswer, 1)
		var rep wire.Msg
		if owner.HandleAsync(from, req, func(m wire.Msg, err error) {
			rep = m
			ch <- asyncAnswer{err: err}
		}) {
			a := waitAnswer(t, ch)
			return rep, a.err
		}
		return owner.Handle(context.Background(), from, req)
	}
	for i := range 2 {
		rep, err := serve()
		rr, ok := rep.(*wire.RewardReply)
		if err != nil || !ok || rr.Total != 8 || rr.Owner != c.node("n1").ID() {
			t.Fatalf("send %d: answered %v, %v; want total 8 from n1", i+1, rep, err)
		}
	}
	c.mustReward("n3", "p", 1, 9)
}

// A reward its client named is applied once however it is re-sent: to
// its owner, which finds it in the player's record and leaves it to the
// usual path, or through another node, whose forward the owner answers
// from the record.
func TestRewardOnceAsyncAppliesANamedRewardOnce(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	c.mustReward("n2", "p", 0, 5) // n2 learns where p lives
	id := wire.ClientReqID("order-1")
	send := func(at string) asyncAnswer {
		t.Helper()
		ch := make(chan asyncAnswer, 1)
		if c.node(at).store.RewardOnceAsync("p", 3, id, func(total int64, err error) { ch <- asyncAnswer{total, err} }) {
			return waitAnswer(t, ch)
		}
		total, err := c.node(at).store.RewardOnce(ctxT(t), "p", "3", id)
		return asyncAnswer{total, err}
	}
	for _, at := range []string{"n1", "n1", "n2", "n3"} {
		if a := send(at); a.err != nil || a.total != 8 {
			t.Fatalf("named reward sent to %s answered %d, %v; want 8 (applied once)", at, a.total, a.err)
		}
	}
	c.mustReward("n3", "p", 1, 9)
}

// An update whose ack is lost may have been applied by the keeper (here it
// was). If the usual path that takes the reward over is then refused, the
// keeper having lost the majority before the re-send reached it, the
// caller must hear that the outcome is unknown, never that nothing
// changed: the keeper holds the reward, and the owner builds on it once
// the keeper serves again.
func TestRewardAsyncLostAckThenRefusedIsUnknown(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	_, keepers := c.holders("p")
	keeper := keepers[0]
	var replicates atomic.Int32
	resend := c.net.Hold("n1", keeper, func(m wire.Msg) bool { return isReplicate(m) && replicates.Add(1) == 2 })
	c.net.LoseNextReply("n1", keeper, isReplicate)
	ch := c.rewardAsyncAt("n1", "p", 3)
	testenv.WaitFor(t, 5*time.Second, "the update to be sent again the usual way", func() bool { return resend.Waiting() == 1 })
	c.view(keeper, keeper)
	testenv.WaitFor(t, 5*time.Second, "the keeper to stop serving", func() bool { return c.node(keeper).store.Serving() != nil })
	resend.Release()
	if a := waitAnswer(t, ch); wire.OutcomeOf(a.err) != wire.OutcomeUnknown {
		t.Fatalf("RewardAsync answered %d, %v; want an unknown outcome (the keeper holds the update)", a.total, a.err)
	}
	c.sync()
	testenv.WaitFor(t, 10*time.Second, "the keeper to serve again", func() bool { return c.node(keeper).store.Serving() == nil })
	c.mustReward("n1", "p", 1, 9)
}
