package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/appnode/appnode/wire"
)

// MemNetwork is an in-memory Network for tests of every package: it
// delivers messages between Stores in one process, through the same msgpack
// encoding as the wire, and injects faults. It models what the TCP
// transport reports: a killed node refuses connections (wire.ErrRefused), a
// cut link fails fast with an unknown outcome, a paused node never answers.
type MemNetwork struct {
	mu     sync.Mutex
	nodes  map[string]*memNode
	cut    map[[2]string]bool // directed links that drop everything
	refuse map[[2]string]bool // directed links whose calls are refused, as by a firewall REJECT
	paused map[string]bool
	// resume is closed and replaced whenever a node is resumed, waking
	// calls that were stuck on it.
	resume chan struct{}
	stuck  int // calls waiting on a paused node
}

type memNode struct {
	id       func() wire.NodeID
	handler  func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error)
	fenced   func(wire.NodeID) bool
	onFenced func()
}

func NewMemNetwork() *MemNetwork {
	return &MemNetwork{
		nodes:  map[string]*memNode{},
		cut:    map[[2]string]bool{},
		refuse: map[[2]string]bool{},
		paused: map[string]bool{},
		resume: make(chan struct{}),
	}
}

// Attach registers a node under name. id reports its current incarnation;
// handler serves its messages; fenced and onFenced play the transport
// handshake's part (the acceptor refusing a tombstoned incarnation, and the
// dialer learning it was fenced). It returns the node's Network.
func (n *MemNetwork) Attach(name string, id func() wire.NodeID,
	handler func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error),
	fenced func(wire.NodeID) bool, onFenced func()) Network {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes[name] = &memNode{id: id, handler: handler, fenced: fenced, onFenced: onFenced}
	return &memEndpoint{net: n, name: name}
}

// Kill removes a node: calls to it fail with wire.ErrRefused, as a refused
// connection does after kill -9.
func (n *MemNetwork) Kill(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nodes, name)
	delete(n.paused, name)
}

// Pause makes a node stop answering (SIGSTOP): calls to it and from it
// block until Resume or their deadline.
func (n *MemNetwork) Pause(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.paused[name] = true
}

// Stuck reports how many calls wait on a paused node now, so that a test
// can act while a call is in flight rather than before it starts.
func (n *MemNetwork) Stuck() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stuck
}

func (n *MemNetwork) Resume(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.paused, name)
	close(n.resume)
	n.resume = make(chan struct{})
}

// Partition cuts every link between the two groups, both ways.
func (n *MemNetwork) Partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.cut[[2]string{x, y}] = true
			n.cut[[2]string{y, x}] = true
		}
	}
}

// Refuse makes every call from a to b fail with wire.ErrRefused, as a
// firewall REJECT rule does to a live process: b keeps running and
// answering everyone else.
func (n *MemNetwork) Refuse(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.refuse[[2]string{a, b}] = true
}

// Heal restores every link.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut = map[[2]string]bool{}
	n.refuse = map[[2]string]bool{}
}

var errUnreachable = errors.New("unreachable (link cut by the test network)")

type memEndpoint struct {
	net  *MemNetwork
	name string
}

func (e *memEndpoint) Call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error) {
	n := e.net
	for {
		n.mu.Lock()
		if _, ok := n.nodes[e.name]; !ok {
			n.mu.Unlock()
			return nil, fmt.Errorf("call %s: this node was killed", to.Name)
		}
		if !n.paused[e.name] && !n.paused[to.Name] {
			break
		}
		wake := n.resume
		n.stuck++
		n.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
		}
		n.mu.Lock()
		n.stuck--
		n.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("call %s: %w", to.Name, err)
		}
	}
	self := n.nodes[e.name]
	from := self.id()
	if n.cut[[2]string{e.name, to.Name}] {
		n.mu.Unlock()
		return nil, fmt.Errorf("call %s: %w", to.Name, errUnreachable)
	}
	if n.refuse[[2]string{e.name, to.Name}] {
		n.mu.Unlock()
		return nil, fmt.Errorf("call %s: %w", to.Name, wire.ErrRefused)
	}
	target, ok := n.nodes[to.Name]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("call %s: %w", to.Name, wire.ErrRefused)
	}
	if got := target.id(); to.Boot != 0 && got.Boot != to.Boot {
		return nil, fmt.Errorf("call %s: answered by a new incarnation: %w", to.Name, wire.ErrGone)
	}
	if target.fenced != nil && target.fenced(from) {
		if self.onFenced != nil {
			self.onFenced()
		}
		return nil, wire.Errorf(wire.CodeFenced, "%s says this node was declared failed", to.Name)
	}
	req, err := wire.Roundtrip(m)
	if err != nil {
		return nil, err
	}
	rep, err := target.handler(ctx, from, req)
	n.mu.Lock()
	_, callerAlive := n.nodes[e.name]
	_, targetAlive := n.nodes[to.Name]
	n.mu.Unlock()
	if !callerAlive || !targetAlive {
		// The handler ran, but a kill cut the link before the reply.
		return nil, fmt.Errorf("call %s: %w", to.Name, wire.ErrLinkLost)
	}
	if err != nil {
		var we *wire.Error
		if errors.As(err, &we) {
			out, rerr := wire.Roundtrip(we)
			if rerr != nil {
				return nil, rerr
			}
			return nil, out.(*wire.Error)
		}
		return nil, &wire.Error{Code: wire.CodeInternal, Msg: err.Error()}
	}
	return wire.Roundtrip(rep)
}
