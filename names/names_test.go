package names

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fast shrinks every timeout so failure detection takes milliseconds.
var fast = timing{
	ping:       50 * time.Millisecond,
	reply:      time.Second,
	idle:       300 * time.Millisecond,
	holderIdle: 500 * time.Millisecond,
	clientLife: 2 * time.Second,
	dupGrace:   200 * time.Millisecond,
	dial:       time.Second,
	start:      5 * time.Second,
	maxConns:   64,
}

type harness struct {
	t    *testing.T
	port int
	addr string
	tm   timing
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	port := testenv.FreePort(t)
	return &harness{t: t, port: port, addr: fmt.Sprintf("127.0.0.1:%d", port), tm: fast}
}

func (h *harness) config(name string, boot uint64) Config {
	cfg := DefaultConfig(Entry{Name: name, GossipPort: 7000 + int(boot), TransportPort: 8000 + int(boot), Boot: boot})
	cfg.Port = h.port
	cfg.Logf = h.t.Logf
	cfg.timing = &h.tm
	return cfg
}

func (h *harness) register(name string, boot uint64) (*Registration, error) {
	return Register(context.Background(), h.config(name, boot))
}

func (h *harness) mustRegister(name string, boot uint64) *Registration {
	h.t.Helper()
	r, err := h.register(name, boot)
	if err != nil {
		h.t.Fatalf("register %s: %v", name, err)
	}
	h.t.Cleanup(func() { r.Close() })
	return r
}

func (h *harness) lookup(name string) (Entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return Lookup(ctx, h.addr, name)
}

// kill leaves as kill -9 would: connections and listener closed, no
// goodbye.
func kill(r *Registration) {
	r.abrupt.Store(true)
	r.shutdown()
}

func (r *Registration) server() *server {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.srv
}

// eventually polls cond until it returns nil, failing the test after a
// deadline generous enough for a loaded -race run.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after 10s: %v", what, err)
		}
		<-tick.C
	}
}

func resolves(h *harness, name string, boot uint64) func() error {
	return func() error {
		e, err := h.lookup(name)
		if err != nil {
			return err
		}
		if e.Boot != boot {
			return errors.New("found an older incarnation")
		}
		return nil
	}
}

func TestRegisterAndLookup(t *testing.T) {
	h := newHarness(t)
	r1 := h.mustRegister("app_node1@host", 1)
	r2 := h.mustRegister("app_node2@host", 2)
	if !r1.Serving() || r2.Serving() {
		t.Fatalf("serving: first %v, second %v; want the first only", r1.Serving(), r2.Serving())
	}
	for _, want := range []Entry{
		{Name: "app_node1@host", GossipPort: 7001, TransportPort: 8001, Boot: 1},
		{Name: "app_node2@host", GossipPort: 7002, TransportPort: 8002, Boot: 2},
	} {
		got, err := h.lookup(want.Name)
		if err != nil {
			t.Fatalf("lookup %s: %v", want.Name, err)
		}
		if got != want {
			t.Fatalf("lookup %s = %+v, want %+v", want.Name, got, want)
		}
	}
	list, err := Names(context.Background(), h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "app_node1@host" || list[1].Name != "app_node2@host" {
		t.Fatalf("Names = %+v", list)
	}
}

func TestLookupMissingName(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	_, err := h.lookup("app_node9@host")
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoService) {
		t.Fatalf("err = %v; want ErrNotFound only", err)
	}
	if !strings.Contains(err.Error(), "no node named app_node9@host") {
		t.Fatalf("err = %q; want it to say no node named app_node9@host", err)
	}
}

func TestLookupWithoutService(t *testing.T) {
	h := newHarness(t)
	_, err := h.lookup("app_node1@host")
	if !errors.Is(err, ErrNoService) {
		t.Fatalf("err = %v; want ErrNoService", err)
	}
	if !strings.Contains(err.Error(), "no name service answering at "+h.addr) {
		t.Fatalf("err = %q", err)
	}
	if _, err := Names(context.Background(), h.addr); !errors.Is(err, ErrNoService) {
		t.Fatalf("Names err = %v; want ErrNoService", err)
	}
}

func TestCloseFreesNameAtOnce(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	r2 := h.mustRegister("app_node2@host", 2)
	r2.Close()
	// The goodbye is acknowledged, so no polling is needed.
	if _, err := h.lookup("app_node2@host"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup after Close: %v; want ErrNotFound", err)
	}
	h.mustRegister("app_node2@host", 3)
	if err := resolves(h, "app_node2@host", 3)(); err != nil {
		t.Fatal(err)
	}
}

func TestKilledHolderFreesName(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	r2 := h.mustRegister("app_node2@host", 2)
	kill(r2)
	// Restarted at once: must not be refused as a duplicate of the
	// incarnation whose connection just died.
	h.mustRegister("app_node2@host", 3)
	if err := resolves(h, "app_node2@host", 3)(); err != nil {
		t.Fatal(err)
	}
}

func TestKilledHolderLeavesListing(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	kill(h.mustRegister("app_node2@host", 2))
	eventually(t, "killed node unregistered", func() error {
		_, err := h.lookup("app_node2@host")
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return errors.New("still registered")
	})
}

func TestDuplicateRefused(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	h.mustRegister("app_node2@host", 2)
	for _, name := range []string{"app_node1@host", "app_node2@host"} {
		r, err := h.register(name, 9)
		if err == nil {
			r.Close()
			t.Fatalf("second %s registered", name)
		}
		if !errors.Is(err, ErrNameTaken) {
			t.Fatalf("err = %v; want ErrNameTaken", err)
		}
		if !strings.Contains(err.Error(), "a node named "+name+" is already running on this host") {
			t.Fatalf("err = %q", err)
		}
	}
	if err := resolves(h, "app_node2@host", 2)(); err != nil {
		t.Fatalf("the first registration was disturbed: %v", err)
	}
}

func TestTakeoverAfterServerKilled(t *testing.T) {
	h := newHarness(t)
	r1 := h.mustRegister("app_node1@host", 1)
	r2 := h.mustRegister("app_node2@host", 2)
	r3 := h.mustRegister("app_node3@host", 3)
	if !r1.Serving() {
		t.Fatal("the first registration does not serve")
	}
	kill(r1)
	eventually(t, "one survivor serves and both resolve", func() error {
		if r2.Serving() == r3.Serving() {
			return errors.New("not exactly one survivor serves")
		}
		for i, name := range []string{"app_node2@host", "app_node3@host"} {
			if err := resolves(h, name, uint64(i+2))(); err != nil {
				return err
			}
		}
		if _, err := h.lookup("app_node1@host"); !errors.Is(err, ErrNotFound) {
			return errors.New("the killed server is still listed")
		}
		return nil
	})
	// The killed node restarts under its name and joins the new server.
	r1b := h.mustRegister("app_node1@host", 4)
	if r1b.Serving() {
		t.Fatal("the restarted node serves while a survivor does")
	}
	if err := resolves(h, "app_node1@host", 4)(); err != nil {
		t.Fatal(err)
	}
}

func TestTakeoverAfterServerClosed(t *testing.T) {
	h := newHarness(t)
	r1 := h.mustRegister("app_node1@host", 1)
	r2 := h.mustRegister("app_node2@host", 2)
	r1.Close()
	eventually(t, "the survivor serves", func() error {
		if !r2.Serving() {
			return errors.New("not serving")
		}
		return resolves(h, "app_node2@host", 2)()
	})
	r2.Close()
	if _, err := h.lookup("app_node2@host"); !errors.Is(err, ErrNoService) {
		t.Fatalf("after the last node closed: %v; want ErrNoService", err)
	}
}

func TestHolderReregistersWhenConnectionBreaks(t *testing.T) {
	h := newHarness(t)
	r1 := h.mustRegister("app_node1@host", 1)
	h.mustRegister("app_node2@host", 2)
	srv := r1.server()
	srv.mu.Lock()
	c := srv.entries["app_node2@host"].owner.c
	srv.mu.Unlock()
	c.Close()
	eventually(t, "holder registered again", func() error {
		if srv.registers.Load() < 2 {
			return errors.New("no second registration yet")
		}
		return resolves(h, "app_node2@host", 2)()
	})
}

func TestIdleHolderStaysRegistered(t *testing.T) {
	h := newHarness(t)
	r1 := h.mustRegister("app_node1@host", 1)
	h.mustRegister("app_node2@host", 2)
	srv := r1.server()
	// Enough pings to span several holderIdle periods.
	eventually(t, "pings seen", func() error {
		if srv.pings.Load() < 30 {
			return errors.New("too few pings")
		}
		return nil
	})
	if n := srv.registers.Load(); n != 1 {
		t.Fatalf("holder registered %d times; its connection should have lived throughout", n)
	}
}

func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rawCall(t *testing.T, c net.Conn, req request) reply {
	t.Helper()
	req.V = protoVersion
	if err := writeFrame(c, time.Second, req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rep reply
	if err := readFrame(c, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// closedByPeer waits for the service to close c, and fails if it does not
// within five seconds.
func closedByPeer(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if isTimeout(err) {
			t.Fatal("the service did not close the connection")
		}
		return
	}
}

func TestSameIncarnationReplacesItsOldConnection(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	e := Entry{Name: "app_node2@host", GossipPort: 1, TransportPort: 2, Boot: 77}
	a := rawDial(t, h.addr)
	if rep := rawCall(t, a, request{Op: opRegister, Entry: &e}); rep.Status != statusOK {
		t.Fatalf("first registration: %+v", rep)
	}
	b := rawDial(t, h.addr)
	if rep := rawCall(t, b, request{Op: opRegister, Entry: &e}); rep.Status != statusOK {
		t.Fatalf("same incarnation again: %+v", rep)
	}
	closedByPeer(t, a)
	if err := resolves(h, "app_node2@host", 77)(); err != nil {
		t.Fatal(err)
	}
	if rep := rawCall(t, b, request{Op: opPing}); rep.Status != statusOK {
		t.Fatalf("ping on the new connection: %+v", rep)
	}
}

func TestSilentHolderDropped(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	c := rawDial(t, h.addr)
	e := Entry{Name: "app_node2@host", GossipPort: 1, TransportPort: 2, Boot: 5}
	if rep := rawCall(t, c, request{Op: opRegister, Entry: &e}); rep.Status != statusOK {
		t.Fatalf("register: %+v", rep)
	}
	closedByPeer(t, c)
	if _, err := h.lookup("app_node2@host"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup after the holder went silent: %v; want ErrNotFound", err)
	}
}

func TestSilentClientDropped(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	closedByPeer(t, rawDial(t, h.addr))
}

func TestGarbageDoesNotStopService(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	frame := func(body []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		return append(b, body...)
	}
	for name, input := range map[string][]byte{
		"http":             []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"zero length":      {0, 0, 0, 0},
		"oversize length":  append(binary.BigEndian.AppendUint32(nil, maxFrame+1), make([]byte, 64)...),
		"huge length":      {0xff, 0xff, 0xff, 0xff, 1, 2, 3},
		"not msgpack":      frame([]byte{0xc1, 0xc1, 0xc1}),
		"msgpack non-map":  frame([]byte{0x93, 1, 2, 3}),
		"unknown op":       frame([]byte{0x82, 0xa1, 'v', 1, 0xa2, 'o', 'p', 99}),
		"wrong version":    frame([]byte{0x82, 0xa1, 'v', 9, 0xa2, 'o', 'p', byte(opPing)}),
		"truncated string": frame([]byte{0x81, 0xa1, 'n', 0xdb, 0xff, 0xff, 0xff, 0xff}),
	} {
		c := rawDial(t, h.addr)
		if _, err := c.Write(input); err != nil {
			t.Fatalf("%s: write: %v", name, err)
		}
		closedByPeer(t, c)
		if err := resolves(h, "app_node1@host", 1)(); err != nil {
			t.Fatalf("after %s: %v", name, err)
		}
	}
}

func TestBadRequestsAnsweredPlainly(t *testing.T) {
	h := newHarness(t)
	h.mustRegister("app_node1@host", 1)
	c := rawDial(t, h.addr)
	long := strings.Repeat("x", maxNameLen+1)
	for _, req := range []request{
		{Op: opLookup, Name: long},
		{Op: opLookup, Name: ""},
		{Op: opRegister},
		{Op: opRegister, Entry: &Entry{Name: long, GossipPort: 1, TransportPort: 1}},
		{Op: opRegister, Entry: &Entry{Name: "a b@host", GossipPort: 1, TransportPort: 1}},
		{Op: opRegister, Entry: &Entry{Name: "ok@host", GossipPort: 0, TransportPort: 1}},
	} {
		if rep := rawCall(t, c, req); rep.Status != statusBadRequest || rep.Msg == "" {
			t.Fatalf("%+v answered %+v; want a bad-request reply with a reason", req, rep)
		}
	}
	if _, err := h.lookup(long); err == nil || errors.Is(err, ErrNoService) {
		t.Fatalf("client-side check of an overlong name: %v", err)
	}
}

func TestConnectionCap(t *testing.T) {
	h := newHarness(t)
	h.tm.maxConns = 4
	h.tm.idle = 10 * time.Second // keep the fillers connected
	h.tm.clientLife = 10 * time.Second
	r1 := h.mustRegister("app_node1@host", 1)
	srv := r1.server()
	var fillers []net.Conn
	for range 4 {
		fillers = append(fillers, rawDial(t, h.addr))
	}
	eventually(t, "fillers accepted", func() error {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if len(srv.conns) < 4 {
			return errors.New("not yet")
		}
		return nil
	})
	closedByPeer(t, rawDial(t, h.addr))
	for _, c := range fillers {
		c.Close()
	}
	eventually(t, "service answers again", resolves(h, "app_node1@host", 1))
}

func TestIsLocal(t *testing.T) {
	tcp := func(s string) *net.TCPAddr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 1} }
	for _, c := range []struct {
		remote, local string
		want          bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"127.0.0.2", "127.0.0.1", true},
		{"::1", "::1", true},
		{"192.0.2.7", "192.0.2.7", true},
		{"::ffff:192.0.2.7", "192.0.2.7", true},
		{"192.0.2.8", "192.0.2.7", false},
		{"2001:db8::1", "2001:db8::2", false},
	} {
		if got := isLocal(tcp(c.remote), tcp(c.local)); got != c.want {
			t.Errorf("isLocal(%s, %s) = %v, want %v", c.remote, c.local, got, c.want)
		}
	}
}

func TestRemoteRegistrationRefused(t *testing.T) {
	s := &server{t: &fast, entries: map[string]*slot{}, stop: make(chan struct{})}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	rep := s.register(&sconn{c: a, local: false}, &Entry{Name: "x@far", GossipPort: 1, TransportPort: 1})
	if rep.Status != statusRefused || !strings.Contains(rep.Msg, "only from its own host") {
		t.Fatalf("reply = %+v", rep)
	}
}

func TestRegisterValidatesConfig(t *testing.T) {
	h := newHarness(t)
	if err := DefaultConfig(Entry{Name: "n@h", GossipPort: 1, TransportPort: 1}).Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	for _, cfg := range []Config{
		{BindAddr: "127.0.0.1", Port: h.port, Entry: Entry{Name: "", GossipPort: 1, TransportPort: 1}},
		{BindAddr: "127.0.0.1", Port: h.port, Entry: Entry{Name: "n@h", GossipPort: 70000, TransportPort: 1}},
		{BindAddr: "127.0.0.1", Port: -1, Entry: Entry{Name: "n@h", GossipPort: 1, TransportPort: 1}},
		{BindAddr: "localhost", Port: h.port, Entry: Entry{Name: "n@h", GossipPort: 1, TransportPort: 1}},
		{BindAddr: "127.0.0.1", Entry: Entry{Name: "n@h", GossipPort: 1, TransportPort: 1}}, // no port: start from DefaultConfig
	} {
		if r, err := Register(context.Background(), cfg); err == nil {
			r.Close()
			t.Fatalf("%+v accepted", cfg)
		}
	}
}

// A port held by something that accepts but never answers: Register gives
// up with a sentence that says so, rather than hanging.
func TestRegisterPortHeldByStranger(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	tm := fast
	tm.reply = 100 * time.Millisecond
	tm.start = 500 * time.Millisecond
	cfg := DefaultConfig(Entry{Name: "n@h", GossipPort: 1, TransportPort: 1})
	cfg.Port = port
	cfg.timing = &tm
	_, err = Register(context.Background(), cfg)
	if !errors.Is(err, ErrNoService) || !strings.Contains(err.Error(), "does not answer as an appnode name service") {
		t.Fatalf("err = %v", err)
	}
}

func TestLookupHonoursCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Lookup(ctx, ln.Addr().String(), "n@h")
		done <- err
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v; want context.Canceled", err)
	}
}

func TestReadFrameBounds(t *testing.T) {
	var rep reply
	if err := readFrame(strings.NewReader("\x00\x00\x10\x01"), &rep); !errors.Is(err, errFrameSize) {
		t.Fatalf("oversize: %v", err)
	}
	if err := readFrame(strings.NewReader("\x00\x00\x00\x05ab"), &rep); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %v", err)
	}
}

// A node's HTTP port travels with its entry, so that scripts find the
// front door of every node on a host.
func TestEntryCarriesHTTPPort(t *testing.T) {
	h := newHarness(t)
	cfg := h.config("app_node1@host", 1)
	cfg.Entry.HTTPPort = 9001
	r, err := Register(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := h.lookup("app_node1@host")
	if err != nil || got != cfg.Entry {
		t.Fatalf("lookup = %+v, %v; want %+v", got, err, cfg.Entry)
	}
	cfg = h.config("app_node2@host", 2)
	cfg.Entry.HTTPPort = 70000
	if r, err := Register(context.Background(), cfg); err == nil {
		r.Close()
		t.Fatal("an HTTP port over 65535 was registered")
	}
}
