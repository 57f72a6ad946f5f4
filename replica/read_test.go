package replica_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/appnode/appnode/wire"
)

// A read answers the total, owner and keeper from any node, and never
// creates the player.
func TestReadAnswersFromEveryNodeAndNeverCreates(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	for _, at := range c.names() {
		_, _, _, err := c.node(at).store.Read(ctxT(t), "ghost")
		if code, _ := wire.CodeOf(err); code != wire.CodeNotFound {
			t.Fatalf("read of an unknown player at %s: %v, want CodeNotFound", at, err)
		}
	}
	if o, k := c.holders("ghost"); len(o)+len(k) != 0 {
		t.Fatalf("a read created the player: owners %v keepers %v", o, k)
	}
	c.mustReward("n1", "p", 5, 5)
	wantOwner, wantKeeper := c.where("n1", "p")
	for _, at := range c.names() {
		total, owner, keeper, err := c.node(at).store.Read(ctxT(t), "p")
		if err != nil || total != 5 || owner.Name != wantOwner || keeper.Name != wantKeeper {
			t.Fatalf("read at %s = %d %s %s %v, want 5 %s %s", at, total, owner.Name, keeper.Name, err, wantOwner, wantKeeper)
		}
	}
	// A read takes no room among the request ids the player remembers,
	// and applies nothing.
	c.mustReward("n2", "p", 0, 5)
}

// RewardWhere names the owner and keeper whether the reward was served
// here or forwarded, and a client's id is applied once.
func TestRewardWhereNamesOwnerAndKeeper(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 1, 1)
	owner, keeper := c.where("n1", "p")
	id := wire.ClientReqID("key-1")
	for _, at := range c.names() {
		r, err := c.node(at).store.RewardWhere(ctxT(t), "p", "4", id)
		if err != nil || r.Total != 5 || r.Owner.Name != owner || r.Keeper.Name != keeper {
			t.Fatalf("reward at %s = %+v %v, want total 5 on %s kept on %s", at, r, err, owner, keeper)
		}
	}
	_, err := c.node("n2").store.RewardWhere(ctxT(t), "p", "4", wire.ReqID{Origin: 1, Seq: 1})
	if code, _ := wire.CodeOf(err); code != wire.CodeBadRequest {
		t.Fatalf("a node-style id from a client: %v, want CodeBadRequest", err)
	}
}

// A paused owner that the cluster has moved past must not answer a read
// with its stale total after it resumes.
func TestReadOfPausedOwnerIsNotStale(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.mustReward("n1", "p", 5, 5)
	c.net.Pause("n1")
	c.view("n2", "n2", "n3")
	c.view("n3", "n2", "n3")
	c.mustReward("n2", "p", 1, 6)
	c.net.Resume("n1")
	total, _, _, err := c.node("n1").store.Read(ctxT(t), "p")
	if err == nil && total != 6 {
		t.Fatalf("resumed stale owner read %d, want 6 or an error", total)
	}
}

// Pages list every primary of a node exactly once, in order, whatever the
// page size.
func TestPrimariesPageWalksEveryPlayerInOrder(t *testing.T) {
	c := newCluster(t, "n1", "n2")
	var want []string
	for i := range 300 {
		p := fmt.Sprintf("p%04d", rand.N(10000)*10+i%10)
		if slices.Contains(want, p) {
			continue
		}
		want = append(want, p)
		c.mustReward("n1", p, i, int64(i))
	}
	slices.Sort(want)
	s := c.node("n1").store
	if got, next := s.PrimariesPage("", 0); len(got) != 0 || next != "" {
		t.Fatalf("limit 0: %v %q", got, next)
	}
	for _, limit := range []int{1, 7, 100, 299, 300, 1000} {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > len(want)+1 {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			page, next := s.PrimariesPage(cursor, limit)
			if len(page) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(page))
			}
			for _, e := range page {
				got = append(got, e.Player)
				if e.Keeper != "n2" {
					t.Fatalf("%s kept on %q, want n2", e.Player, e.Keeper)
				}
			}
			if next == "" {
				break
			}
			cursor = next
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: pages list %d players, want %d in order", limit, len(got), len(want))
		}
	}
	if page, _ := c.node("n2").store.PrimariesPage("", 10); len(page) != 0 {
		t.Fatalf("n2 holds no primaries but lists %v", page)
	}
}
