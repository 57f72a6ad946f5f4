package replica_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
)

// memPair attaches two nodes that count the messages they handle.
func memPair(t *testing.T) (n *replica.MemNetwork, a, b replica.Network, aID, bID wire.NodeID, handledA, handledB *atomic.Int64) {
	t.Helper()
	n = replica.NewMemNetwork()
	aID, bID = wire.NodeID{Name: "a", Boot: 1}, wire.NodeID{Name: "b", Boot: 2}
	handledA, handledB = new(atomic.Int64), new(atomic.Int64)
	handler := func(count *atomic.Int64) func(context.Context, wire.NodeID, wire.Msg) (wire.Msg, error) {
		return func(context.Context, wire.NodeID, wire.Msg) (wire.Msg, error) {
			count.Add(1)
			return &wire.Ack{}, nil
		}
	}
	a = n.Attach("a", func() wire.NodeID { return aID }, handler(handledA), nil, nil)
	b = n.Attach("b", func() wire.NodeID { return bID }, handler(handledB), nil, nil)
	return
}

func TestMemNetworkFaults(t *testing.T) {
	t.Run("refuse", memRefuse)
	t.Run("one way", memOneWay)
	t.Run("lost reply", memLostReply)
	t.Run("seeded losses replay", memSeededLosses)
	t.Run("delay", memDelay)
}

// memRefuse: a refused link fails its calls undelivered, and only one way.
func memRefuse(t *testing.T) {
	ctx := context.Background()
	n, a, b, aID, bID, handledA, handledB := memPair(t)
	n.Refuse("a", "b")
	_, err := a.Call(ctx, bID, &wire.Ping{})
	// What a refused dial gives over TCP, whatever that proves.
	want := wire.Refused("b", errors.New("x"))
	if err == nil || errors.Is(err, wire.ErrGone) != errors.Is(want, wire.ErrGone) {
		t.Fatalf("a -> b refused: %v, want an error like %v", err, want)
	}
	if handledB.Load() != 0 {
		t.Fatal("a refused call was delivered")
	}
	if _, err := b.Call(ctx, aID, &wire.Ping{}); err != nil || handledA.Load() != 1 {
		t.Fatalf("b -> a with a refusing b: %v (handled %d)", err, handledA.Load())
	}
}

// memOneWay: a cut link loses calls one way; the other way works, and Heal mends it.
func memOneWay(t *testing.T) {
	ctx := context.Background()
	n, a, b, aID, bID, handledA, handledB := memPair(t)
	n.Cut("a", "b")
	if _, err := a.Call(ctx, bID, &wire.Ping{}); err == nil || errors.Is(err, wire.ErrGone) || handledB.Load() != 0 {
		t.Fatalf("a -> b cut: %v (handled %d), want an unknown outcome, undelivered", err, handledB.Load())
	}
	if _, err := b.Call(ctx, aID, &wire.Ping{}); err != nil || handledA.Load() != 1 {
		t.Fatalf("b -> a over a link cut the other way: %v (handled %d)", err, handledA.Load())
	}
	n.Heal()
	if _, err := a.Call(ctx, bID, &wire.Ping{}); err != nil {
		t.Fatalf("a -> b after heal: %v", err)
	}
}

// memLostReply: LoseNextReply loses the reply to the next matching call only, after delivery.
func memLostReply(t *testing.T) {
	ctx := context.Background()
	n, a, _, _, bID, _, handledB := memPair(t)
	n.LoseNextReply("a", "b", func(m wire.Msg) bool { _, ok := m.(*wire.Where); return ok })
	if _, err := a.Call(ctx, bID, &wire.Ping{}); err != nil {
		t.Fatalf("a ping, not matched: %v", err)
	}
	if _, err := a.Call(ctx, bID, &wire.Where{Player: "p"}); !errors.Is(err, wire.ErrLinkLost) || handledB.Load() != 2 {
		t.Fatalf("a -> b with its reply lost: %v (handled %d), want ErrLinkLost after delivery", err, handledB.Load())
	}
	if _, err := a.Call(ctx, bID, &wire.Where{Player: "p"}); err != nil {
		t.Fatalf("LoseNextReply lost a second reply: %v", err)
	}
}

// memSeededLosses: a seed decides which replies a lossy link loses, the same every time.
func memSeededLosses(t *testing.T) {
	ctx := context.Background()
	pattern := func(seed uint64) (out []bool) {
		n, a, _, _, bID, _, handledB := memPair(t)
		n.Seed(seed)
		n.LoseReplies("a", "b", 0.5)
		for range 64 {
			_, err := a.Call(ctx, bID, &wire.Ping{})
			out = append(out, errors.Is(err, wire.ErrLinkLost))
		}
		if handledB.Load() != 64 {
			t.Fatalf("handled %d of 64 calls whose replies may be lost", handledB.Load())
		}
		return out
	}
	p1, p2, p3 := pattern(7), pattern(7), pattern(8)
	lost := 0
	for i := range p1 {
		if p1[i] != p2[i] {
			t.Fatalf("seed 7 lost different replies: %v vs %v", p1, p2)
		}
		if p1[i] {
			lost++
		}
	}
	if lost == 0 || lost == 64 {
		t.Fatalf("lost %d of 64 replies at p=0.5", lost)
	}
	if equalBools(p1, p3) {
		t.Fatal("seeds 7 and 8 lost the same replies")
	}
}

// memDelay: a delayed link holds calls at least that long, and a call whose deadline ends first is never delivered.
func memDelay(t *testing.T) {
	ctx := context.Background()
	n, a, _, _, bID, _, handledB := memPair(t)
	n.Delay("a", "b", 50*time.Millisecond, 0)
	start := time.Now()
	if _, err := a.Call(ctx, bID, &wire.Ping{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("delayed call took %v, want at least 50ms", d)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := a.Call(short, bID, &wire.Ping{}); !errors.Is(err, context.DeadlineExceeded) || handledB.Load() != 1 {
		t.Fatalf("call whose deadline ends within its delay: %v (handled %d), want undelivered, deadline exceeded", err, handledB.Load())
	}
}

func equalBools(a, b []bool) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}
