package replica

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appnode/appnode/wire"
)

// MemNetwork is an in-memory Network for tests of every package: it
// delivers messages between Stores in one process, through the same msgpack
// encoding as the wire, and injects faults. It models what the TCP
// transport reports: a killed node refuses connections (wire.Refused), a
// cut link fails fast with an unknown outcome, a paused node never answers.
//
// Faults on a directed link (the calls one node makes to another; their
// replies travel back with them) are what real networks do to a live peer:
// Refuse (a firewall's REJECT), Cut (a one-way drop: the calls fail before
// delivery, the calls the other way still work), LoseReplies (the call is
// delivered and handled, its reply is lost: wire.ErrLinkLost) and Delay
// (the call waits before delivery). Random choices (which replies are
// lost, how long a delay lasts) come from the source Seed sets, so that a
// schedule replays as far as the goroutines' interleaving allows.
type MemNetwork struct {
	mu     sync.Mutex
	nodes  map[string]*memNode
	cut    map[[2]string]bool // directed links that drop everything
	faults map[[2]string]*LinkFault
	holds  []*Hold
	rng    *rand.Rand
	paused map[string]bool
	// resume is closed and replaced whenever a node is resumed, waking
	// calls that were stuck on it.
	resume chan struct{}
	stuck  int // calls waiting on a paused node
	tap    func(from, to string, m wire.Msg)
}

// LinkFault is what a directed link does to the calls on it, besides
// being cut (Cut, Partition).
type LinkFault struct {
	// Refuse makes every call fail as a refused connection does
	// (wire.Refused), although the peer is alive.
	Refuse bool
	// RefuseIf, if set, refuses the calls whose message it accepts, as a
	// link that refuses new connections for a moment does to the calls
	// that need one. It is asked before LoseNext.
	RefuseIf func(wire.Msg) bool
	// LoseReply is the probability that a delivered call's reply is lost:
	// the handler runs, the caller gets wire.ErrLinkLost.
	LoseReply float64
	// LoseNext, if set, loses the reply of the next call whose message it
	// matches, once, whatever LoseReply says.
	LoseNext func(wire.Msg) bool
	// Delay holds every call this long before delivery, plus a random
	// part up to Jitter (which reorders calls on the link).
	Delay, Jitter time.Duration
}

type memNode struct {
	id       func() wire.NodeID
	handler  func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error)
	async    AsyncHandler // nil: every call goes to handler
	fenced   func(wire.NodeID) bool
	onFenced func()
}

func NewMemNetwork() *MemNetwork {
	return &MemNetwork{
		nodes:  map[string]*memNode{},
		cut:    map[[2]string]bool{},
		faults: map[[2]string]*LinkFault{},
		rng:    rand.New(rand.NewPCG(1, 2)),
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

// AsyncHandler serves a message without the caller's goroutine, as
// Store.HandleAsync does: it reports false, having done nothing, for a
// message the node's handler must serve, else calls reply once.
type AsyncHandler func(from wire.NodeID, m wire.Msg, reply func(wire.Msg, error)) bool

// ServeAsync has the node attached as name offer half the rewards it is
// sent (chosen with the network's seeded randomness) to fn before its
// handler, as a transport offers those that arrive on a busy connection.
func (n *MemNetwork) ServeAsync(name string, fn AsyncHandler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd := n.nodes[name]; nd != nil {
		nd.async = fn
	}
}

// Tap has fn see every call made on the network, before its link's faults
// apply: a test counts with it what an operation costs in messages.
func (n *MemNetwork) Tap(fn func(from, to string, m wire.Msg)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.tap = fn
}

// Kill removes a node: calls to it fail with wire.ErrGone, as a refused
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

// Heal restores every link: cuts and link faults are gone.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut = map[[2]string]bool{}
	n.faults = map[[2]string]*LinkFault{}
}

// Seed makes the network's random choices replay with seed.
func (n *MemNetwork) Seed(seed uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.rng = rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
}

// Cut drops the calls from one node to another, one way only: from's
// calls to `to` fail before delivery with an unknown outcome, while to's
// calls to from still work (a one-way firewall rule, a half-broken route).
func (n *MemNetwork) Cut(from, to string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[[2]string{from, to}] = true
}

// SetFault sets what the link from -> to does to its calls; a zero
// LinkFault clears it.
func (n *MemNetwork) SetFault(from, to string, f LinkFault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !f.Refuse && f.RefuseIf == nil && f.LoseReply == 0 && f.LoseNext == nil && f.Delay == 0 && f.Jitter == 0 {
		delete(n.faults, [2]string{from, to})
		return
	}
	n.faults[[2]string{from, to}] = &f
}

// Refuse makes to refuse the connections of from (a REJECT rule on to),
// while to stays alive and its own calls to from work.
func (n *MemNetwork) Refuse(from, to string) {
	n.updateFault(from, to, func(f *LinkFault) { f.Refuse = true })
}

// LoseReplies loses the reply of each call from -> to with probability p:
// the call is handled, the caller gets wire.ErrLinkLost.
func (n *MemNetwork) LoseReplies(from, to string, p float64) {
	n.updateFault(from, to, func(f *LinkFault) { f.LoseReply = p })
}

// LoseNextReply loses the reply of the next call from -> to whose message
// match accepts (the call is handled; the caller gets wire.ErrLinkLost).
func (n *MemNetwork) LoseNextReply(from, to string, match func(wire.Msg) bool) {
	n.updateFault(from, to, func(f *LinkFault) { f.LoseNext = match })
}

// Delay holds each call from -> to for d, plus up to jitter more, before
// it is delivered.
func (n *MemNetwork) Delay(from, to string, d, jitter time.Duration) {
	n.updateFault(from, to, func(f *LinkFault) { f.Delay, f.Jitter = d, jitter })
}

func (n *MemNetwork) updateFault(from, to string, fn func(*LinkFault)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := [2]string{from, to}
	f := n.faults[k]
	if f == nil {
		f = &LinkFault{}
		n.faults[k] = f
	}
	fn(f)
}

// Hold is a gate on a directed link: the calls it matches wait before
// delivery until Release (or their deadline).
type Hold struct {
	from, to string
	match    func(wire.Msg) bool
	released chan struct{}
	waiting  atomic.Int64
}

// Hold makes the calls from -> to whose message match accepts wait before
// delivery until the returned Hold is released, so that a test can act
// while a call (a re-send, say) is on its way.
func (n *MemNetwork) Hold(from, to string, match func(wire.Msg) bool) *Hold {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := &Hold{from: from, to: to, match: match, released: make(chan struct{})}
	n.holds = append(n.holds, h)
	return h
}

// Waiting reports how many calls wait at h now.
func (h *Hold) Waiting() int { return int(h.waiting.Load()) }

// Release lets the calls waiting at h, and any later ones, through.
func (h *Hold) Release() { close(h.released) }

// linkFateLocked decides, under n.mu, what the link from -> to does to one call
// of m: whether it is refused, how long it waits, whether its reply is
// lost.
func (n *MemNetwork) linkFateLocked(from, to string, m wire.Msg) (refuse bool, delay time.Duration, loseReply bool) {
	f := n.faults[[2]string{from, to}]
	if f == nil {
		return false, 0, false
	}
	delay = f.Delay
	if f.Jitter > 0 {
		delay += time.Duration(n.rng.Int64N(int64(f.Jitter)))
	}
	if f.RefuseIf != nil && f.RefuseIf(m) {
		return true, delay, false
	}
	if f.LoseNext != nil && f.LoseNext(m) {
		f.LoseNext = nil
		loseReply = true
	}
	if f.LoseReply > 0 && n.rng.Float64() < f.LoseReply {
		loseReply = true
	}
	return f.Refuse, delay, loseReply
}

// holdLocked returns the Hold that a call of m from -> to waits at, if any.
func (n *MemNetwork) holdLocked(from, to string, m wire.Msg) *Hold {
	for _, h := range n.holds {
		select {
		case <-h.released:
			continue
		default:
		}
		if h.from == from && h.to == to && h.match(m) {
			return h
		}
	}
	return nil
}

var errUnreachable = errors.New("unreachable (link cut by the test network)")

type memEndpoint struct {
	net  *MemNetwork
	name string
}

// CallAsync is Call with the reply handed to done, as the transport's
// CallAsync does: the call runs on a goroutine of its own, which ends
// within timeout.
func (e *memEndpoint) CallAsync(to wire.NodeID, m wire.Msg, timeout time.Duration, done func(wire.Msg, error)) (cancel func(error)) {
	ctx, stop := context.WithTimeout(context.Background(), timeout)
	var once sync.Once
	finish := func(rep wire.Msg, err error) { once.Do(func() { done(rep, err) }) }
	go func() {
		defer stop()
		finish(e.Call(ctx, to, m))
	}()
	return func(err error) {
		finish(nil, err)
		stop()
	}
}

// Call delivers m to the node named to as a real link would, with the
// faults the test has set on that link. Each wait a fault imposes is a
// step of its own below; a call on a healthy link passes each with one
// check.
func (e *memEndpoint) Call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error) {
	n := e.net
	n.mu.Lock()
	refuse, delay, loseReply := n.linkFateLocked(e.name, to.Name, m)
	hold := n.holdLocked(e.name, to.Name, m)
	_, reward := m.(*wire.Reward)
	offerAsync := reward && n.rng.IntN(2) == 0
	tap := n.tap
	n.mu.Unlock()
	if tap != nil {
		tap(e.name, to.Name, m)
	}
	if hold != nil {
		if err := hold.wait(ctx, to.Name); err != nil {
			return nil, err
		}
	}
	if refuse {
		return nil, wire.Refused(to.Name, errors.New("connection refused (by a rule of the test network; the node is alive)"))
	}
	if delay > 0 {
		if err := delayCall(ctx, to.Name, delay); err != nil {
			return nil, err
		}
	}
	if err := n.lockUnpaused(ctx, e.name, to.Name); err != nil {
		return nil, err
	}
	self := n.nodes[e.name]
	from := self.id()
	if n.cut[[2]string{e.name, to.Name}] {
		n.mu.Unlock()
		return nil, fmt.Errorf("call %s: %w", to.Name, errUnreachable)
	}
	target, ok := n.nodes[to.Name]
	n.mu.Unlock()
	if !ok {
		return nil, wire.Refused(to.Name, errors.New("connection refused (the node was killed)"))
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
	var rep wire.Msg
	taken := false
	if offerAsync && target.async != nil {
		rep, taken, err = serveAsync(ctx, target.async, from, req, to.Name)
	}
	if !taken {
		rep, err = target.handler(ctx, from, req)
	}
	n.mu.Lock()
	_, callerAlive := n.nodes[e.name]
	_, targetAlive := n.nodes[to.Name]
	n.mu.Unlock()
	if !callerAlive || !targetAlive {
		// The handler ran, but a kill cut the link before the reply.
		return nil, fmt.Errorf("call %s: %w", to.Name, wire.ErrLinkLost)
	}
	if loseReply {
		return nil, fmt.Errorf("call %s: reply lost by the test network: %w", to.Name, wire.ErrLinkLost)
	}
	if err != nil {
		return nil, handlerError(err)
	}
	return wire.Roundtrip(rep)
}

// serveAsync offers req to fn and, if it takes it, waits for its reply
// until ctx ends, as a transport's caller waits for a reply sent from
// whichever goroutine the handler answered on.
func serveAsync(ctx context.Context, fn AsyncHandler, from wire.NodeID, req wire.Msg, to string) (wire.Msg, bool, error) {
	type answer struct {
		m   wire.Msg
		err error
	}
	ch := make(chan answer, 1)
	if !fn(from, req, func(m wire.Msg, err error) { ch <- answer{m, err} }) {
		return nil, false, nil
	}
	select {
	case a := <-ch:
		return a.m, true, a.err
	case <-ctx.Done():
		return nil, true, fmt.Errorf("call %s: no answer: %w", to, ctx.Err())
	}
}

// wait blocks a call to the node named to at h until h is released or
// ctx ends, counting it as waiting meanwhile so the test can see it.
func (h *Hold) wait(ctx context.Context, to string) error {
	h.waiting.Add(1)
	defer h.waiting.Add(-1)
	select {
	case <-h.released:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("call %s: held by the test network: %w", to, ctx.Err())
	}
}

// delayCall waits out a link's delay before the call goes through; a call
// whose ctx ends first is never delivered.
func delayCall(ctx context.Context, to string, delay time.Duration) error {
	t := time.NewTimer(delay)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		t.Stop()
		return fmt.Errorf("call %s: delayed by the test network: %w", to, ctx.Err())
	}
}

// lockUnpaused locks n.mu once neither end of the call from -> to is
// paused, as a paused process neither sends nor answers. It returns with
// n.mu held if and only if it returns nil: the caller goes on to read the
// network's state under the same lock that saw both ends running.
func (n *MemNetwork) lockUnpaused(ctx context.Context, from, to string) error {
	for {
		n.mu.Lock()
		if _, ok := n.nodes[from]; !ok {
			n.mu.Unlock()
			return fmt.Errorf("call %s: this node was killed", to)
		}
		if !n.paused[from] && !n.paused[to] {
			return nil
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
			return fmt.Errorf("call %s: %w", to, err)
		}
	}
}

// handlerError is what the caller of a handler that failed with err gets:
// a wire error goes over the wire as it would between processes, and any
// other error arrives as an internal one, as the transport sends it.
func handlerError(err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		out, rerr := wire.Roundtrip(we)
		if rerr != nil {
			return rerr
		}
		return out.(*wire.Error)
	}
	return &wire.Error{Code: wire.CodeInternal, Msg: err.Error()}
}
