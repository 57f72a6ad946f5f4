package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
)

// startNginx runs nginx in the foreground as a round-robin balancer in
// front of backends, on a port of 127.0.0.1, until the test ends.
func startNginx(t *testing.T, c *cluster, backends ...string) string {
	t.Helper()
	bin := toolOrSkip(t, "nginx", "nginx-light")
	dir := t.TempDir()
	port := testenv.FreePort(t)
	var servers strings.Builder
	for _, b := range backends {
		fmt.Fprintf(&servers, "    server %s max_fails=1 fail_timeout=2s;\n", strings.TrimPrefix(b, "http://"))
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // its workers may then use the test's private directory
	}
	conf := fmt.Sprintf(`%s
daemon off;
master_process on;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  upstream appnode {
%[3]s    keepalive 16;
  }
  server {
    listen 127.0.0.1:%[4]d;
    location / {
      proxy_pass http://appnode;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 1s;
      proxy_read_timeout 20s;
      proxy_next_upstream error timeout;
      proxy_buffering off;
    }
  }
}
`, user, dir, servers.String(), port)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c.spawn("nginx", exec.Command(bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log")))
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	testenv.WaitFor(t, 10*time.Second, "nginx to pass /livez on", func() bool {
		return get(t, url+"/livez").status == 200
	})
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error log:\n%s", b)
		}
	})
	return url
}

// The walkthrough over HTTP through nginx in front of three real nodes,
// then load through nginx while a node is killed with SIGKILL: every
// acknowledged reward is there afterwards, applied once. A reward whose
// outcome is unknown (or that got no answer) is retried with the same
// Idempotency-Key until it is answered, as a client must.
func TestWalkthroughThroughNginxAndKill(t *testing.T) {
	c := newCluster(t)
	c.three()
	lb := startNginx(t, c, c.url("n1"), c.url("n2"), c.url("n3"))

	step := func(method, path, body string, wantStatus int, wantTotal float64) reply {
		t.Helper()
		r := do(t, method, lb+path, body)
		if r.err != nil || r.status != wantStatus || (wantStatus == 200 && r.body["total"] != wantTotal) {
			t.Fatalf("%s %s %s: %d %s %v; want %d total %v", method, path, body, r.status, r.raw, r.err, wantStatus, wantTotal)
		}
		return r
	}
	step("POST", "/players/player1/reward", `{"points": 5}`, 200, 5)
	crash := step("POST", "/players/player1/reward", `{"points": "a"}`, 422, 0)
	if crash.code() != "crashed" || !strings.Contains(crash.raw, "not an integer") || crash.outcome() != "not_applied" {
		t.Fatalf("non-integer points: %s", crash.raw)
	}
	step("POST", "/players/player1/reward?points=2", "", 200, 7)
	step("POST", "/players/player1/reward?points=3", "", 200, 10)
	// Round-robin: each node answers the same.
	seen := map[string]bool{}
	for range 6 {
		r := step("GET", "/players/player1", "", 200, 10)
		seen[r.body["served_by"].(string)] = true
	}
	if len(seen) != 3 {
		t.Fatalf("nginx spread six reads over %v, want all three nodes", seen)
	}
	owner := step("GET", "/players/player1", "", 200, 10).body["owner"].(string)

	// Load, and a kill -9 of player1's owner in the middle of it.
	const clients, perClient = 8, 40
	var (
		mu    sync.Mutex
		acked = map[string]int{} // player -> rewards acknowledged (each +1)
		wg    sync.WaitGroup
	)
	killAt := make(chan struct{})
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perClient {
				if cl == 0 && i == perClient/3 {
					close(killAt)
				}
				player := fmt.Sprintf("load%d", rand.N(20))
				key := fmt.Sprintf("c%d-r%d", cl, i)
				if rewardOnce(t, lb, player, key) {
					mu.Lock()
					acked[player]++
					mu.Unlock()
				}
			}
		}()
	}
	<-killAt
	for name := range map[string]bool{"n1": true, "n2": true, "n3": true} {
		if c.full(name) == owner {
			c.kill9(name)
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	for player, n := range acked {
		total += n
		r := do(t, "GET", lb+"/players/"+player, "")
		if r.status != 200 || r.body["total"] != float64(n) {
			t.Errorf("%s: %d %s; %d rewards of 1 were acknowledged", player, r.status, r.raw, n)
		}
	}
	if total != clients*perClient {
		t.Errorf("%d rewards acknowledged of %d", total, clients*perClient)
	}
	step("POST", "/players/player1/reward?points=1", "", 200, 11)
}

// rewardOnce gives player 1 point through lb, retrying with the same key
// until the answer is known: true once acknowledged. A refusal that
// proves nothing was applied is retried too (the cluster is failing over).
func rewardOnce(t *testing.T, lb, player, key string) bool {
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		r := do(t, "POST", lb+"/players/"+player+"/reward?points=1", "", "Idempotency-Key", key)
		if r.err == nil && r.status == 200 {
			return true
		}
		if r.err == nil && r.status < 500 {
			t.Errorf("reward %s (key %s): %d %s", player, key, r.status, r.raw)
			return false
		}
		if time.Now().After(deadline) {
			t.Errorf("reward %s (key %s) not settled after %d attempts: %d %s %v", player, key, attempt+1, r.status, r.raw, r.err)
			return false
		}
		time.Sleep(time.Duration(10*(attempt+1)) * time.Millisecond) // back off before the retry
	}
}
