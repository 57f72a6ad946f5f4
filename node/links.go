package node

import (
	"context"

	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/transport"
	"github.com/appnode/appnode/wire"
)

// What the node gives its transport: small adapters, so that the methods
// the transport calls stay off Node's exported API.
var (
	_ transport.Peers        = linkPeers{}
	_ transport.AsyncHandler = memberHandler{}
	_ transport.AsyncClients = clientHandler{}
)

// linkPeers answers the transport's questions about the cluster from the
// node's membership, and hands its fence and link reports to the node and
// the store.
type linkPeers struct{ n *Node }

func (p linkPeers) Self() wire.NodeID                  { return p.n.Self() }
func (p linkPeers) Resolve(name string) (string, bool) { return p.n.resolve(name) }
func (p linkPeers) Fenced(id wire.NodeID) bool         { return p.n.store.Fenced(id) }
func (p linkPeers) FencedBy(by wire.NodeID)            { p.n.onFenced(by) }
func (p linkPeers) LinkDown(peer wire.NodeID)          { p.n.store.LinkDown(peer) }

// memberHandler serves the members' requests: the node's own queries
// (the front door's), else the store's.
type memberHandler struct{ n *Node }

func (h memberHandler) Handle(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
	return h.n.handlePeer(ctx, from, m)
}

func (h memberHandler) Inline(m wire.Msg) bool { return replica.NonBlocking(m) }

// HandleAsync serves a reward forwarded to an idle primary here without a
// goroutine waiting for its keeper's ack (replica.Store.HandleAsync).
func (h memberHandler) HandleAsync(from wire.NodeID, m wire.Msg, reply func(wire.Msg, error)) bool {
	return h.n.store.HandleAsync(from, m, reply)
}

// clientHandler serves `appnode rpc` and `appnode bench` (see
// Node.handleClient).
type clientHandler struct{ n *Node }

func (c clientHandler) HandleClient(ctx context.Context, m wire.Msg) (wire.Msg, error) {
	return c.n.handleClient(ctx, m)
}

// HandleClientAsync serves a reward, plain or named by its client, at an
// idle primary here or forwarded to its owner elsewhere, without a
// goroutine waiting for the reply (replica.Store.RewardAsync,
// RewardOnceAsync); anything else is served by HandleClient.
func (c clientHandler) HandleClientAsync(m wire.Msg, reply func(wire.Msg, error)) bool {
	r, ok := m.(*wire.Reward)
	if !ok || r.NotInt != "" {
		return false
	}
	done := func(total int64, err error) {
		if err != nil {
			reply(nil, err)
			return
		}
		reply(&wire.RewardReply{Total: total}, nil)
	}
	if r.ID.FromClient() {
		return c.n.store.RewardOnceAsync(r.Player, r.Points, r.ID, done)
	}
	return c.n.store.RewardAsync(r.Player, r.Points, done)
}
