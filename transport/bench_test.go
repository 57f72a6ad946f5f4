package transport

import (
	"context"
	"testing"

	"github.com/appnode/appnode/wire"
)

// BenchmarkCall measures one request/reply round trip over loopback: a
// replicate and its ack, the message pair on the path of every reward.
func BenchmarkCall(b *testing.B) {
	n := newTestNet(b)
	ack := func(context.Context, wire.NodeID, wire.Msg) (wire.Msg, error) { return &wire.Ack{}, nil }
	a := n.add("a", 1, ack, func(c *Config) { c.Logf = nil })
	k := n.add("k", 1, ack, func(c *Config) { c.Logf = nil })
	to := k.id()
	m := &wire.Replicate{Player: "player1", Epoch: 3, Seq: 1, Total: 42}
	if _, err := a.Call(context.Background(), to, m); err != nil {
		b.Fatal(err)
	}

	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Call(context.Background(), to, m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(16) // many primaries replicating at once
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := a.Call(context.Background(), to, m); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
