package transport

import (
	"context"

	"github.com/appnode/appnode/wire"
)

// Clients serves connections whose Hello has Client=true: the `appnode rpc`
// and `appnode bench` tools, not cluster members. A Transport without one
// (Config.Clients nil) refuses such connections in the handshake.
type Clients interface {
	// HandleClient serves one request of a client. Only *wire.Command,
	// *wire.Reward and *wire.Where reach it; anything else is answered with
	// CodeBadRequest without calling it. It runs on a handler goroutine,
	// with the same rules for ctx, errors and panics as Handler.Handle.
	HandleClient(ctx context.Context, m wire.Msg) (wire.Msg, error)
}

// AsyncClients is a Clients that may serve a client's request without a
// goroutine waiting on it: a reward applied at its owner, answered when
// the keeper acknowledges, as a plain forwarder answers when its backup
// does. HandleClientAsync reports false to have m served the usual way;
// true means reply will be called once, from any goroutine, and must not
// be waited for. The transport offers only requests that are not alone on
// their connection: a lone request is served faster on the read loop.
type AsyncClients interface {
	Clients
	HandleClientAsync(m wire.Msg, reply func(wire.Msg, error)) bool
}

// ClientsFunc adapts a function to Clients.
type ClientsFunc func(ctx context.Context, m wire.Msg) (wire.Msg, error)

// HandleClient calls f(ctx, m).
func (f ClientsFunc) HandleClient(ctx context.Context, m wire.Msg) (wire.Msg, error) {
	return f(ctx, m)
}
