package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/client"
	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/names"
	"github.com/appnode/appnode/transport"
	"github.com/appnode/appnode/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = mustCookie("the client tests' cookie, long enough")

func mustCookie(s string) cookie.Cookie {
	c, err := cookie.New(s)
	if err != nil {
		panic(err)
	}
	return c
}

// fakeNode is a transport server that answers clients as a node would,
// registered with a name service of its own on bind. It records the
// rewards it got.
type fakeNode struct {
	name string
	mu   sync.Mutex
	got  []wire.Reward
}

func (f *fakeNode) serve(_ context.Context, m wire.Msg) (wire.Msg, error) {
	switch m := m.(type) {
	case *wire.Reward:
		f.mu.Lock()
		f.got = append(f.got, *m)
		f.mu.Unlock()
		if m.NotInt != "" {
			return nil, wire.Errorf(wire.CodeCrashed, "%s: points %q is not an integer", m.Player, m.NotInt)
		}
		return &wire.RewardReply{Total: 100 + m.Points}, nil
	case *wire.Where:
		return &wire.WhereReply{Role: wire.RolePrimary, Owner: wire.NodeID{Name: f.name}}, nil
	case *wire.Command:
		if m.Line == "reward p 1" {
			return &wire.CommandReply{Output: "** error: no quorum", Failed: true, Code: wire.CodeNoQuorum, Outcome: wire.OutcomeNotApplied}, nil
		}
		return &wire.CommandReply{Output: "'" + f.name + "'"}, nil
	}
	return nil, wire.Errorf(wire.CodeBadRequest, "unexpected %s", m.Kind())
}

// loner is a fake node's view of its cluster, in which it is alone, and
// its answer to any member: an Ack.
type loner struct{ self wire.NodeID }

func (l loner) Self() wire.NodeID           { return l.self }
func (loner) Resolve(string) (string, bool) { return "", false }
func (loner) Fenced(wire.NodeID) bool       { return false }
func (loner) FencedBy(wire.NodeID)          {}
func (loner) LinkDown(wire.NodeID)          {}
func (loner) Inline(wire.Msg) bool          { return false }
func (loner) Handle(context.Context, wire.NodeID, wire.Msg) (wire.Msg, error) {
	return &wire.Ack{}, nil
}

// startFake runs a fake node named name, bound to bind, and its host's
// name service on namesPort; both stop when the test ends.
func startFake(t *testing.T, name, bind string, namesPort int) *fakeNode {
	t.Helper()
	f := &fakeNode{name: name}
	self := wire.NodeID{Name: name, Boot: 1}
	cfg := transport.DefaultConfig(secret, loner{self}, loner{self})
	cfg.BindAddr = bind
	cfg.Clients = transport.ClientsFunc(f.serve)
	tr, err := transport.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ncfg := names.DefaultConfig(names.Entry{Name: name, GossipPort: tr.Port(), TransportPort: tr.Port()})
	ncfg.BindAddr, ncfg.Port = bind, namesPort
	reg, err := names.Register(ctx, ncfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return f
}

func dial(t *testing.T, target string, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), target, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", target, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCalls(t *testing.T) {
	port := testenv.FreePort(t)
	f := startFake(t, client.FullName("app"), "127.0.0.1", port)
	c := dial(t, "app", client.Config{NamesPort: port, Cookie: secret})
	ctx := context.Background()
	if c.Node().Name != f.name || c.Name() != f.name {
		t.Errorf("connected to %v (%s), want %s", c.Node(), c.Name(), f.name)
	}

	if total, err := c.Reward(ctx, "p", 5); err != nil || total != 105 {
		t.Errorf("Reward = %d, %v; want 105", total, err)
	}
	if total, err := c.RewardOnce(ctx, "p", "7", "key-1"); err != nil || total != 107 {
		t.Errorf("RewardOnce = %d, %v; want 107", total, err)
	}
	_, err := c.RewardOnce(ctx, "p", "a", "key-2")
	if code, _ := wire.CodeOf(err); code != wire.CodeCrashed || wire.OutcomeOf(err) != wire.OutcomeNotApplied {
		t.Errorf("RewardOnce of a non-integer: %v (code %v), want the node's crash", err, code)
	}
	f.mu.Lock()
	got := f.got
	f.mu.Unlock()
	switch {
	case len(got) != 3:
		t.Fatalf("the node got %d rewards, want 3", len(got))
	case got[0].ID.FromClient():
		t.Errorf("Reward named its request: %+v; the node must name it", got[0])
	case got[1].ID != wire.ClientReqID("key-1") || got[1].Points != 7:
		t.Errorf("RewardOnce sent %+v, want 7 points and the id of key-1", got[1])
	case got[2].ID != wire.ClientReqID("key-2") || got[2].NotInt != "a":
		t.Errorf("RewardOnce of a non-integer sent %+v, want the text as typed", got[2])
	}

	if w, err := c.Where(ctx, "p"); err != nil || w.Role != wire.RolePrimary || w.Owner.Name != f.name {
		t.Errorf("Where = %+v, %v", w, err)
	}
	if r, err := c.Command(ctx, "node"); err != nil || r.Failed || r.Output != "'"+f.name+"'" {
		t.Errorf("Command(node) = %+v, %v", r, err)
	}
	if r, err := c.Command(ctx, "reward p 1"); err != nil || !r.Failed || r.Code != wire.CodeNoQuorum || r.Outcome != wire.OutcomeNotApplied {
		t.Errorf("Command(reward p 1) = %+v, %v; want a refusal with its code", r, err)
	}

	// After Close, calls fail at once.
	c.Close()
	if _, err := c.Reward(ctx, "p", 1); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Reward after Close: %v, want transport.ErrClosed", err)
	}
}

func TestDialErrors(t *testing.T) {
	port := testenv.FreePort(t)
	ctx := context.Background()

	// No node on this host: no name service.
	_, err := client.Dial(ctx, "app", client.Config{NamesPort: port, Cookie: secret})
	if !errors.Is(err, names.ErrNoService) || !strings.Contains(err.Error(), "name service") {
		t.Errorf("dial with no name service: %v, want names.ErrNoService", err)
	}
	t.Logf("no name service: %v", err)

	startFake(t, client.FullName("app"), "127.0.0.1", port)
	_, err = client.Dial(ctx, "nobody", client.Config{NamesPort: port, Cookie: secret})
	if !errors.Is(err, names.ErrNotFound) || !strings.Contains(err.Error(), "no node named "+client.FullName("nobody")) {
		t.Errorf("dial of an unknown name: %v, want names.ErrNotFound", err)
	}
	t.Logf("unknown name: %v", err)

	_, err = client.Dial(ctx, "app", client.Config{NamesPort: port, Cookie: mustCookie("another cluster's cookie, long enough")})
	if !errors.Is(err, transport.ErrAuth) || !strings.Contains(err.Error(), "cookie mismatch") {
		t.Errorf("dial with another cookie: %v, want a cookie mismatch", err)
	}
}

// A node bound to one of this host's interface addresses, not loopback, is
// found by this host's name as well: its name service listens there.
func TestFindNodeBoundToInterface(t *testing.T) {
	bind := testenv.InterfaceIPv4(t)
	port := testenv.FreePort(t)
	f := startFake(t, client.FullName("app"), bind, port)
	c := dial(t, "app", client.Config{NamesPort: port, Cookie: secret})
	if host, _, _ := net.SplitHostPort(c.Addr()); host != bind {
		t.Errorf("reached %s at %s, want it on %s", f.name, c.Addr(), bind)
	}
	if r, err := c.Command(context.Background(), "node"); err != nil || r.Output != "'"+f.name+"'" {
		t.Errorf("Command(node) = %+v, %v", r, err)
	}
}
