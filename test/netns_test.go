package test

// TestNetnsPartition: a real network partition. Three "hosts" are Linux
// network namespaces, each with one veth to a bridge that lives in a fourth
// namespace (the root namespace is left untouched), addresses in
// 10.77.N.0/24 and host names h1, h2, h3 from /etc/netns/NS/hosts, which
// `ip netns exec` mounts over /etc/hosts. One node runs on each host,
// bound to its host's address, and they connect by NAME@HOST. Then h3's
// link to the bridge goes down: h1 and h2, the majority, keep serving every
// player, h3's included, while h3 refuses rewards with a clear error; when
// the link comes back h3 rejoins clean.
//
// It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's ip; where
// a namespace cannot be made it skips, saying why, but under CI=true it
// fails instead: CI must run it.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

// nsNet is the test's little network: namespaces, bridge and veths.
type nsNet struct {
	t      *testing.T
	ip     string // the ip binary
	prefix string // of every namespace's name, unique to this test run
	subnet string // "10.77.N"
	bridge string // the bridge's namespace
	hosts  []string
	made   []string // namespaces created, for the cleanup
	etc    []string // /etc/netns/NS directories created
	etcDir bool     // /etc/netns itself was created here
}

func (n *nsNet) run(args ...string) {
	n.t.Helper()
	if out, err := exec.Command(n.ip, args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// nsTool returns the path of the command name, looked up in PATH and then
// in /usr/sbin (root's tools, which a user's PATH may lack); without it
// the test cannot run, and nsCannot says why.
func nsTool(t *testing.T, name, why string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := "/usr/sbin/" + name
	if _, err := os.Stat(p); err != nil {
		nsCannot(t, why)
	}
	return p
}

// nsSetup makes the network, or skips the test if namespaces cannot be
// made here. Everything it makes is removed when the test ends.
func nsSetup(t *testing.T, hosts int) *nsNet {
	t.Helper()
	ip := nsTool(t, "ip", "needs iproute2's ip command to make network namespaces (not found in PATH or /usr/sbin)")
	pid := os.Getpid()
	n := &nsNet{
		t:      t,
		ip:     ip,
		prefix: fmt.Sprintf("appnode-%d-%d-", pid, time.Now().UnixNano()%1e6),
		subnet: fmt.Sprintf("10.77.%d", 1+pid%250),
	}
	n.bridge = n.prefix + "br"
	t.Cleanup(n.teardown)
	if out, err := exec.Command(ip, "netns", "add", n.bridge).CombinedOutput(); err != nil {
		nsCannot(t, fmt.Sprintf("cannot make a network namespace (this test needs root, with CAP_SYS_ADMIN and CAP_NET_ADMIN): ip netns add: %v: %s",
			err, strings.TrimSpace(string(out))))
	}
	n.made = append(n.made, n.bridge)
	if _, err := os.Stat("/etc/netns"); os.IsNotExist(err) {
		n.etcDir = true
	}
	n.run("-n", n.bridge, "link", "add", "br0", "type", "bridge")
	n.run("-n", n.bridge, "link", "set", "br0", "up")
	n.run("-n", n.bridge, "link", "set", "lo", "up")
	var hostsFile strings.Builder
	hostsFile.WriteString("127.0.0.1 localhost\n")
	for i := 1; i <= hosts; i++ {
		fmt.Fprintf(&hostsFile, "%s h%d\n", n.addr(i), i)
	}
	for i := 1; i <= hosts; i++ {
		ns := n.prefix + fmt.Sprintf("h%d", i)
		n.run("netns", "add", ns)
		n.made = append(n.made, ns)
		n.hosts = append(n.hosts, ns)
		// veth vN in the bridge's namespace, eth0 in the host's.
		n.run("-n", n.bridge, "link", "add", n.veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
		n.run("-n", n.bridge, "link", "set", n.veth(i), "master", "br0")
		n.run("-n", n.bridge, "link", "set", n.veth(i), "up")
		n.run("-n", ns, "addr", "add", n.addr(i)+"/24", "dev", "eth0")
		n.run("-n", ns, "link", "set", "eth0", "up")
		n.run("-n", ns, "link", "set", "lo", "up")
		dir := filepath.Join("/etc/netns", ns)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("host names for %s: %v", ns, err)
		}
		n.etc = append(n.etc, dir)
		if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hostsFile.String()), 0o644); err != nil {
			t.Fatalf("host names for %s: %v", ns, err)
		}
	}
	return n
}

// nsCannot skips the test, saying why, or under CI=true fails it: CI
// runs as root so that this test runs.
func nsCannot(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true, but %s", why)
	}
	t.Skip("skipped: " + why)
}

func (n *nsNet) addr(host int) string { return fmt.Sprintf("%s.%d", n.subnet, host) }
func (n *nsNet) veth(host int) string { return fmt.Sprintf("v%d", host) }

// cut takes host's link to the bridge down; heal brings it back.
func (n *nsNet) cut(host int)  { n.run("-n", n.bridge, "link", "set", n.veth(host), "down") }
func (n *nsNet) heal(host int) { n.run("-n", n.bridge, "link", "set", n.veth(host), "up") }

func (n *nsNet) teardown() {
	for _, ns := range slices.Backward(n.made) {
		// What still runs in the namespace (the host's name service,
		// which the first node started and which would exit on its own
		// 10 s after its last node) would keep it alive unnamed.
		if out, err := exec.Command(n.ip, "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if out, err := exec.Command(n.ip, "netns", "del", ns).CombinedOutput(); err != nil {
			n.t.Errorf("cleanup: ip netns del %s: %v: %s", ns, err, out)
		}
	}
	for _, dir := range n.etc {
		if err := os.RemoveAll(dir); err != nil {
			n.t.Errorf("cleanup: %v", err)
		}
	}
	if n.etcDir {
		_ = os.Remove("/etc/netns") // fails, as it should, if another test's namespaces are there now
	}
}

// nsStart runs `ip netns exec NS appnode --bind ADDR NAME`; ip execs the
// binary in place, so the process is the node itself. It is driven
// through its console (scripted mode), and rewarded through `appnode rpc`
// run in its namespace (nsReward): the test process cannot reach the
// namespaces' network.
func nsStart(t *testing.T, h *harness, n *nsNet, host int, short string) *proc {
	t.Helper()
	name := fmt.Sprintf("%s@h%d", short, host)
	stateDir := filepath.Join(h.stateDir, fmt.Sprintf("h%d", host)) // each host its own home
	env := append(h.env(), "APPNODE_STATE_DIR="+stateDir)           // the last value wins
	return launch(t, name, stateDir, n.ip, []string{"netns", "exec", n.hosts[host-1], appnodeBin, "--bind", n.addr(host), name}, env)
}

// nsAnswer is what `appnode rpc --json` printed: the answer, and when it
// failed, its code's name and the reward's outcome.
type nsAnswer struct {
	Output  string  `json:"output"`
	Failed  bool    `json:"failed"`
	Code    *string `json:"code"`
	Outcome string  `json:"outcome"`
}

// is reports whether a failed answer carries code.
func (a nsAnswer) is(code wire.Code) bool {
	return a.Failed && a.Code != nil && *a.Code == code.String()
}

func (a nsAnswer) String() string {
	if !a.Failed {
		return a.Output
	}
	return fmt.Sprintf("%s [%s, %s]", a.Output, *a.Code, a.Outcome)
}

// nsReward runs `reward PLAYER D` at the node named name, on host, through
// `appnode rpc --json` run in host's namespace. An rpc that printed no
// answer (it got none) is a failure of unknown outcome.
func nsReward(t *testing.T, h *harness, n *nsNet, host int, name, player string, d int64) nsAnswer {
	t.Helper()
	a, err := nsRPCReward(context.Background(), h, n, host, name, player, d)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// nsRPCReward is nsReward for any goroutine: instead of failing the test
// it returns an error when the rpc did not exit within rpcLimit, or ctx
// ended first (the answer is then of unknown outcome too).
func nsRPCReward(ctx context.Context, h *harness, n *nsNet, host int, name, player string, d int64) (nsAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.ip, "netns", "exec", n.hosts[host-1], appnodeBin, "rpc", "--json", name, fmt.Sprintf("reward %s %d", player, d))
	cmd.Env = h.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	unknown := wire.CodeUnknown.String()
	if ctx.Err() != nil {
		return nsAnswer{Output: fmt.Sprintf("no answer: %v", ctx.Err()), Failed: true, Code: &unknown, Outcome: wire.OutcomeUnknown.String()},
			fmt.Errorf("appnode rpc at h%d did not exit within %v (or the test stopped it): %v", host, rpcLimit, ctx.Err())
	}
	var a nsAnswer
	if jerr := json.Unmarshal(stdout.Bytes(), &a); jerr != nil {
		return nsAnswer{Output: fmt.Sprintf("no answer (%v): %s", err, strings.TrimSpace(stderr.String())), Failed: true, Code: &unknown, Outcome: wire.OutcomeUnknown.String()}, nil
	}
	return a, nil
}

// nsRange is what the test knows of a player's total: it is in [lo, hi]
// (hi > lo after rewards whose outcome is unknown).
type nsRange struct{ lo, hi int64 }

// rewarded checks the answer to a successful `reward P d` and learns the
// total from it.
func (r *nsRange) rewarded(t *testing.T, what string, d int64, answer string) {
	t.Helper()
	var v int64
	if _, err := fmt.Sscan(answer, &v); err != nil || fmt.Sprint(v) != answer {
		t.Fatalf("%s answered %q, not a total", what, answer)
	}
	if v < r.lo+d || v > r.hi+d {
		if r.lo == r.hi {
			t.Fatalf("%s answered %d, want %d", what, v, r.lo+d)
		}
		t.Fatalf("%s answered %d, want %d..%d (some earlier rewards' outcome is unknown)", what, v, r.lo+d, r.hi+d)
	}
	r.lo, r.hi = v, v
}

// failed learns from a failed reward of d: unless its outcome says nothing
// changed, it may have been applied.
func (r *nsRange) failed(d int64, a nsAnswer) {
	if a.Outcome != wire.OutcomeNotApplied.String() {
		r.hi += d
	}
}

// nsSummary counts equal answers: "none", or "N: 3x "...", 1x "..."".
func nsSummary(answers []string) string {
	if len(answers) == 0 {
		return "none"
	}
	count := map[string]int{}
	var order []string
	for _, a := range answers {
		if count[a] == 0 {
			order = append(order, a)
		}
		count[a]++
	}
	parts := make([]string, len(order))
	for i, a := range order {
		parts[i] = fmt.Sprintf("%dx %q", count[a], a)
	}
	return fmt.Sprintf("%d: %s", len(answers), strings.Join(parts, ", "))
}

func TestNetnsPartition(t *testing.T) {
	c := nsStartCluster(t)
	n1, n2, n3 := c.ps[0], c.ps[1], c.ps[2]

	// Cut h3 off.
	c.lan.cut(3)
	cutAt := time.Now()
	t.Logf("h3's link to the bridge is down")

	// The majority, h1 and h2, keeps serving every player, h3's included.
	for _, p := range []*proc{n1, n2} {
		for _, pl := range c.players {
			d, failures := c.rewardAt(p, pl, cutAt)
			t.Logf("cut: %s served %s %v after the cut; failures before: %s", p.name, pl, d.Round(time.Millisecond), nsSummary(failures))
		}
	}
	c.h.waitMembers(n1, n2)
	t.Logf("cut: h1 and h2 list only each other %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	c.minorityRefuses(cutAt)

	// Heal: h3 rejoins clean.
	c.lan.heal(3)
	healAt := time.Now()
	// The first thing h3 is asked: a player it owned before the cut, which
	// h1 and h2 have since moved on. It may refuse, never answer stale.
	d, failures := c.rewardAt(n3, "np3a", healAt)
	t.Logf("heal: h3 served np3a, which it owned before the cut, %v after the heal, continuing the cluster's total; failures before: %s", d.Round(time.Millisecond), nsSummary(failures))
	c.h.waitMembers(c.ps...)
	t.Logf("heal: all three list each other %v after the link came back", time.Since(healAt).Round(time.Millisecond))
	for _, pl := range c.players {
		d, failures := c.rewardAt(n3, pl, healAt)
		t.Logf("heal: h3 served %s %v after the heal, continuing the cluster's total; failures before: %s", pl, d.Round(time.Millisecond), nsSummary(failures))
	}
	c.agree()
}

// nsCluster is the test's nodes, one on each host, and what the test
// knows of its players' totals.
type nsCluster struct {
	t       *testing.T
	h       *harness
	lan     *nsNet
	ps      []*proc // ps[i] runs on host i+1
	players []string
	totals  map[string]*nsRange
}

// nsStartCluster makes the network, starts a node on each of three hosts,
// connects them by NAME@HOST, and creates two players on each (so owned
// there).
func nsStartCluster(t *testing.T) *nsCluster {
	c := nsStartNodes(t, 3)
	n1 := c.ps[0]
	for i, p := range c.ps {
		for _, suffix := range []string{"a", "b"} {
			pl := fmt.Sprintf("np%d%s", i+1, suffix)
			c.players = append(c.players, pl)
			c.totals[pl] = &nsRange{}
			c.totals[pl].rewarded(t, "reward "+pl+" 5 at "+p.name, 5, p.ask("reward "+pl+" 5"))
		}
		p.expect("local_players", fmt.Sprintf(`["np%da","np%db"]`, i+1, i+1))
	}
	var before []string
	for _, pl := range c.players {
		before = append(before, pl+" "+n1.ask("where "+pl))
	}
	t.Logf("before the cut: %q", before)
	return c
}

// nsStartNodes makes a network of hosts, starts a node on each, and
// connects them by NAME@HOST from the first.
func nsStartNodes(t *testing.T, hosts int) *nsCluster {
	c := &nsCluster{t: t, lan: nsSetup(t, hosts), h: newHarness(t), totals: map[string]*nsRange{}}
	for i := 1; i <= hosts; i++ {
		p := nsStart(t, c.h, c.lan, i, fmt.Sprintf("app_node%d", i))
		p.expect("node", "'"+p.name+"'")
		// ip must have exec'd the node in place: the cleanup kills this pid.
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID())); err != nil || exe != appnodeBin {
			t.Fatalf("pid %d started by ip netns exec runs %q (%v), not %s", p.PID(), exe, err, appnodeBin)
		}
		c.ps = append(c.ps, p)
	}
	for _, p := range c.ps[1:] {
		c.ps[0].expect("connect "+p.name, "true")
	}
	c.h.waitMembers(c.ps...)
	c.waitRoster()
	t.Logf("%d nodes on %d hosts (%s.1-%d), connected by NAME@HOST", hosts, hosts, c.lan.subnet, hosts)
	return c
}

// waitRoster waits until every node has learnt the roster that has them
// all: the last roster each printed among its events lists every node.
func (c *nsCluster) waitRoster() {
	c.t.Helper()
	var names []string
	for _, p := range c.ps {
		names = append(names, p.name)
	}
	want := strings.Join(names, ", ")
	testenv.Eventually(c.t, settleLimit, "every node learns the roster of all "+fmt.Sprint(len(c.ps)), func() (bool, string) {
		var stale []string
		for _, p := range c.ps {
			rs := rosterEvents(p)
			if len(rs) == 0 || !strings.HasSuffix(rs[len(rs)-1], ": "+want) {
				stale = append(stale, fmt.Sprintf("%s learnt %q", p.name, rs))
			}
		}
		return len(stale) == 0, strings.Join(stale, "; ")
	})
}

// nsRosterRE matches the event a node prints when it learns a roster.
var nsRosterRE = regexp.MustCompile(`cluster roster (\d+): (.*)$`)

// rosterEvents returns the rosters p learnt, in order: "EPOCH: MEMBERS".
func rosterEvents(p *proc) []string {
	var out []string
	for _, e := range p.Lines() {
		if m := nsRosterRE.FindStringSubmatch(e); m != nil {
			out = append(out, m[1]+": "+m[2])
		}
	}
	return out
}

// reward rewards pl by d at p, through `appnode rpc --json` in p's
// namespace.
func (c *nsCluster) reward(p *proc, pl string, d int64) nsAnswer {
	c.t.Helper()
	return nsReward(c.t, c.h, c.lan, slices.Index(c.ps, p)+1, p.name, pl, d)
}

// rewardAt rewards pl by 1 at p until it succeeds, and returns how long
// after since that was, and the failures before.
func (c *nsCluster) rewardAt(p *proc, pl string, since time.Time) (time.Duration, []string) {
	c.t.Helper()
	var failures []string
	what := "reward " + pl + " 1 at " + p.name
	testenv.Eventually(c.t, settleLimit, what, func() (bool, string) {
		a := c.reward(p, pl, 1)
		if a.Failed {
			c.totals[pl].failed(1, a)
			failures = append(failures, a.String())
			return false, a.String()
		}
		c.totals[pl].rewarded(c.t, what, 1, a.Output)
		return true, ""
	})
	return time.Since(since), failures
}

// minorityRefuses checks that h3, cut off, refuses rewards for want of a
// majority (wire.CodeNoQuorum), and never acknowledges one, while the
// majority moves on.
func (c *nsCluster) minorityRefuses(cutAt time.Time) {
	t, n1, n3 := c.t, c.ps[0], c.ps[2]
	var noMajority nsAnswer
	var refusals []string
	testenv.Eventually(t, settleLimit, "h3 refuses rewards because it sees no majority", func() (bool, string) {
		for _, pl := range []string{"np3a", "np1a"} {
			a := c.reward(n3, pl, 1)
			if !a.Failed {
				t.Fatalf("h3, cut off, answered `reward %s 1` with %s: a minority node must not acknowledge a reward", pl, a)
			}
			c.totals[pl].failed(1, a)
			if !a.is(wire.CodeNoQuorum) {
				refusals = append(refusals, a.String())
				return false, a.String()
			}
			noMajority = a
		}
		return true, ""
	})
	t.Logf("cut: h3 refuses rewards %v after the cut: %s; earlier answers: %s", time.Since(cutAt).Round(time.Millisecond), noMajority, nsSummary(refusals))
	// Still refusing, for every player, while the majority moves on.
	for _, pl := range c.players {
		a := c.reward(n3, pl, 1)
		c.totals[pl].failed(1, a)
		if !a.is(wire.CodeNoQuorum) {
			t.Errorf("h3, cut off, answered `reward %s 1` with %s, want the no-majority refusal (%s)", pl, a, wire.CodeNoQuorum)
		}
		if _, failures := c.rewardAt(n1, pl, cutAt); len(failures) > 0 {
			t.Logf("cut: %s at %s needed retries: %s", pl, n1.name, nsSummary(failures))
		}
	}
}

// agree checks that every node agrees on every total, that each player
// has one primary, and that every node says the same about where it and
// its keeper are.
func (c *nsCluster) agree() {
	t := c.t
	for _, pl := range c.players {
		for _, p := range c.ps {
			what := "reward " + pl + " 0 at " + p.name
			testenv.Eventually(t, settleLimit, what, func() (bool, string) {
				a := c.reward(p, pl, 0)
				if a.Failed {
					return false, a.String()
				}
				c.totals[pl].rewarded(t, what, 0, a.Output)
				return true, ""
			})
		}
	}
	after := c.waitSettled(t)
	var final []string
	for _, pl := range c.players {
		final = append(final, fmt.Sprintf("%s=%d", pl, c.totals[pl].lo))
	}
	t.Logf("after the heal: %q; totals %s", after, strings.Join(final, " "))
	var stderr bytes.Buffer
	for _, e := range c.ps[2].Lines() {
		if strings.Contains(e, "declared") || strings.Contains(e, "rejoin") || strings.Contains(e, "majority") || strings.HasSuffix(e, " down") || strings.HasSuffix(e, " up") {
			fmt.Fprintln(&stderr, e)
		}
	}
	t.Logf("h3's events about membership:\n%s", strings.TrimSpace(stderr.String()))
}

// waitSettled waits until placement agrees everywhere, and returns it.
func (c *nsCluster) waitSettled(t *testing.T) []string {
	t.Helper()
	var after []string
	testenv.Eventually(t, settleLimit, "one primary per player, one placement seen from every node", func() (bool, string) {
		var ok bool
		var detail string
		after, ok, detail = c.placement()
		return ok, detail
	})
	return after
}

// placement checks that each player has one primary and that every node
// answers `where` for it the same way, and returns those answers.
func (c *nsCluster) placement() ([]string, bool, string) {
	on := map[string][]string{}
	for _, p := range c.ps {
		local := p.ask("local_players")
		for _, pl := range c.players {
			if strings.Contains(local, `"`+pl+`"`) {
				on[pl] = append(on[pl], p.name)
			}
		}
	}
	var after []string
	for _, pl := range c.players {
		if len(on[pl]) != 1 {
			return nil, false, fmt.Sprintf("%s has a primary on %v", pl, on[pl])
		}
		var first string
		for _, p := range c.ps {
			w := p.ask("where " + pl)
			m := chaosWhereRE.FindStringSubmatch(w)
			if m == nil || m[1] != on[pl][0] || m[2] == m[1] {
				return nil, false, fmt.Sprintf("where %s at %s: %q, want owner %s and a keeper elsewhere", pl, p.name, w, on[pl][0])
			}
			if first == "" {
				first = w
			} else if w != first {
				return nil, false, fmt.Sprintf("where %s: %q at %s, %q elsewhere", pl, w, p.name, first)
			}
		}
		after = append(after, pl+" "+first)
	}
	return after, true, ""
}
