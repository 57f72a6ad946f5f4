package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
)

// Every subscriber gets every event, numbered; a subscriber that does not
// read loses events instead of stalling the node, and the console's
// channel keeps getting them.
func TestSubscribersGetEventsAndSlowOnesDrop(t *testing.T) {
	c := newCluster(t, "a", "b")
	a := c.n("a")
	fast := a.Subscribe(64)
	defer fast.Close()
	slow := a.Subscribe(1)
	defer slow.Close()
	before, _ := a.EventsSince(0)
	for i := range 5 {
		if _, err := c.reward("a", fmt.Sprintf("p%d", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	var got []replica.Event
	testenv.WaitFor(t, 5*time.Second, "five new-player events for the fast subscriber", func() bool {
		for {
			select {
			case e := <-fast.C:
				got = append(got, e)
				continue
			default:
			}
			break
		}
		n := 0
		for _, e := range got {
			if strings.Contains(e.Text, "is a new player") {
				n++
			}
		}
		return n == 5
	})
	for i := 1; i < len(got); i++ {
		if got[i].Seq != got[i-1].Seq+1 {
			t.Fatalf("events out of sequence: %d after %d", got[i].Seq, got[i-1].Seq)
		}
	}
	if slow.Dropped() == 0 {
		t.Fatalf("a subscriber with a one-event buffer that never reads dropped nothing")
	}
	// The ring replays what came after a given event.
	all, complete := a.EventsSince(0)
	if !complete || len(all) < len(before)+5 {
		t.Fatalf("EventsSince(0) = %d events (complete %v), want at least %d", len(all), complete, len(before)+5)
	}
	after, _ := a.EventsSince(got[1].Seq)
	if len(after) == 0 || after[0].Seq != got[2].Seq {
		t.Fatalf("EventsSince(%d) starts at %v, want %d", got[1].Seq, after, got[2].Seq)
	}
	c.kill("a")
	if _, ok := <-fast.C; ok {
		for range fast.C {
		}
	}
	fast.Close() // after the node stopped: no panic
}

// Cluster asks every member what it holds; a killed one shows as down.
func TestClusterDescribesEveryMember(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	for i := range 6 {
		if _, err := c.reward("a", fmt.Sprintf("p%d", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info := c.n("b").Cluster(ctx, time.Second)
	if len(info) != 3 {
		t.Fatalf("cluster has %d members: %+v", len(info), info)
	}
	primaries, keepers := 0, 0
	for _, m := range info {
		if m.State != "alive" || m.Boot == 0 || m.Addr == "" {
			t.Fatalf("member %+v", m)
		}
		if m.Self != (m.Name == c.n("b").Name()) {
			t.Fatalf("self flag wrong on %+v", m)
		}
		primaries += m.Primaries
		keepers += m.Keepers
	}
	if primaries != 6 || keepers != 6 {
		t.Fatalf("cluster counts %d primaries and %d keepers, want 6 and 6", primaries, keepers)
	}
	cName := c.n("c").Name()
	c.kill("c")
	testenv.WaitFor(t, 10*time.Second, "c to show as down", func() bool {
		for _, m := range c.n("b").Cluster(ctx, time.Second) {
			if m.Name == cName {
				return m.State == "down"
			}
		}
		return false
	})
	h := c.n("b").Health()
	if h.Members != 2 || !h.Quorate || h.Leaving || h.Resetting {
		t.Fatalf("health after one of three died: %+v", h)
	}
}

// A page of another node's players comes over the link, in order.
func TestPlayersPageOfAnotherNode(t *testing.T) {
	c := newCluster(t, "a", "b")
	var want []string
	for i := range 5 {
		p := fmt.Sprintf("p%d", i)
		want = append(want, p)
		if _, err := c.reward("a", p, i); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	cursor := ""
	for {
		page, next, err := c.n("b").PlayersPage(ctx, c.n("a").Name(), cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			got = append(got, e.Player)
			if e.Keeper != c.n("b").Name() {
				t.Fatalf("%+v: keeper should be b", e)
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages of a seen from b: %v, want %v", got, want)
	}
	_, _, err := c.n("b").PlayersPage(ctx, "nobody@testhost", "", 2)
	if code, _ := wire.CodeOf(err); code != wire.CodeNotFound {
		t.Fatalf("page of an unknown node: %v, want CodeNotFound", err)
	}
}
