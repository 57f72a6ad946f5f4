package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The live page in a real browser: three real nodes; the page shows them,
// a rewarded player's row and its event appear without a reload, and when
// the player's owner is killed the page shows that node down and the
// player's primary on another node.
func TestLivePageInChromium(t *testing.T) {
	chromium := toolOrSkip(t, "chromium", "chromium")
	c := newCluster(t)
	c.three()

	ctx := openPage(t, chromium, c.url("n1")+"/")
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	nodeState := func(name, state string) string {
		return fmt.Sprintf(`(() => { const r = document.querySelector('#nodes tr[data-node=%s]'); return !!r && r.dataset.state === %s; })()`, q(c.full(name)), q(state))
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		until(t, ctx, n+" alive", nodeState(n, "alive"))
	}

	// A player created through this node: its row and its event appear.
	if r := do(t, "POST", c.url("n1")+"/players/alpha/reward", `{"points": 5}`); r.status != 200 {
		t.Fatalf("reward alpha: %d %s", r.status, r.raw)
	}
	until(t, ctx, "alpha's row with total 5", `(() => { const r = document.querySelector('#players tr[data-player="alpha"] td.total'); return !!r && r.textContent === "5"; })()`)
	until(t, ctx, "alpha's new-player event", `Array.from(document.querySelectorAll('#events li')).some(li => li.textContent.includes("alpha is a new player"))`)

	// A player owned by n2, found with the search box.
	r := do(t, "POST", c.url("n2")+"/players/hero/reward", `{"points": 7}`)
	if r.status != 200 || r.body["owner"] != c.full("n2") {
		t.Fatalf("reward hero at n2: %d %s", r.status, r.raw)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("search").value = "hero"; document.getElementById("search-go").click(); true`)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "hero on n2 with total 7", fmt.Sprintf(`(() => { const d = document.getElementById("search-result").dataset; return d.owner === %s && d.total === "7"; })()`, q(c.full("n2"))))
	until(t, ctx, "the counts of n2's primaries", fmt.Sprintf(`(() => { const r = document.querySelector('#nodes tr[data-node=%s] td.primaries'); return !!r && r.textContent === "1"; })()`, q(c.full("n2"))))

	// Kill hero's owner: the page shows it down and hero's primary moved.
	c.kill9("n2")
	until(t, ctx, "n2 down", nodeState("n2", "down"))
	until(t, ctx, "hero's primary off n2, total kept", fmt.Sprintf(`(() => { const d = document.getElementById("search-result").dataset; return !!d.owner && d.owner !== %s && d.total === "7"; })()`, q(c.full("n2"))))
	until(t, ctx, "n2's down event", fmt.Sprintf(`Array.from(document.querySelectorAll('#events li')).some(li => li.textContent.includes(%s))`, q("node "+c.full("n2")+" down")))
	owner, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("search-result").dataset.owner`))
	if err != nil || !strings.HasPrefix(owner, "n") {
		t.Fatalf("owner shown: %q %v", owner, err)
	}
	if r := get(t, c.url("n3")+"/players/hero"); r.status != 200 || r.body["owner"] != owner || r.body["total"] != 7.0 {
		t.Fatalf("the page says hero is on %s; n3 answers %d %s", owner, r.status, r.raw)
	}
}

// openPage starts a headless chromium on url. The browser is stopped when
// the test ends, before the cluster it shows (cleanups run last first).
func openPage(t *testing.T, chromium, url string) context.Context {
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	// The first Run starts the browser and must have no deadline of its own.
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	return ctx
}

// until polls a JavaScript condition in the page until it is true.
func until(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := chromedp.Run(actx, chromedp.Evaluate[bool](js))
		acancel()
		if err == nil && ok {
			return
		}
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("the page never showed %s (%s); it shows:\n%s", what, last, html)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}
