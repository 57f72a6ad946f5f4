package membership

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/hashicorp/serf/serf"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// detectDeadline bounds how long a test waits for the cluster to notice
// something. It is far above the expected 1-2 s so that a loaded machine
// running -race does not fail the tests; the measured times are logged.
const detectDeadline = 20 * time.Second

// testLog collects Serf's log lines for a test: they go to t.Logf (shown
// with -v or on failure) until the test's cleanup closes it, and can be
// searched. Memberlist goroutines may still log after Shutdown returns, and
// t.Logf after a test has completed panics.
type testLog struct {
	t      *testing.T
	mu     sync.Mutex
	closed bool
	lines  []string
}

func newTestLog(t *testing.T) *testLog {
	l := &testLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.closed = true
	})
	return l
}

func (l *testLog) logf(prefix string) func(string, ...any) {
	return func(format string, args ...any) {
		line := prefix + ": " + fmt.Sprintf(format, args...)
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.closed {
			return
		}
		l.lines = append(l.lines, line)
		if !strings.Contains(line, "[DEBUG]") {
			l.t.Log(line)
		}
	}
}

func (l *testLog) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// checkGoroutines makes the test wait, after every member has been shut
// down, until the goroutines Serf and memberlist leave behind (a probe
// waiting out its interval, a stream handler waiting out its deadline) have
// exited, and fails it if some never do. Call it first, so that its
// cleanup runs after the members' Shutdown.
func checkGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := goleak.Find(ignore)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines left after Shutdown: %v", err)
				return
			}
		}
	})
}

type testMember struct {
	*Membership
	name    string
	changes atomic.Int64 // OnChange calls
}

func (m *testMember) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port()))
}

// startMember starts a member with ProfileLocal on 127.0.0.1 and shuts it
// down at the end of the test.
func startMember(t *testing.T, l *testLog, name string, port int, tags map[string]string, tr *FaultTransport) *testMember {
	t.Helper()
	tm := &testMember{name: name}
	var self atomic.Pointer[Membership]
	cfg := Config{
		Name:     name,
		BindAddr: "127.0.0.1",
		Port:     port,
		Tags:     tags,
		Profile:  ProfileLocal,
		OnChange: func() {
			// Reading the members from inside the callback must not
			// deadlock with Serf delivering the next event.
			if m := self.Load(); m != nil {
				_ = m.Alive()
			}
			tm.changes.Add(1)
		},
		Logf: l.logf(name),
	}
	if tr != nil {
		cfg.Transport = tr
	}
	m, err := Start(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	self.Store(m)
	tm.Membership = m
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Errorf("shutdown %s: %v", name, err)
		}
	})
	return tm
}

// startCluster starts members named n1, n2, ... with tags {"boot": "1"},
// joins them all through the first one and waits until everyone sees
// everyone.
func startCluster(t *testing.T, l *testLog, n int, transports []*FaultTransport) []*testMember {
	t.Helper()
	members := make([]*testMember, n)
	for i := range members {
		var tr *FaultTransport
		if transports != nil {
			tr = transports[i]
		}
		name := fmt.Sprintf("n%d@test", i+1)
		members[i] = startMember(t, l, name, 0, map[string]string{"boot": "1", "tp": strconv.Itoa(7000 + i)}, tr)
	}
	for _, m := range members[1:] {
		if n, err := m.Join([]string{members[0].addr()}); err != nil || n != 1 {
			t.Fatalf("%s: join %s: %d, %v", m.name, members[0].addr(), n, err)
		}
	}
	var names []string
	for _, m := range members {
		names = append(names, m.name)
	}
	for _, m := range members {
		waitFor(t, m.name+" sees "+strings.Join(names, ", "), func() bool {
			return slices.Equal(aliveNames(m), names)
		})
	}
	return members
}

// waitFor polls cond until it holds and returns how long that took; it
// fails the test after detectDeadline.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > detectDeadline {
			t.Fatalf("%s: not true after %v", what, detectDeadline)
		}
		<-tick.C
	}
	return time.Since(start)
}

func aliveNames(m *testMember) []string {
	var names []string
	for _, a := range m.Alive() {
		names = append(names, a.Name)
	}
	return names
}

// aliveMember returns name as m sees it, if m sees it alive.
func aliveMember(m *testMember, name string) (Member, bool) {
	for _, a := range m.Alive() {
		if a.Name == name {
			return a, true
		}
	}
	return Member{}, false
}

// serfStatus is Serf's own status of name as seen by m, alive or not.
func serfStatus(m *testMember, name string) serf.MemberStatus {
	for _, sm := range m.serf.Members() {
		if sm.Name == name {
			return sm.Status
		}
	}
	return serf.StatusNone
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	checkGoroutines(t)
	if _, err := Start(Config{BindAddr: "127.0.0.1"}); err == nil {
		t.Error("Start without a name succeeded")
	}
	if _, err := Start(Config{Name: "x@test", BindAddr: "127.0.0.1", Profile: Profile(42)}); err == nil || !strings.Contains(err.Error(), "profile") {
		t.Errorf("Start with an unknown profile: %v", err)
	}
}

func TestStartOnBusyPortFails(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	a := startMember(t, l, "a@test", 0, nil, nil)
	_, err := Start(Config{Name: "b@test", BindAddr: "127.0.0.1", Port: a.Port(), Logf: l.logf("b@test")})
	if err == nil {
		t.Fatal("second member on the same port started")
	}
	if !strings.Contains(err.Error(), strconv.Itoa(a.Port())) {
		t.Errorf("error does not name the port: %v", err)
	}
}

func TestJoinUnreachable(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	a := startMember(t, l, "a@test", 0, nil, nil)

	// A port nobody listens on: connections are refused at once.
	dead := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))

	n, err := a.Join([]string{dead})
	if err == nil || n != 0 {
		t.Fatalf("join %s: %d, %v; want an error", dead, n, err)
	}
	if !strings.Contains(err.Error(), dead) {
		t.Errorf("error does not name the address: %v", err)
	}
	if _, err := a.Join(nil); err == nil {
		t.Error("join with no address succeeded")
	}
}

func TestCallsAfterShutdown(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	a := startMember(t, l, "a@test", 0, nil, nil)
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := a.SetTags(map[string]string{"boot": "2"}); err == nil {
		t.Error("SetTags after Shutdown succeeded")
	}
	if err := a.Leave(); err == nil {
		t.Error("Leave after Shutdown succeeded")
	}
	if _, err := a.Join([]string{"127.0.0.1:1"}); err == nil {
		t.Error("Join after Shutdown succeeded")
	}
	if isClosed(a.ShutdownCh()) {
		t.Error("Shutdown closed ShutdownCh")
	}
}

func TestJoinSeesAllWithTags(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	ms := startCluster(t, l, 3, nil)

	for _, m := range ms {
		alive := m.Alive()
		for i, a := range alive {
			peer := ms[i]
			if a.Name != peer.name || a.Addr != "127.0.0.1" || a.Port != peer.Port() {
				t.Errorf("%s sees %+v, want %s at 127.0.0.1:%d", m.name, a, peer.name, peer.Port())
			}
			want := map[string]string{"boot": "1", "tp": strconv.Itoa(7000 + i)}
			if fmt.Sprint(a.Tags) != fmt.Sprint(want) {
				t.Errorf("%s sees %s with tags %v, want %v", m.name, a.Name, a.Tags, want)
			}
		}
		if m.changes.Load() == 0 {
			t.Errorf("%s: OnChange never called", m.name)
		}
	}

	// The returned tags are a copy.
	ms[0].Alive()[1].Tags["boot"] = "mutated"
	if got, _ := aliveMember(ms[0], ms[1].name); got.Tags["boot"] != "1" {
		t.Errorf("mutating a returned tag map changed the membership: %v", got.Tags)
	}
}

func TestTagUpdateSeen(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	ms := startCluster(t, l, 3, nil)
	a := ms[0]

	before := ms[1].changes.Load()
	if err := a.SetTags(map[string]string{"boot": "2", "tp": "7000"}); err != nil {
		t.Fatalf("set tags: %v", err)
	}
	for _, m := range ms {
		took := waitFor(t, m.name+" sees the new boot id of "+a.name, func() bool {
			got, ok := aliveMember(m, a.name)
			return ok && got.Tags["boot"] == "2"
		})
		t.Logf("%s saw the tag update after %v", m.name, took)
	}
	waitFor(t, "OnChange after the tag update", func() bool { return ms[1].changes.Load() > before })
}

func TestKilledMemberDetected(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	ms := startCluster(t, l, 3, nil)
	victim := ms[2]

	before := ms[0].changes.Load()
	// Shutdown without Leave: the sockets close and nothing is said, as
	// after kill -9.
	if err := victim.Shutdown(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, m := range ms[:2] {
		waitFor(t, m.name+" sees "+victim.name+" gone", func() bool {
			_, ok := aliveMember(m, victim.name)
			return !ok
		})
		t.Logf("%s: %s not alive %v after it was killed", m.name, victim.name, time.Since(start))
	}
	for _, m := range ms[:2] {
		if st := serfStatus(m, victim.name); st != serf.StatusFailed {
			t.Errorf("%s: Serf status of %s is %v, want failed", m.name, victim.name, st)
		}
	}
	waitFor(t, "OnChange after the failure", func() bool { return ms[0].changes.Load() > before })
	if isClosed(victim.ShutdownCh()) {
		t.Error("Shutdown closed ShutdownCh; it is only for shutdowns Serf decides on")
	}
}

func TestGracefulLeaveSeen(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	ms := startCluster(t, l, 3, nil)
	leaver := ms[2]

	start := time.Now()
	if err := leaver.Leave(); err != nil {
		t.Fatalf("leave: %v", err)
	}
	t.Logf("Leave returned after %v", time.Since(start))
	if _, ok := aliveMember(leaver, leaver.name); ok {
		t.Errorf("%s still lists itself alive after Leave", leaver.name)
	}
	for _, m := range ms[:2] {
		waitFor(t, m.name+" sees "+leaver.name+" left", func() bool {
			_, alive := aliveMember(m, leaver.name)
			return !alive && serfStatus(m, leaver.name) == serf.StatusLeft
		})
	}
	if err := leaver.Shutdown(); err != nil {
		t.Fatal(err)
	}
}

// TestRestartSameNameAndPort restarts a member abruptly under the same name
// and port, once before the others notice it died and once after, as
// start.sh does after a kill -9. The new process must be accepted with its
// new tags, with no name conflict.
func TestRestartSameNameAndPort(t *testing.T) {
	for _, tc := range []struct {
		name           string
		waitForFailure bool
	}{
		{name: "before detection"},
		{name: "after detection", waitForFailure: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			l := newTestLog(t)
			ms := startCluster(t, l, 3, nil)
			old := ms[2]
			port := old.Port()

			if err := old.Shutdown(); err != nil {
				t.Fatal(err)
			}
			if tc.waitForFailure {
				for _, m := range ms[:2] {
					waitFor(t, m.name+" sees "+old.name+" gone", func() bool {
						_, ok := aliveMember(m, old.name)
						return !ok
					})
				}
			}

			start := time.Now()
			restarted := startMember(t, l, old.name, port, map[string]string{"boot": "2", "tp": "7002"}, nil)
			if restarted.Port() != port {
				t.Fatalf("restarted on port %d, want %d", restarted.Port(), port)
			}
			if _, err := restarted.Join([]string{ms[0].addr()}); err != nil {
				t.Fatalf("rejoin: %v", err)
			}
			for _, m := range []*testMember{ms[0], ms[1], restarted} {
				waitFor(t, m.name+" sees the new incarnation of "+old.name, func() bool {
					got, ok := aliveMember(m, old.name)
					return ok && got.Tags["boot"] == "2" && got.Port == port && len(m.Alive()) == 3
				})
			}
			t.Logf("new incarnation seen by all %v after restart", time.Since(start))

			for _, m := range []*testMember{ms[0], ms[1], restarted} {
				if isClosed(m.ShutdownCh()) {
					t.Errorf("%s: Serf shut itself down", m.name)
				}
			}
			// Memberlist logs "Conflicting address", Serf "Name conflict".
			if l.contains("onflict") {
				t.Error("the restart caused a name conflict")
			}
		})
	}
}

// TestNameConflictShutsNewcomerDown starts a second process under the name
// of a live member, at another port: the cluster keeps the first, and the
// newcomer's Serf shuts itself down, which ShutdownCh reports.
func TestNameConflictShutsNewcomerDown(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	ms := startCluster(t, l, 3, nil)
	owner := ms[2]

	dup := startMember(t, l, owner.name, 0, map[string]string{"boot": "dup"}, nil)
	if _, err := dup.Join([]string{ms[0].addr()}); err != nil {
		t.Fatalf("join: %v", err)
	}
	start := time.Now()
	select {
	case <-dup.ShutdownCh():
		t.Logf("newcomer shut down %v after joining", time.Since(start))
	case <-time.After(detectDeadline):
		t.Fatal("newcomer with a duplicate name did not shut down")
	}
	for _, m := range ms {
		if isClosed(m.ShutdownCh()) {
			t.Errorf("%s: Serf shut itself down", m.name)
		}
		got, ok := aliveMember(m, owner.name)
		if !ok || got.Port != owner.Port() || got.Tags["boot"] != "1" {
			t.Errorf("%s sees %s as %+v (alive %v), want the original at port %d", m.name, owner.name, got, ok, owner.Port())
		}
	}
}

// TestPartitionSeenFailedAndHealed cuts one member off with the fault
// transport: each side sees the other failed. When the network is back,
// Serf's reconnection merges them again.
func TestPartitionSeenFailedAndHealed(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	var trs []*FaultTransport
	for range 3 {
		tr, err := NewFaultTransport("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		// The member's Shutdown shuts its transport down; this covers
		// a test that fails before the member exists.
		t.Cleanup(func() { _ = tr.Shutdown() })
		trs = append(trs, tr)
	}
	ms := startCluster(t, l, 3, trs)
	a, b, c := ms[0], ms[1], ms[2]

	trs[0].Block(c.addr())
	trs[1].Block(c.addr())
	trs[2].Block(a.addr(), b.addr())
	start := time.Now()
	for _, m := range []*testMember{a, b} {
		waitFor(t, m.name+" sees "+c.name+" failed", func() bool {
			_, ok := aliveMember(m, c.name)
			return !ok && serfStatus(m, c.name) == serf.StatusFailed
		})
		t.Logf("%s: %s failed %v after the partition", m.name, c.name, time.Since(start))
	}
	waitFor(t, c.name+" sees itself alone", func() bool {
		return slices.Equal(aliveNames(c), []string{c.name})
	})
	t.Logf("%s alone %v after the partition", c.name, time.Since(start))

	for _, tr := range trs {
		tr.UnblockAll()
	}
	start = time.Now()
	all := []string{a.name, b.name, c.name}
	for _, m := range ms {
		waitFor(t, m.name+" sees everyone again", func() bool {
			return slices.Equal(aliveNames(m), all)
		})
	}
	t.Logf("healed %v after the network came back", time.Since(start))
	for _, m := range ms {
		if isClosed(m.ShutdownCh()) {
			t.Errorf("%s: Serf shut itself down", m.name)
		}
	}
}

// DefaultConfig is valid as it is; a gossip key of the wrong size or an
// empty bind address is refused before anything listens.
func TestConfigValidate(t *testing.T) {
	checkGoroutines(t)
	if err := DefaultConfig("x@test").Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	cfg := DefaultConfig("x@test")
	cfg.SecretKey = make([]byte, 15)
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "16, 24 or 32 bytes") {
		t.Errorf("Start with a 15-byte key: %v", err)
	}
	cfg = DefaultConfig("x@test")
	cfg.BindAddr = ""
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "BindAddr") {
		t.Errorf("Start without a bind address: %v", err)
	}
}
