package e2e

import (
	"testing"
	"time"
)

// POST /admin/drain on a real node: readiness turns false at once, then
// the node hands its players over and exits as after q, with status 0;
// nothing it held is lost and every player keeps two copies.
func TestDrainHandsOffAndExits(t *testing.T) {
	c := newCluster(t)
	c.three()
	for _, p := range []string{"d1", "d2", "d3"} {
		if r := do(t, "POST", c.url("n3")+"/players/"+p+"/reward?points=4", ""); r.status != 200 || r.body["owner"] != c.full("n3") {
			t.Fatalf("reward %s at n3: %d %s", p, r.status, r.raw)
		}
	}
	if r := do(t, "POST", c.url("n3")+"/admin/drain", ""); r.status != 202 {
		t.Fatalf("drain: %d %s", r.status, r.raw)
	}
	if r := get(t, c.url("n3")+"/readyz"); r.status != 503 || r.body["code"] != "draining" {
		t.Fatalf("readyz while draining: %d %s", r.status, r.raw)
	}
	code, exited := c.exitCode("n3", 30*time.Second)
	if !exited || code != 0 {
		t.Fatalf("n3 after drain: exited %v, status %d; want a clean exit", exited, code)
	}
	for _, p := range []string{"d1", "d2", "d3"} {
		r := get(t, c.url("n1")+"/players/"+p)
		if r.status != 200 || r.body["total"] != 4.0 || r.body["owner"] == c.full("n3") || r.body["keeper"] == c.full("n3") ||
			r.body["owner"] == r.body["keeper"] || r.body["keeper"] == "" {
			t.Fatalf("%s after n3 drained: %d %s", p, r.status, r.raw)
		}
	}
	if out, err := c.rpc("n1", "http"); err != nil || out == "" {
		t.Fatalf("rpc http: %q %v", out, err)
	}
}
