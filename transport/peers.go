package transport

import "github.com/appnode/appnode/wire"

// Peers is what a Transport asks of the node about the cluster, and what it
// tells the node about its links. The Transport calls Self and Resolve
// while holding its own lock, so they must not call back into it; the
// other methods run on transport goroutines holding no transport lock.
type Peers interface {
	// Self returns this node's current incarnation. It can change at run
	// time (a fenced node takes a new boot id), so it is read for every
	// handshake, and every Call checks that its connection was opened
	// under the current one. A new boot id must be returned here before
	// it is announced to the cluster: a peer that dials a name and hears
	// an older boot than the one addressed takes the addressed boot as
	// gone.
	Self() wire.NodeID

	// Resolve returns the "ip:port" of a member's transport by node name.
	// The address must be that of the incarnation callers address: a
	// refused connection there is taken as proof that it is gone.
	Resolve(name string) (addr string, ok bool)

	// Fenced is asked by the acceptor for every member Hello. True means
	// this incarnation was declared failed by the cluster: the HelloReply
	// carries Fenced=true and the connection is closed after it.
	Fenced(id wire.NodeID) bool

	// FencedBy is called when a peer's HelloReply says this node is
	// fenced, before the Call that dialed returns. It must not block for
	// long and must not call Close.
	FencedBy(by wire.NodeID)

	// LinkDown is called when an established connection this node dialed
	// breaks (EOF, reset, bad frame, write error). It is a hint that the
	// peer may have died, not proof. It is not called for connections
	// this node closes itself (Disconnect, Close, Block), nor for inbound
	// connections, whose end the peer may choose for its own reasons.
	// Same rules as FencedBy.
	LinkDown(peer wire.NodeID)
}
