package transport

import (
	"context"

	"github.com/appnode/appnode/wire"
)

// Handler serves the requests of cluster members.
type Handler interface {
	// Handle serves one request from a cluster member. Each request runs
	// on a handler goroutine of its own, at most MaxInflight at once per
	// connection (further requests wait), because a handler may itself
	// make network calls; see Inline for the exceptions. ctx is cancelled
	// when the connection or the Transport closes, and Close waits for
	// handlers to return, so they must honour it.
	//
	// A returned error is sent as a KindError frame: a *wire.Error in
	// err's chain keeps its code; any other error becomes CodeInternal. A
	// panic is recovered, logged and answered with CodeInternal: bad input
	// from the network never takes the node down.
	Handle(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error)

	// Inline says whether Handle serves m without blocking. Such messages
	// run on the connection's read loop, saving a goroutine (and its
	// stack's growth through msgpack) per request. Returning false is
	// always safe.
	Inline(m wire.Msg) bool
}

// AsyncHandler is a Handler that may serve a member's request without a
// goroutine waiting on it (a reward forwarded to its owner, answered when
// the keeper acknowledges), as AsyncClients does for clients: HandleAsync
// reports false to have m served by Handle; true means reply will be
// called once, from any goroutine, and must not be waited for. Only
// requests that are not alone on their connection are offered. A panic in
// HandleAsync is not recovered: it runs on the connection's read loop.
type AsyncHandler interface {
	Handler
	HandleAsync(from wire.NodeID, m wire.Msg, reply func(wire.Msg, error)) bool
}
