package bench

// The floor of `appnode bench --floor`: the least a synchronously
// replicated write can cost with this project's own framing and transport.
// Two processes of the appnode binary, `appnode bench serve-floor`, stand in for
// an owner and its keeper: the first answers a client's reward only after
// forwarding it to the second and getting its ack; the second answers at
// once (that alone is one hop, the cost of a forward). Neither keeps any
// state, so the difference between appnode and the floor is what the
// replica layer adds.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/transport"
	"github.com/appnode/appnode/wire"
)

// serveFloor runs one floor server until its stdin closes (the bench exited)
// or it gets SIGTERM or SIGINT. It prints its transport address as its
// first line of output.
func serveFloor(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("appnode bench serve-floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "floor", "this server's name")
	peer := fs.String("peer", "", "NAME=HOST:PORT of the floor server to forward each request to (none: answer at once)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var peerID wire.NodeID
	var peerAddr string
	if *peer != "" {
		n, a, ok := strings.Cut(*peer, "=")
		if !ok || n == "" || a == "" {
			fmt.Fprintf(stderr, "appnode bench serve-floor: --peer must be NAME=HOST:PORT, not %q\n", *peer)
			return 2
		}
		peerID, peerAddr = wire.NodeID{Name: n}, a
	}
	self := wire.NodeID{Name: *name, Boot: uint64(time.Now().UnixNano())}
	// The bench passes its private cookie in the environment.
	secret, _, err := cookie.Resolve("", os.Getenv, false)
	if err != nil {
		fmt.Fprintf(stderr, "appnode bench serve-floor: %v\n", err)
		return 1
	}

	var tr atomic.Pointer[transport.Transport] // set before anyone knows the address
	var seq atomic.Uint64
	serve := func(ctx context.Context, m wire.Msg) (wire.Msg, error) {
		r, ok := m.(*wire.Reward)
		if !ok {
			return nil, wire.Errorf(wire.CodeBadRequest, "a floor server takes only rewards, not %s", m.Kind())
		}
		n := seq.Add(1)
		if peerAddr != "" {
			// The message a primary sends its keeper, of the same size.
			rep := &wire.Replicate{Player: r.Player, Epoch: 1, Seq: n, Total: int64(n), ID: wire.ReqID{Origin: self.Boot, Seq: n}}
			if _, err := tr.Load().Call(ctx, peerID, rep); err != nil {
				return nil, err
			}
		}
		return &wire.RewardReply{Total: int64(n)}, nil
	}
	cfg := transport.DefaultConfig(secret, floorCluster{self: self, peer: peerID, peerAddr: peerAddr}, floorCluster{})
	cfg.Clients = transport.ClientsFunc(serve)
	cfg.Logf = func(format string, args ...any) {
		fmt.Fprintf(stderr, *name+": "+format+"\n", args...)
	}
	t, err := transport.Listen(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "appnode bench serve-floor: %v\n", err)
		return 1
	}
	tr.Store(t)
	defer t.Close()
	fmt.Fprintln(stdout, t.Addr())

	untilTold()
	return 0
}

// untilTold returns when a server the bench spawned is told to stop: a
// signal, or the bench closing its standard input (the bench exited).
func untilTold() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	stdinClosed := make(chan struct{})
	go func() {
		// Blocks until the bench closes the pipe or exits; if a signal
		// ends the process first, exiting ends this read too.
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-ctx.Done():
	case <-stdinClosed:
	}
}

// floorCluster is a floor server's view of its cluster: itself and the
// server it forwards to, if any (peerAddr ""). No one is ever fenced, a
// broken link is redialled by the next call, and a member is answered
// with an Ack, on the read loop.
type floorCluster struct {
	self, peer wire.NodeID
	peerAddr   string
}

func (f floorCluster) Self() wire.NodeID { return f.self }

func (f floorCluster) Resolve(name string) (string, bool) {
	return f.peerAddr, f.peerAddr != "" && name == f.peer.Name
}

func (floorCluster) Fenced(wire.NodeID) bool { return false }
func (floorCluster) FencedBy(wire.NodeID)    {}
func (floorCluster) LinkDown(wire.NodeID)    {}

// Inline serves the Replicate on the read loop, as a keeper does
// (replica.NonBlocking): the floor's second hop costs what a keeper's does.
func (floorCluster) Inline(m wire.Msg) bool {
	_, ok := m.(*wire.Replicate)
	return ok
}

func (floorCluster) Handle(context.Context, wire.NodeID, wire.Msg) (wire.Msg, error) {
	return &wire.Ack{}, nil
}
