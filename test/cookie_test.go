package test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCookie: the first node creates the cookie file, private to its
// owner; `appnode rpc` with the right cookie works and with another is
// refused saying why; a node with another cookie cannot be connected to;
// a cookie file others may read is refused at start.
func TestCookie(t *testing.T) {
	h := newHarness(t)
	n1 := h.start("app_node1")
	n1.waitUp()

	st, err := os.Stat(h.cookieFile())
	if err != nil {
		t.Fatalf("the first node did not create the cookie file: %v", err)
	}
	if perm := st.Mode().Perm(); perm != 0o400 {
		t.Fatalf("cookie file mode %04o, want 0400", perm)
	}
	h.mustRPC("app_node1", "node", "'"+n1.name+"'")
	r := h.rpc("app_node1", "node", "--cookie", "not the cluster's cookie at all")
	if r.ok() || !strings.Contains(r.errOut, "cookie mismatch") {
		t.Fatalf("rpc with another cookie: %v, want a refusal saying cookie mismatch", r)
	}
	t.Logf("rpc with another cookie: %s", r.errOut)

	stranger := h.start("app_node9", "--cookie", "another cluster's cookie, long enough")
	stranger.waitUp()
	if a := n1.ask("connect " + stranger.name); !strings.HasPrefix(a, "** error") || !strings.Contains(a, "cookie mismatch") {
		t.Fatalf("connect to a node with another cookie answered %q, want an error saying cookie mismatch", a)
	}
	if a := stranger.ask("connect " + n1.name); !strings.HasPrefix(a, "** error") || !strings.Contains(a, "cookie mismatch") {
		t.Fatalf("connect from a node with another cookie answered %q, want an error saying cookie mismatch", a)
	}
	n1.expect("nodes", "[]")
	stranger.expect("nodes", "[]")

	// A cookie file others may read: the node refuses to start and says
	// how to fix it.
	h2 := newHarness(t)
	if err := os.WriteFile(h2.cookieFile(), []byte("a cookie others can read\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, appnodeBin, "--bind", "127.0.0.1", "app_node1")
	cmd.Env = h2.env()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "chmod 400") {
		t.Fatalf("node with a shared cookie file: %v, %q; want a refusal saying chmod 400", err, out)
	}
	if strings.Contains(string(out), "a cookie others can read") {
		t.Fatalf("the refusal shows the cookie: %q", out)
	}
}
