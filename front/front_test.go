package front

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/node"
	"github.com/appnode/appnode/wire"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newFront(t *testing.T, fb *fake, tweak func(*Config)) *Front {
	t.Helper()
	m := NewMetrics()
	m.Attach(fb)
	cfg := Config{Backend: fb, Metrics: m, DrainDelay: 10 * time.Millisecond, RequestTimeout: 2 * time.Second}
	if tweak != nil {
		tweak(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close(context.Background()) })
	return f
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// do runs one request through the handler, from 127.0.0.1 unless remote
// is set in the request already.
func do(t *testing.T, f *Front, method, target, body string, header ...string) answer {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.RemoteAddr = "127.0.0.1:40000"
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "RemoteAddr" {
			r.RemoteAddr = header[i+1]
			continue
		}
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	f.Handler().ServeHTTP(w, r)
	a := answer{status: w.Code, header: w.Header(), raw: w.Body.String()}
	if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(w.Body.Bytes(), &a.body); err != nil {
			t.Fatalf("%s %s: body is not JSON: %v\n%s", method, target, err, w.Body)
		}
	}
	return a
}

func (a answer) errCode() string {
	e, _ := a.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (a answer) outcome() string {
	e, _ := a.body["error"].(map[string]any)
	s, _ := e["outcome"].(string)
	return s
}

func (a answer) want(t *testing.T, status int, code string) {
	t.Helper()
	if a.status != status || a.errCode() != code {
		t.Fatalf("answer %d %q, want %d %q: %s", a.status, a.errCode(), status, code, a.raw)
	}
}

func TestRewardThenReadFromTheSameAPI(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	a := do(t, f, "POST", "/players/player1/reward", `{"points": 5}`)
	if a.status != 200 || a.body["total"] != 5.0 || a.body["player"] != "player1" || a.body["owner"] != fb.name ||
		a.body["keeper"] != "app_node2@host" || a.body["served_by"] != fb.name {
		t.Fatalf("reward: %d %s", a.status, a.raw)
	}
	if a = do(t, f, "POST", "/players/player1/reward?points=-2", ""); a.status != 200 || a.body["total"] != 3.0 {
		t.Fatalf("reward ?points=-2: %d %s", a.status, a.raw)
	}
	if a = do(t, f, "POST", "/players/player1/reward", `{"points": "4"}`); a.status != 200 || a.body["total"] != 7.0 {
		t.Fatalf("reward with points as a string: %d %s", a.status, a.raw)
	}
	if a = do(t, f, "GET", "/players/player1", ""); a.status != 200 || a.body["total"] != 7.0 || a.body["owner"] != fb.name {
		t.Fatalf("read: %d %s", a.status, a.raw)
	}
	a = do(t, f, "GET", "/players/nobody", "")
	a.want(t, 404, "not_found")
	if a.outcome() != "" {
		t.Fatalf("a read's error carries an outcome: %s", a.raw)
	}
	// Player names travel escaped in the path.
	if a = do(t, f, "POST", "/players/player%20two/reward?points=1", ""); a.status != 200 || a.body["player"] != "player two" {
		t.Fatalf("escaped name: %d %s", a.status, a.raw)
	}
}

// Non-integer points crash the primary as at the console; the answer is
// 422 naming the crash, and the next reward continues from the kept total.
func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, func(c *Config) { c.MaxBody = 64 })
	do(t, f, "POST", "/players/player1/reward", `{"points": 5}`)
	for _, tc := range []struct {
		name, target, body string
		header             []string
		status             int
		code               string
	}{
		{"non-integer text", "/players/player1/reward", `{"points": "a"}`, nil, 422, "crashed"},
		{"a fraction", "/players/player1/reward", `{"points": 1.5}`, nil, 422, "crashed"},
		{"a boolean", "/players/player1/reward?points=true", ``, nil, 422, "crashed"},
		{"overflow", "/players/player1/reward?points=99999999999999999999", ``, nil, 422, "overflow"},
		{"no points", "/players/player1/reward", `{}`, nil, 400, "bad_request"},
		{"no body", "/players/player1/reward", ``, nil, 400, "bad_request"},
		{"not JSON", "/players/player1/reward", `points=5`, nil, 400, "bad_request"},
		{"unknown field", "/players/player1/reward", `{"points": 5, "bonus": 1}`, nil, 400, "bad_request"},
		{"two values", "/players/player1/reward", `{"points": 5} {"points": 5}`, nil, 400, "bad_request"},
		{"body over the limit", "/players/player1/reward", `{"points": 5` + strings.Repeat(" ", 100) + `}`, nil, 413, "body_too_large"},
		{"control character in the name", "/players/bad%01name/reward?points=1", ``, nil, 400, "bad_request"},
		{"name too long", "/players/" + strings.Repeat("p", 200) + "/reward?points=1", ``, nil, 400, "bad_request"},
		{"key too long", "/players/player1/reward?points=1", ``, []string{"Idempotency-Key", strings.Repeat("k", 300)}, 400, "bad_request"},
	} {
		a := do(t, f, "POST", tc.target, tc.body, tc.header...)
		if a.status != tc.status || a.errCode() != tc.code || a.outcome() != "not_applied" {
			t.Errorf("%s: %d %q %q, want %d %q not_applied: %s", tc.name, a.status, a.errCode(), a.outcome(), tc.status, tc.code, a.raw)
		}
	}
	if a := do(t, f, "POST", "/players/player1/reward", `{"points": "a"}`); !strings.Contains(a.raw, "crash") && !strings.Contains(a.raw, "not an integer") {
		t.Fatalf("the crash is not named: %s", a.raw)
	}
	if a := do(t, f, "POST", "/players/player1/reward", `{"points": 2}`); a.status != 200 || a.body["total"] != 7.0 {
		t.Fatalf("reward after bad input: %d %s, want total 7", a.status, a.raw)
	}
}

func TestIdempotencyKeyAppliesOnce(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	for range 3 {
		a := do(t, f, "POST", "/players/p/reward", `{"points": 5}`, "Idempotency-Key", "order-42")
		if a.status != 200 || a.body["total"] != 5.0 {
			t.Fatalf("retry with the same key: %d %s, want total 5", a.status, a.raw)
		}
	}
	if a := do(t, f, "POST", "/players/p/reward", `{"points": 5}`, "Idempotency-Key", "order-43"); a.body["total"] != 10.0 {
		t.Fatalf("another key: %s, want total 10", a.raw)
	}
}

// Every wire code maps to a status, a stable snake_case code and, for a
// reward, the outcome wire.OutcomeOf gives; a retryable one says when.
func TestNodeErrorsMapToStatusCodeAndOutcome(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	for _, tc := range []struct {
		err        error
		status     int
		code       string
		outcome    string
		retryAfter bool
	}{
		{wire.Errorf(wire.CodeNoQuorum, "minority"), 503, "no_quorum", "not_applied", true},
		{wire.Errorf(wire.CodeTooFewNodes, "alone"), 503, "too_few_nodes", "not_applied", true},
		{wire.Errorf(wire.CodeBusy, "leaving"), 503, "busy", "not_applied", true},
		{wire.Errorf(wire.CodeFenced, "superseded"), 503, "fenced", "not_applied", true},
		{wire.Errorf(wire.CodeDeclaredDead, "declared dead"), 503, "declared_dead", "not_applied", true},
		{wire.Errorf(wire.CodeUnavailable, "peer silent"), 503, "unavailable", "unknown", true},
		{wire.Errorf(wire.CodeUnknown, "keeper did not confirm"), 504, "outcome_unknown", "unknown", true},
		{context.DeadlineExceeded, 504, "outcome_unknown", "unknown", true},
		{fmt.Errorf("dial: %w", wire.ErrGone), 503, "unavailable", "not_applied", true},
		{wire.Errorf(wire.CodeInternal, "bug"), 500, "internal", "unknown", false},
		{wire.Errorf(wire.CodeOverflow, "too big"), 422, "overflow", "not_applied", false},
	} {
		fb.setErr(tc.err)
		a := do(t, f, "POST", "/players/p/reward?points=1", "")
		if a.status != tc.status || a.errCode() != tc.code || a.outcome() != tc.outcome || (a.header.Get("Retry-After") != "") != tc.retryAfter {
			t.Errorf("%v: %d %q %q Retry-After %q; want %d %q %q retry %v", tc.err, a.status, a.errCode(), a.outcome(), a.header.Get("Retry-After"), tc.status, tc.code, tc.outcome, tc.retryAfter)
		}
		if !strings.Contains(a.raw, tc.err.Error()) {
			t.Errorf("%v: message lost: %s", tc.err, a.raw)
		}
	}
	for c := wire.Code(0); c <= wire.CodeNotFound; c++ {
		if _, ok := codeSlugs[c]; !ok {
			t.Errorf("wire code %v has no HTTP name", c)
		}
	}
}

func TestReadinessFollowsTheNode(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	for _, tc := range []struct {
		h    node.Health
		code string
	}{
		{node.Health{Members: 3, Quorate: true}, ""},
		{node.Health{Members: 1, Quorate: true}, "too_few_nodes"},
		{node.Health{Members: 2, Quorate: false}, "no_quorum"},
		{node.Health{Members: 3, Quorate: true, Resetting: true}, "declared_dead"},
		{node.Health{Members: 3, Quorate: true, Leaving: true}, "draining"},
	} {
		fb.setHealth(tc.h)
		a := do(t, f, "GET", "/readyz", "")
		if tc.code == "" {
			if a.status != 200 || a.body["ready"] != true {
				t.Fatalf("%+v: %d %s, want ready", tc.h, a.status, a.raw)
			}
		} else if a.status != 503 || a.body["code"] != tc.code || a.header.Get("Retry-After") == "" {
			t.Fatalf("%+v: %d %s, want 503 %s", tc.h, a.status, a.raw, tc.code)
		}
		if a := do(t, f, "GET", "/livez", ""); a.status != 200 {
			t.Fatalf("livez while %+v: %d", tc.h, a.status)
		}
	}
}

func TestDrainTurnsReadinessFalseFirst(t *testing.T) {
	fb := newFake()
	var calls atomic.Int32
	readyWhenCalled := make(chan int, 2)
	var f *Front
	f = newFront(t, fb, func(c *Config) {
		c.DrainDelay = 50 * time.Millisecond
		c.Drain = func() {
			calls.Add(1)
			readyWhenCalled <- do(t, f, "GET", "/readyz", "").status
		}
	})
	if a := do(t, f, "POST", "/admin/drain", ""); a.status != 202 || a.body["draining"] != true {
		t.Fatalf("drain: %d %s", a.status, a.raw)
	}
	if a := do(t, f, "GET", "/readyz", ""); a.status != 503 || a.body["code"] != "draining" {
		t.Fatalf("readyz just after drain: %d %s", a.status, a.raw)
	}
	if a := do(t, f, "POST", "/admin/drain", ""); a.status != 202 || a.body["already"] != true {
		t.Fatalf("second drain: %d %s", a.status, a.raw)
	}
	select {
	case st := <-readyWhenCalled:
		if st != 503 {
			t.Fatalf("readyz when the handoff began: %d, want 503", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("drain never started the handoff")
	}
	if err := f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the handoff was started %d times", n)
	}
	g := newFront(t, newFake(), nil) // no Drain
	do(t, g, "POST", "/admin/drain", "").want(t, 501, "drain_unsupported")
}

func TestBearerToken(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, func(c *Config) { c.Token = "s3cret" })
	do(t, f, "POST", "/players/p/reward?points=1", "").want(t, 401, "unauthorized")
	do(t, f, "GET", "/metrics", "", "Authorization", "Bearer wrong").want(t, 401, "unauthorized")
	if a := do(t, f, "POST", "/players/p/reward?points=1", "", "Authorization", "Bearer s3cret"); a.status != 200 {
		t.Fatalf("with the token: %d %s", a.status, a.raw)
	}
	if a := do(t, f, "GET", "/livez", ""); a.status != 200 {
		t.Fatalf("livez needs no token: %d", a.status)
	}
	if a := do(t, f, "GET", "/readyz", ""); a.status != 200 {
		t.Fatalf("readyz needs no token: %d", a.status)
	}
	if a := do(t, f, "GET", "/", ""); a.status != 401 || strings.Contains(a.raw, "s3cret") {
		t.Fatalf("page without a token: %d %s", a.status, a.raw)
	}
	do(t, f, "GET", "/?token=nope", "").want(t, 401, "unauthorized")
	a := do(t, f, "GET", "/?token=s3cret", "")
	if a.status != 303 || a.header.Get("Location") != "/" {
		t.Fatalf("browser login: %d %v", a.status, a.header)
	}
	cookie := a.header.Get("Set-Cookie")
	if !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") {
		t.Fatalf("cookie %q", cookie)
	}
	if a := do(t, f, "GET", "/cluster", "", "Cookie", strings.Split(cookie, ";")[0]); a.status != 200 {
		t.Fatalf("with the cookie: %d %s", a.status, a.raw)
	}
}

func TestAdminEndpointsOnlyFromLoopback(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	remote := []string{"RemoteAddr", "10.1.2.3:5555"}
	for _, target := range []string{"/", "/cluster", "/players", "/cluster/events"} {
		do(t, f, "GET", target, "", remote...).want(t, 403, "admin_loopback_only")
	}
	do(t, f, "POST", "/admin/drain", "", remote...).want(t, 403, "admin_loopback_only")
	if a := do(t, f, "POST", "/players/p/reward?points=1", "", remote...); a.status != 200 {
		t.Fatalf("the API from another host: %d %s", a.status, a.raw)
	}
	g := newFront(t, fb, func(c *Config) { c.AdminFromAnywhere = true })
	if a := do(t, g, "GET", "/cluster", "", remote...); a.status != 200 {
		t.Fatalf("admin from anywhere: %d %s", a.status, a.raw)
	}
}

// Beyond MaxInFlight requests the answer is 503 at once, not a queue.
func TestConcurrencyLimit(t *testing.T) {
	fb := newFake()
	fb.block = make(chan struct{})
	f := newFront(t, fb, func(c *Config) { c.MaxInFlight = 1 })
	done := make(chan answer)
	go func() { done <- do(t, f, "POST", "/players/p/reward?points=1", "") }()
	testenv.WaitFor(t, 5*time.Second, "the first request to hold the only slot", func() bool { return len(f.sem) == 1 })
	a := do(t, f, "POST", "/players/p/reward?points=1", "")
	a.want(t, 503, "overloaded")
	if a.header.Get("Retry-After") == "" || a.outcome() != "not_applied" {
		t.Fatalf("overloaded answer: %v %s", a.header, a.raw)
	}
	close(fb.block)
	if a := <-done; a.status != 200 {
		t.Fatalf("the held request: %d %s", a.status, a.raw)
	}
}

// The node's deadline ends a reward that hangs, as outcome unknown.
func TestRequestDeadline(t *testing.T) {
	fb := newFake()
	fb.block = make(chan struct{})
	defer close(fb.block)
	f := newFront(t, fb, func(c *Config) { c.RequestTimeout = 50 * time.Millisecond })
	a := do(t, f, "POST", "/players/p/reward?points=1", "")
	a.want(t, 504, "outcome_unknown")
	if a.outcome() != "unknown" {
		t.Fatalf("a reward cut off by its deadline: %s", a.raw)
	}
}

func TestPlayersArePaged(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	for i := range 7 {
		do(t, f, "POST", fmt.Sprintf("/players/p%d/reward?points=%d", i, i), "")
	}
	var got []string
	cursor := ""
	for range 10 {
		a := do(t, f, "GET", "/players?limit=3&cursor="+cursor, "")
		if a.status != 200 || a.body["node"] != fb.name {
			t.Fatalf("page: %d %s", a.status, a.raw)
		}
		for _, e := range a.body["players"].([]any) {
			got = append(got, e.(map[string]any)["player"].(string))
		}
		cursor = a.body["next"].(string)
		if cursor == "" {
			break
		}
	}
	if strings.Join(got, ",") != "p0,p1,p2,p3,p4,p5,p6" {
		t.Fatalf("pages: %v", got)
	}
	do(t, f, "GET", "/players?limit=0", "").want(t, 400, "bad_request")
	do(t, f, "GET", "/players?limit=100000", "").want(t, 400, "bad_request")
	do(t, f, "GET", "/players?node=nobody@host", "").want(t, 404, "not_found")
	if a := do(t, f, "GET", "/players?node="+fb.name, ""); len(a.body["players"].([]any)) != 7 {
		t.Fatalf("default page: %s", a.raw)
	}
}

func TestClusterAndPageAndUnknownRoutes(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	a := do(t, f, "GET", "/cluster", "")
	members, _ := a.body["members"].([]any)
	if a.status != 200 || a.body["self"] != fb.name || len(members) != 3 || a.body["ready"] != true {
		t.Fatalf("cluster: %d %s", a.status, a.raw)
	}
	if m := members[2].(map[string]any); m["state"] != "down" || m["name"] != "app_node3@host" {
		t.Fatalf("down member: %v", m)
	}
	a = do(t, f, "GET", "/", "")
	if a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html") || !strings.Contains(a.raw, "EventSource") {
		t.Fatalf("page: %d %v", a.status, a.header)
	}
	if strings.Contains(a.raw, "http://") || strings.Contains(a.raw, "https://") {
		t.Fatal("the page refers to another site")
	}
	do(t, f, "GET", "/nothing/here", "").want(t, 404, "no_such_endpoint")
	a = do(t, f, "DELETE", "/players/p", "")
	a.want(t, 405, "method_not_allowed")
	if a.header.Get("Allow") == "" {
		t.Fatal("405 without Allow")
	}
	do(t, f, "GET", "/admin/drain", "").want(t, 405, "method_not_allowed")
}

// Server-Sent Events: a first connection gets the kept events, then live
// ones; a reconnection with Last-Event-ID gets only what it missed.
func TestEventStreamReplaysAndFollows(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	fb.publish("node app_node3@host down")
	fb.publish("keeper of player1 moved from app_node3@host to app_node2@host")
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/cluster/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
	}
	r := bufio.NewReader(resp.Body)
	next := func() (id, data string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("stream ended: %v", err)
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "id: "):
				id = line[4:]
			case strings.HasPrefix(line, "data: "):
				data = line[6:]
			case line == "" && data != "":
				return id, data
			}
		}
	}
	if id, data := next(); id != "1" || !strings.Contains(data, "app_node3@host down") {
		t.Fatalf("first event %s %s", id, data)
	}
	if id, _ := next(); id != "2" {
		t.Fatalf("second event id %s", id)
	}
	testenv.WaitFor(t, 5*time.Second, "the stream to subscribe", func() bool { return fb.subscribers() == 1 })
	fb.publish("node app_node3@host up")
	id, data := next()
	var ev struct {
		Seq   uint64
		Level string
		Text  string
	}
	if err := json.Unmarshal([]byte(data), &ev); err != nil || id != "3" || ev.Seq != 3 || ev.Level != "WARNING" || ev.Text != "node app_node3@host up" {
		t.Fatalf("live event %s %s (%v)", id, data, err)
	}
	resp.Body.Close()
	testenv.WaitFor(t, 5*time.Second, "the stream to end with its client", func() bool { return fb.subscribers() == 0 })

	// Reconnect after event 2: only event 3 comes again.
	req, _ = http.NewRequestWithContext(ctx, "GET", srv.URL+"/cluster/events", nil)
	req.Header.Set("Last-Event-ID", "2")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r = bufio.NewReader(resp.Body)
	if id, _ := next(); id != "3" {
		t.Fatalf("after Last-Event-ID 2 the stream starts at %s", id)
	}
	// Closing the front door ends the stream.
	testenv.WaitFor(t, 5*time.Second, "the second stream to subscribe", func() bool { return fb.subscribers() == 1 })
	go f.Close(context.Background())
	testenv.WaitFor(t, 5*time.Second, "Close to end the stream", func() bool { return fb.subscribers() == 0 })
}

// The metrics follow Prometheus's naming rules, pass promtool, and carry
// what an operator alerts on.
func TestMetricsLintAndContent(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	do(t, f, "POST", "/players/p/reward?points=1", "")
	do(t, f, "GET", "/players/nobody", "")
	f.metrics.Replicated(300*time.Microsecond, nil)
	f.metrics.Forwarded(time.Millisecond, errors.New("x"))
	problems, err := testutil.GatherAndLint(f.metrics.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	a := do(t, f, "GET", "/metrics", "")
	if a.status != 200 {
		t.Fatalf("metrics: %d", a.status)
	}
	for _, want := range []string{
		`appnode_http_requests_total{outcome="ok",route="POST /players/{id}/reward"} 1`,
		`appnode_http_requests_total{outcome="not_found",route="GET /players/{id}"} 1`,
		`appnode_http_request_duration_seconds_bucket{outcome="ok",route="POST /players/{id}/reward",le="0.0001"}`,
		"appnode_unprotected_players 1",
		"appnode_primaries 1",
		"appnode_keeper_copies 2",
		"appnode_forwards_total 3",
		"appnode_quorate 1",
		"appnode_directory_players 4",
		"appnode_directory_complete 1",
		`appnode_peer_link_up{peer="app_node3@host"} 0`,
		`appnode_replication_duration_seconds_count{result="ok"} 1`,
		`appnode_forward_duration_seconds_count{result="error"} 1`,
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(a.raw, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(a.raw, `"p"`) || strings.Contains(a.raw, "nobody") {
		t.Error("a player id became a label")
	}
	promtool := toolOrSkip(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(a.raw)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// toolOrSkip finds an external tool; without it the test fails under CI
// (which installs it) and is skipped elsewhere, saying how to get it.
func toolOrSkip(t *testing.T, tool, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing under CI: install Debian package %s (.ci/run does)", tool, debianPackage)
	}
	t.Skipf("%s not found: apt-get install %s to run this test", tool, debianPackage)
	return ""
}

// A real server bounds header sizes, and a hostile client's oversized
// headers never reach a handler.
func TestServerBoundsHeaders(t *testing.T) {
	fb := newFake()
	f := newFront(t, fb, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.Serve(ln, "", "")
	url := "http://" + ln.Addr().String()
	req, _ := http.NewRequest("GET", url+"/livez", nil)
	req.Header.Set("X-Junk", strings.Repeat("j", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB of headers: %d, want 431", resp.StatusCode)
	}
	resp, err = http.Post(url+"/players/p/reward", "application/json", bytes.NewReader([]byte(`{"points":5}`)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"total":5`) {
		t.Fatalf("over a real server: %d %s", resp.StatusCode, b)
	}
	if err := f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
}
