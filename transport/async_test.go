package transport

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

type asyncReply struct {
	m   wire.Msg
	err error
}

func callAsync(n *testNode, to wire.NodeID, m wire.Msg, timeout time.Duration) (<-chan asyncReply, func(error)) {
	ch := make(chan asyncReply, 1)
	cancel := n.CallAsync(to, m, timeout, func(m wire.Msg, err error) { ch <- asyncReply{m, err} })
	return ch, cancel
}

func waitAsync(t *testing.T, ch <-chan asyncReply) asyncReply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("CallAsync's done never ran")
		return asyncReply{}
	}
}

// Replies to calls no goroutine waits for come back to their callbacks,
// many at once and beside ordinary calls on the same connection.
func TestCallAsyncDeliversRepliesBesideCalls(t *testing.T) {
	net := newTestNet(t)
	a := net.add("a", 1, nil)
	b := net.add("b", 1, nil)
	const n = 200
	chs := make([]<-chan asyncReply, n)
	for i := range chs {
		chs[i], _ = callAsync(a, b.id(), &wire.Reward{Player: "p", Points: int64(i)}, 5*time.Second)
		if i%10 == 0 {
			reward(t, a, b.id(), int64(i))
		}
	}
	for i, ch := range chs {
		r := waitAsync(t, ch)
		if r.err != nil || r.m.(*wire.RewardReply).Total != int64(i) {
			t.Fatalf("call %d: %v, %v", i, r.m, r.err)
		}
	}
}

// A call whose answer does not come within its timeout, or that is
// cancelled, ends with an error that leaves the outcome unknown; a
// handler's error comes back as the *wire.Error it is.
func TestCallAsyncTimeoutCancelAndErrors(t *testing.T) {
	net := newTestNet(t)
	release := make(chan struct{})
	a := net.add("a", 1, nil)
	b := net.add("b", 1, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		if r, ok := m.(*wire.Reward); ok && r.Player == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return &wire.RewardReply{}, nil
		}
		if r, ok := m.(*wire.Reward); ok && r.Player == "bad" {
			return nil, wire.Errorf(wire.CodeBusy, "busy")
		}
		return echo(ctx, from, m)
	})
	defer close(release)

	ch, _ := callAsync(a, b.id(), &wire.Reward{Player: "slow"}, 50*time.Millisecond)
	if r := waitAsync(t, ch); !errors.Is(r.err, context.DeadlineExceeded) || !isUnknown(r.err) {
		t.Fatalf("timed out call: %v, %v; want a deadline error of unknown outcome", r.m, r.err)
	}
	gaveUp := errors.New("given up")
	ch, cancel := callAsync(a, b.id(), &wire.Reward{Player: "slow"}, 5*time.Second)
	cancel(gaveUp)
	if r := waitAsync(t, ch); !errors.Is(r.err, gaveUp) {
		t.Fatalf("cancelled call: %v, %v; want the cancel's error", r.m, r.err)
	}
	ch, _ = callAsync(a, b.id(), &wire.Reward{Player: "bad"}, 5*time.Second)
	var we *wire.Error
	if r := waitAsync(t, ch); !errors.As(r.err, &we) || we.Code != wire.CodeBusy {
		t.Fatalf("refused call: %v, %v; want the handler's busy error", r.m, r.err)
	}
	// The connection is still good.
	reward(t, a, b.id(), 7)
}

// A call out when its connection closes ends with the connection's error;
// one to a peer that cannot be reached ends at once, not sent.
func TestCallAsyncConnectionLost(t *testing.T) {
	net := newTestNet(t)
	a := net.add("a", 1, nil)
	entered := make(chan struct{}, 1)
	b := net.add("b", 1, func(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
		entered <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	// Open first: b closing during the handshake would be a failed dial,
	// with no link to report down.
	openConn(t, a, b.id())
	ch, _ := callAsync(a, b.id(), &wire.Reward{Player: "p"}, 5*time.Second)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("b never got the call")
	}
	b.Close()
	if r := waitAsync(t, ch); r.err == nil {
		t.Fatalf("call over a closed connection answered %v", r.m)
	}
	// The call may have ended with b's last answer before a read the
	// hang-up; once a has, nothing more is sent to b.
	a.waitLinkDown(t, b.id(), 10*time.Second, "b closed")
	ch, _ = callAsync(a, b.id(), &wire.Reward{Player: "p"}, 5*time.Second)
	if r := waitAsync(t, ch); !errors.Is(r.err, wire.ErrNotSent) {
		t.Fatalf("call to a closed peer: %v; want not sent", r.err)
	}
}

// asyncHandler is a Handler whose HandleAsync takes what async accepts.
type asyncHandler struct {
	handlerFuncs
	async func(from wire.NodeID, m wire.Msg, reply func(wire.Msg, error)) bool
}

func (h asyncHandler) HandleAsync(from wire.NodeID, m wire.Msg, reply func(wire.Msg, error)) bool {
	return h.async(from, m, reply)
}

// A member's request on a busy connection is offered to AsyncHandler,
// which answers it (or fails it) after the read loop has moved on; one
// behind a request still being served is not held up by it.
func TestAsyncHandlerServesMembersRequests(t *testing.T) {
	net := newTestNet(t)
	release := make(chan struct{})
	var from wire.NodeID
	offered := make(chan func(), 1)
	a := net.add("a", 1, nil)
	b := net.add("b", 1, nil, func(c *Config) {
		c.Handler = asyncHandler{
			handlerFuncs: handlerFuncs{handle: func(ctx context.Context, f wire.NodeID, m wire.Msg) (wire.Msg, error) {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return echo(ctx, f, m)
			}},
			async: func(f wire.NodeID, m wire.Msg, reply func(wire.Msg, error)) bool {
				r, ok := m.(*wire.Reward)
				if !ok || r.Player == "held" {
					return false
				}
				from = f
				offered <- func() {
					if r.Points < 0 {
						reply(nil, wire.Errorf(wire.CodeOverflow, "negative"))
						return
					}
					reply(&wire.RewardReply{Total: r.Points}, nil)
				}
				return true
			},
		}
	})
	defer close(release)
	// On one open connection the calls reach b in the order sent.
	openConn(t, a, b.id())
	held, _ := callAsync(a, b.id(), &wire.Reward{Player: "held"}, 5*time.Second)
	for _, pts := range []int64{7, -1} {
		ch, _ := callAsync(a, b.id(), &wire.Reward{Player: "p", Points: pts}, 5*time.Second)
		select {
		case answer := <-offered:
			answer()
		case <-time.After(10 * time.Second):
			t.Fatalf("reward %d behind a request being served was not offered to HandleAsync", pts)
		}
		r := waitAsync(t, ch)
		var we *wire.Error
		switch {
		case pts >= 0 && (r.err != nil || r.m.(*wire.RewardReply).Total != pts):
			t.Fatalf("reward %d: %v, %v", pts, r.m, r.err)
		case pts < 0 && (!errors.As(r.err, &we) || we.Code != wire.CodeOverflow):
			t.Fatalf("reward %d: %v, %v; want the handler's overflow error", pts, r.m, r.err)
		}
	}
	if from != a.id() {
		t.Fatalf("HandleAsync saw the request from %+v, want %+v", from, a.id())
	}
	select {
	case r := <-held:
		t.Fatalf("the held request was answered %v, %v before its release", r.m, r.err)
	default:
	}
}

// A CallAsync to a peer with no open connection returns at once, before
// the dial ends: its callers are read loops serving other requests, and a
// peer whose handshake hangs (a paused process, a firewall that drops)
// must not hold them. done hears that the request was not sent, with
// cancel's error or the timeout, and once the peer answers the next call
// goes through.
func TestCallAsyncDoesNotWaitForADial(t *testing.T) {
	net := newTestNet(t)
	a := net.add("a", 1, nil)
	hung := wire.NodeID{Name: "hung", Boot: 7}
	release := make(chan struct{})
	var releaseOnce sync.Once
	unhang := func() { releaseOnce.Do(func() { close(release) }) }
	f := startFake(t, hung, echoFake, func(f *fakePeer) {
		f.hello = func(int) wire.NodeID {
			<-release
			return hung
		}
	})
	defer unhang() // before the fake's cleanup waits for its goroutines
	net.set(hung.Name, f.ln.Addr().String())

	type started struct {
		ch     <-chan asyncReply
		cancel func(error)
	}
	returned := make(chan started, 1)
	go func() {
		ch, cancel := callAsync(a, hung, &wire.Reward{Player: "p", Points: 1}, time.Minute)
		returned <- started{ch, cancel}
	}()
	var first started
	select {
	case first = <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("CallAsync waited for a dial whose handshake hangs")
	}
	testenv.WaitFor(t, 10*time.Second, "the dial to reach the hung peer", func() bool { return f.accepts.Load() >= 1 })
	why := errors.New("the caller gave up")
	first.cancel(why)
	if r := waitAsync(t, first.ch); !errors.Is(r.err, why) || !errors.Is(r.err, wire.ErrNotSent) {
		t.Fatalf("cancelled during the dial: %v, %v; want the cancel's error, not sent", r.m, r.err)
	}

	ch, _ := callAsync(a, hung, &wire.Reward{Player: "p", Points: 2}, 100*time.Millisecond)
	if r := waitAsync(t, ch); !errors.Is(r.err, context.DeadlineExceeded) || !errors.Is(r.err, wire.ErrNotSent) {
		t.Fatalf("timed out during the dial: %v, %v; want a deadline error, not sent", r.m, r.err)
	}

	unhang()
	testenv.WaitFor(t, 10*time.Second, "a call to go through once the peer answers", func() bool {
		ch, _ := callAsync(a, hung, &wire.Reward{Player: "p", Points: 3}, 5*time.Second)
		r := waitAsync(t, ch)
		return r.err == nil && r.m.(*wire.RewardReply).Total == 3
	})
}
