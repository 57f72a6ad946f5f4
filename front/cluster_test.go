package front

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/membership"
	"github.com/appnode/appnode/node"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// realCluster runs real nodes in this process (Serf, TCP, a private name
// service, all on 127.0.0.1), each with its front door on a real listener.
type realCluster struct {
	t         *testing.T
	namesPort int
	dir       string
	mu        sync.Mutex
	nodes     map[string]*node.Node
	fronts    map[string]*Front
	urls      map[string]string
}

var realCookie = func() cookie.Cookie {
	c, err := cookie.New("front package test cookie")
	if err != nil {
		panic(err)
	}
	return c
}()

func newRealCluster(t *testing.T, names ...string) *realCluster {
	c := &realCluster{t: t, namesPort: testenv.FreePort(t), dir: t.TempDir(),
		nodes: map[string]*node.Node{}, fronts: map[string]*Front{}, urls: map[string]string{}}
	t.Cleanup(c.closeAll)
	for _, n := range names {
		c.start(n)
	}
	for _, n := range names[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.node(names[0]).Connect(ctx, n+"@testhost")
		cancel()
		if err != nil {
			t.Fatalf("connect %s: %v", n, err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "every node to see every other", func() bool {
		for _, n := range names {
			if len(c.node(n).Nodes()) != len(names)-1 {
				return false
			}
		}
		return true
	})
	return c
}

func (c *realCluster) start(short string) {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	m := NewMetrics()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := node.DefaultConfig(short+"@testhost", realCookie)
	cfg.NamesPort, cfg.StateDir = c.namesPort, c.dir
	cfg.Profile = membership.ProfileLocal
	cfg.CallTimeout, cfg.LinkTimeout = time.Second, time.Second
	cfg.HTTPPort, cfg.HTTPURL, cfg.Observer = ln.Addr().(*net.TCPAddr).Port, url, m
	n, err := node.Start(ctx, cfg)
	if err != nil {
		ln.Close()
		c.t.Fatalf("start %s: %v", short, err)
	}
	b := ForNode(n)
	m.Attach(b)
	f, err := New(Config{Backend: b, Metrics: m, RequestTimeout: 5 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	f.Serve(ln, "", "")
	// The console's channel is drained, as the console would.
	go func() {
		for range n.Events() {
		}
	}()
	c.mu.Lock()
	c.nodes[short], c.fronts[short], c.urls[short] = n, f, url
	c.mu.Unlock()
}

func (c *realCluster) node(short string) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[short]
}

func (c *realCluster) url(short string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.urls[short]
}

// kill stops a node at once, handing nothing off.
func (c *realCluster) kill(short string) {
	c.mu.Lock()
	n, f := c.nodes[short], c.fronts[short]
	delete(c.nodes, short)
	delete(c.fronts, short)
	c.mu.Unlock()
	_ = f.Close(context.Background())
	n.Close()
}

func (c *realCluster) closeAll() {
	c.mu.Lock()
	names := make([]string, 0, len(c.nodes))
	for n := range c.nodes {
		names = append(names, n)
	}
	c.mu.Unlock()
	for _, n := range names {
		c.kill(n)
	}
	http.DefaultClient.CloseIdleConnections()
}

type reply struct {
	status int
	body   map[string]any
}

func call(t *testing.T, method, url string, header ...string) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode}
	if err := json.Unmarshal(b, &r.body); err != nil && strings.Contains(resp.Header.Get("Content-Type"), "json") {
		t.Fatalf("%s %s: %v: %s", method, url, err, b)
	}
	return r
}

// The answer does not depend on the node the balancer picked: rewards
// are forwarded to the owner, reads agree everywhere, and the reply names
// the owner and keeper.
func TestRealNodesAgreeWhereverAsked(t *testing.T) {
	c := newRealCluster(t, "a", "b", "c")
	first := call(t, "POST", c.url("a")+"/players/player1/reward?points=5")
	if first.status != 200 || first.body["total"] != 5.0 {
		t.Fatalf("first reward: %+v", first)
	}
	owner, keeper := first.body["owner"], first.body["keeper"]
	if owner != "a@testhost" || keeper == owner || keeper == "" {
		t.Fatalf("owner %v keeper %v", owner, keeper)
	}
	want := 5.0
	for _, at := range []string{"b", "c", "a"} {
		r := call(t, "POST", c.url(at)+"/players/player1/reward?points=1")
		want++
		if r.status != 200 || r.body["total"] != want || r.body["owner"] != owner || r.body["keeper"] != keeper || r.body["served_by"] != at+"@testhost" {
			t.Fatalf("reward at %s: %+v", at, r)
		}
	}
	r := call(t, "POST", c.url("b")+"/players/player1/reward?points=a")
	if r.status != 422 {
		t.Fatalf("non-integer points through a forwarding node: %+v", r)
	}
	for _, at := range []string{"a", "b", "c"} {
		r := call(t, "GET", c.url(at)+"/players/player1")
		if r.status != 200 || r.body["total"] != want || r.body["owner"] != owner {
			t.Fatalf("read at %s: %+v", at, r)
		}
		if r := call(t, "GET", c.url(at)+"/players/nobody"); r.status != 404 {
			t.Fatalf("unknown player at %s: %+v", at, r)
		}
	}
	if r := call(t, "GET", c.url("c")+"/players?node=a@testhost"); r.status != 200 || len(r.body["players"].([]any)) != 1 {
		t.Fatalf("a's players seen from c: %+v", r)
	}
	problems, err := testutil.GatherAndLint(c.fronts["a"].metrics.Registry())
	if err != nil || len(problems) > 0 {
		t.Fatalf("metrics of a real node: %v %v", problems, err)
	}
}

// A client that lost its answer retries with the same Idempotency-Key
// through another node after the first one died: the reward is answered,
// not applied twice.
func TestIdempotencyKeyAcrossAFailover(t *testing.T) {
	c := newRealCluster(t, "a", "b", "c")
	key := []string{"Idempotency-Key", "payment-7"}
	r := call(t, "POST", c.url("a")+"/players/p/reward?points=10", key...)
	if r.status != 200 || r.body["total"] != 10.0 {
		t.Fatalf("first: %+v", r)
	}
	c.kill("a")
	testenv.WaitFor(t, 15*time.Second, "the retry to be served by a survivor", func() bool {
		r = call(t, "POST", c.url("b")+"/players/p/reward?points=10", key...)
		return r.status == 200
	})
	if r.body["total"] != 10.0 || r.body["owner"] == "a@testhost" {
		t.Fatalf("retry after the owner died: %+v, want total 10 from a new owner", r)
	}
	if r := call(t, "POST", c.url("c")+"/players/p/reward?points=1"); r.body["total"] != 11.0 {
		t.Fatalf("next reward: %+v, want 11", r)
	}
	states := map[string]string{}
	testenv.WaitFor(t, 10*time.Second, "/cluster to show a down", func() bool {
		cl := call(t, "GET", c.url("b")+"/cluster")
		for _, m := range cl.body["members"].([]any) {
			m := m.(map[string]any)
			states[m["name"].(string)] = m["state"].(string)
		}
		return states["a@testhost"] == "down"
	})
	if states["b@testhost"] != "alive" || states["c@testhost"] != "alive" {
		t.Fatalf("cluster after a died: %v", states)
	}
	if r := call(t, "GET", c.url("b")+"/readyz"); r.status != 200 {
		t.Fatalf("readyz with two of three alive: %+v", r)
	}
	c.kill("c")
	testenv.WaitFor(t, 15*time.Second, "b alone to say it is not ready", func() bool {
		r := call(t, "GET", c.url("b")+"/readyz")
		return r.status == 503
	})
	r = call(t, "POST", c.url("b")+"/players/q/reward?points=1")
	if r.status != 503 {
		t.Fatalf("a reward on a lone node: %+v", r)
	}
	e := r.body["error"].(map[string]any)
	if e["outcome"] != "not_applied" {
		t.Fatalf("a lone node's refusal: %v", e)
	}
}
