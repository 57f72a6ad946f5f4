package test

// Partitions made with firewall rules, not cut links (issue 11): a live
// process behind a REJECT rule answers every connection with a reset and
// every datagram with ICMP port unreachable, which a node must take for a
// hint, never for proof of death.
//
// TestNetnsReject: five hosts (netns_test.go's network), REJECT rules
// between h1-h3 and h4-h5 in every host's namespace, callers rewarding
// through every node all along (`appnode rpc --json` in its namespace),
// and porcupine over the whole history, the reads after the heal
// included. TestNetnsAsymmetric: three hosts; h1 refuses every packet
// from h2 (h2's packets reach h1 and are refused there), then, without a
// gap, only new connections and flows from h2 (h1's own connections to h2
// get through); h3 reaches both all along. Nobody may be removed from the
// roster, h1 keeps its players, and h3 serves every player whose owner
// reaches its keeper.
//
// Like TestNetnsPartition they need root, ip and iptables; where one of
// them is missing they skip, saying why, and under CI=true they fail.
//
// APPNODE_NETNS_ROUNDS=N cuts and heals TestNetnsReject's cluster N times
// (default 1); APPNODE_NETNS_HOLD=D keeps each of TestNetnsAsymmetric's
// rules for D (default 3s); APPNODE_NETNS_ASYM_ALL=1 requires h3 to serve
// every player under them, also those whose owner cannot reach its keeper
// (today's product does not). APPNODE_CHAOS_KEEP=DIR keeps porcupine's
// visualization of a history that fails the check.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

// nsChain is the iptables chain the tests put their rules in, in every
// host's namespace, jumped to first from INPUT.
const nsChain = "APPNODE-TEST"

// nsFirewall is iptables in the hosts' namespaces.
type nsFirewall struct {
	t    *testing.T
	n    *nsNet
	ipt  string // the iptables binary
	made []int  // hosts whose chain was created, for the cleanup
}

// nsNeedIptables returns the iptables binary, or skips the test (fails it
// under CI=true) if there is none.
func nsNeedIptables(t *testing.T) string {
	t.Helper()
	return nsTool(t, "iptables", "needs iptables to make REJECT rules (not found in PATH or /usr/sbin; Debian package iptables)")
}

// nsFirewallSetup makes the chain in every host's namespace with ipt, or
// skips the test (fails it under CI=true) if iptables does not work
// there. Every rule is removed when the test ends, before the namespaces
// are (which would remove them too).
func nsFirewallSetup(t *testing.T, n *nsNet, ipt string) *nsFirewall {
	t.Helper()
	f := &nsFirewall{t: t, n: n, ipt: ipt}
	t.Cleanup(f.teardown)
	for host := 1; host <= len(n.hosts); host++ {
		if err := f.run(host, "-N", nsChain); err != nil {
			nsCannot(t, fmt.Sprintf("cannot use iptables in a network namespace: %v", err))
		}
		f.made = append(f.made, host)
		f.must(host, "-I", "INPUT", "1", "-j", nsChain)
	}
	return f
}

func (f *nsFirewall) run(host int, args ...string) error {
	cmd := exec.Command(f.n.ip, append([]string{"netns", "exec", f.n.hosts[host-1], f.ipt}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("h%d: iptables %s: %v: %s", host, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (f *nsFirewall) must(host int, args ...string) {
	f.t.Helper()
	if err := f.run(host, args...); err != nil {
		f.t.Fatal(err)
	}
}

// reject makes host refuse every packet from the hosts from: TCP with a
// reset, UDP (Serf's gossip) with ICMP port unreachable. Established
// connections are refused too: the rule does not look at their state.
// Resets are let in, which carry no data: when both sides refuse each
// other, each side's refusals reach the other, so that a dial is refused
// (ECONNREFUSED) as behind a real firewall, rather than left unanswered.
// ICMP is not matched at all.
func (f *nsFirewall) reject(host int, from ...int) {
	f.t.Helper()
	f.rejectRules("-A", host, from)
}

// unreject removes the rules reject(host, from...) made.
func (f *nsFirewall) unreject(host int, from ...int) {
	f.t.Helper()
	f.rejectRules("-D", host, from)
}

// rejectRules appends (op -A) or deletes (-D) reject's rules.
func (f *nsFirewall) rejectRules(op string, host int, from []int) {
	f.t.Helper()
	src := f.sources(from)
	f.must(host, op, nsChain, "-s", src, "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "RETURN")
	f.must(host, op, nsChain, "-s", src, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
	f.must(host, op, nsChain, "-s", src, "-p", "udp", "-j", "REJECT", "--reject-with", "icmp-port-unreachable")
}

// sources is the hosts' addresses as an iptables -s list.
func (f *nsFirewall) sources(hosts []int) string {
	var srcs []string
	for _, h := range hosts {
		srcs = append(srcs, f.n.addr(h))
	}
	return strings.Join(srcs, ",")
}

// rejectNew makes host refuse new connections, and datagrams of new
// flows, from the hosts from, as a stateful firewall does: the packets of
// flows host opened itself get through. Its rules go first in the chain.
func (f *nsFirewall) rejectNew(host int, from ...int) {
	f.t.Helper()
	src := f.sources(from)
	f.must(host, "-I", nsChain, "1", "-s", src, "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW", "-j", "REJECT", "--reject-with", "tcp-reset")
	f.must(host, "-I", nsChain, "1", "-s", src, "-p", "udp", "-m", "conntrack", "--ctstate", "NEW", "-j", "REJECT", "--reject-with", "icmp-port-unreachable")
}

// clear removes host's rules.
func (f *nsFirewall) clear(host int) { f.t.Helper(); f.must(host, "-F", nsChain) }

func (f *nsFirewall) teardown() {
	for _, host := range f.made {
		for _, args := range [][]string{{"-D", "INPUT", "-j", nsChain}, {"-F", nsChain}, {"-X", nsChain}} {
			if err := f.run(host, args...); err != nil && !(args[0] == "-D" && strings.Contains(err.Error(), "does a matching rule exist")) {
				f.t.Errorf("cleanup: %v", err)
			}
		}
	}
}

// nsOp is one recorded call: chaos_test.go's record, and where it was
// made and the failure's code.
type nsOp struct {
	chaosOp
	host int
	code string // of a failed answer
}

// nsRecorder records every reward the test makes, through `appnode rpc
// --json` in the namespace of the node it asks.
type nsRecorder struct {
	c     *nsCluster
	start time.Time
	mu    sync.Mutex
	ops   []nsOp
}

func newRecorder(c *nsCluster) *nsRecorder { return &nsRecorder{c: c, start: time.Now()} }

func (r *nsRecorder) since() time.Duration { return time.Since(r.start) }

// reward runs `reward PLAYER D` at host's node and records the call. It is
// safe from any goroutine; the error says the rpc hung or answered a
// success that is not a total.
func (r *nsRecorder) reward(ctx context.Context, client, host int, player string, d int64) (nsOp, error) {
	p := r.c.ps[host-1]
	op := nsOp{chaosOp: chaosOp{client: client, player: player, delta: d, node: p.name}, host: host}
	op.call = r.since()
	a, err := nsRPCReward(ctx, r.c.h, r.c.lan, host, p.name, player, d)
	op.ret = r.since()
	op.text = a.String()
	switch {
	case !a.Failed:
		total, perr := strconv.ParseInt(a.Output, 10, 64)
		if perr != nil {
			op.outcome = chaosUnknown
			if err == nil {
				err = fmt.Errorf("reward %s %d at %s succeeded with %q, not a total", player, d, p.name, a.Output)
			}
		} else {
			op.outcome, op.total = chaosAcked, total
		}
	case a.Outcome == wire.OutcomeNotApplied.String():
		op.outcome = chaosNotApplied
	default:
		op.outcome = chaosUnknown
	}
	if a.Failed && a.Code != nil {
		op.code = *a.Code
	}
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
	return op, err
}

// rewardOK rewards until acknowledged, from the test's goroutine, and
// returns the acknowledged call.
func (r *nsRecorder) rewardOK(client, host int, player string, d int64) nsOp {
	r.c.t.Helper()
	var op nsOp
	testenv.Eventually(r.c.t, settleLimit, fmt.Sprintf("reward %s %d at h%d", player, d, host), func() (bool, string) {
		var err error
		if op, err = r.reward(context.Background(), client, host, player, d); err != nil {
			r.c.t.Fatal(err)
		}
		return op.outcome == chaosAcked, op.text
	})
	return op
}

func (r *nsRecorder) history() []nsOp {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

// startClients starts one caller per host, each rewarding players by 1
// through its host's node, one call at a time, round robin from its own
// offset; it returns the function that stops them. They stop when the
// test ends too, their rpcs killed, before the nodes and the namespaces
// go.
func (r *nsRecorder) startClients(hosts []int, players []string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	r.c.t.Cleanup(func() {
		once.Do(func() { close(done) })
		cancel()
		wg.Wait()
	})
	for i, host := range hosts {
		wg.Go(func() {
			// Pacing, not synchronisation: a pause between calls leaves
			// the nodes' failure detectors some of the 2 cores.
			pace := time.NewTicker(nsClientPace)
			defer pace.Stop()
			for k := i * len(players) / len(hosts); ; k++ {
				select {
				case <-done:
					return
				case <-pace.C:
				}
				if _, err := r.reward(ctx, i, host, players[k%len(players)], 1); err != nil && ctx.Err() == nil {
					r.c.t.Errorf("caller at h%d: %v", host, err)
					return
				}
			}
		})
	}
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

// nsClientPace: each caller starts at most one call per nsClientPace.
const nsClientPace = 30 * time.Millisecond

// waitServed waits until every node of hosts has acknowledged a reward of
// every player in a call made after from.
func (r *nsRecorder) waitServed(hosts []int, players []string, from time.Duration, what string) time.Duration {
	r.c.t.Helper()
	return testenv.Eventually(r.c.t, settleLimit, what, func() (bool, string) {
		missing := r.unserved(hosts, players, from)
		return len(missing) == 0, fmt.Sprintf("not yet acknowledged: %v", missing)
	})
}

// unserved lists the players, at the nodes of hosts, that the node has
// not acknowledged a reward of in a call made after from.
func (r *nsRecorder) unserved(hosts []int, players []string, from time.Duration) []string {
	served := map[[2]string]bool{}
	for _, op := range r.history() {
		if op.outcome == chaosAcked && op.call >= from {
			served[[2]string{op.node, op.player}] = true
		}
	}
	var missing []string
	for _, h := range hosts {
		for _, pl := range players {
			if !served[[2]string{r.c.ps[h-1].name, pl}] {
				missing = append(missing, fmt.Sprintf("%s at h%d", pl, h))
			}
		}
	}
	return missing
}

// readAll reads every player's total at every node, with rewards of 0
// (recorded), once no caller runs, and checks that they agree.
func (r *nsRecorder) readAll(players []string) map[string]int64 {
	t := r.c.t
	t.Helper()
	final := map[string]int64{}
	for _, pl := range players {
		for i, p := range r.c.ps {
			op := r.rewardOK(100+i, i+1, pl, 0)
			if i == 0 {
				final[pl] = op.total
			} else if op.total != final[pl] {
				t.Errorf("after the heal %s answers %s = %d, %s answered %d", p.name, pl, op.total, r.c.ps[0].name, final[pl])
			}
		}
	}
	return final
}

// check runs the checks on the whole history of players' calls: the
// final totals account for every acknowledged reward once, no total ever
// went back, and porcupine finds the history linearizable. It logs how
// the calls ended, at each node.
func (r *nsRecorder) check(players []string, final map[string]int64) {
	t := r.c.t
	var ops []chaosOp
	count := map[string]map[chaosOutcome]int{}
	for _, op := range r.history() {
		if !slices.Contains(players, op.player) {
			continue
		}
		ops = append(ops, op.chaosOp)
		if count[op.node] == nil {
			count[op.node] = map[chaosOutcome]int{}
		}
		count[op.node][op.outcome]++
	}
	for _, p := range r.c.ps {
		n := count[p.name]
		t.Logf("calls at %s: %d acknowledged, %d failed with nothing applied, %d of unknown outcome", p.name, n[chaosAcked], n[chaosNotApplied], n[chaosUnknown])
	}
	chaosAccount(t, ops, final, players)
	chaosLinearizable(t, ops)
	for _, p := range r.c.ps {
		if p.Exited() {
			t.Errorf("%s exited on its own: %v", p.name, p.Err())
		}
	}
}

// window is a stretch of the history: [from, to).
type window struct{ from, to time.Duration }

// acksIn returns the acknowledged calls at hosts made and answered within w.
func (r *nsRecorder) acksIn(hosts []int, w window) []nsOp {
	var out []nsOp
	for _, op := range r.history() {
		if op.outcome == chaosAcked && slices.Contains(hosts, op.host) && op.call >= w.from && op.ret < w.to {
			out = append(out, op)
		}
	}
	return out
}

// answersIn summarises the answers of the calls at host made within w.
func (r *nsRecorder) answersIn(host int, w window) string {
	var answers []string
	for _, op := range r.history() {
		if op.host == host && op.call >= w.from && op.call < w.to {
			if op.outcome == chaosAcked {
				answers = append(answers, "acknowledged")
			} else {
				answers = append(answers, chaosShape(op.text))
			}
		}
	}
	return nsSummary(answers)
}

// nsWhere asks p where player is: its owner and keeper.
func nsWhere(t *testing.T, p *proc, player string) (owner, keeper string) {
	t.Helper()
	w := p.ask("where " + player)
	m := chaosWhereRE.FindStringSubmatch(w)
	if m == nil {
		t.Fatalf("where %s at %s: %q", player, p.name, w)
	}
	return m[1], m[2]
}

func nsEnvInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func TestNetnsReject(t *testing.T) {
	majority, minority := []int{1, 2, 3}, []int{4, 5}
	all := append(slices.Clone(majority), minority...)
	rounds := nsEnvInt(t, "APPNODE_NETNS_ROUNDS", 1)
	ipt := nsNeedIptables(t)
	c := nsStartNodes(t, len(all))
	fw := nsFirewallSetup(t, c.lan, ipt)
	r := newRecorder(c)
	host := func(name string) int {
		return slices.IndexFunc(c.ps, func(p *proc) bool { return p.name == name }) + 1
	}

	// Two players owned by each node. Only a player with a copy on the
	// majority side can be served there: a minority node's players whose
	// keeper is on the minority too are left out (lost is what a double
	// failure of both holders does to them; logged at the end).
	var players, bothMinority []string
	for _, h := range all {
		chosen := 0
		for k := 0; chosen < 2; k++ {
			if k == 8 {
				t.Fatalf("h%d: no player among 8 created there has its keeper on the majority side", h)
			}
			pl := fmt.Sprintf("rj%d%c", h, 'a'+k)
			r.rewardOK(-1, h, pl, 5)
			owner, keeper := nsWhere(t, c.ps[0], pl)
			if owner != c.ps[h-1].name {
				t.Fatalf("%s, created at h%d, is owned by %s", pl, h, owner)
			}
			if slices.Contains(minority, h) && slices.Contains(minority, host(keeper)) {
				bothMinority = append(bothMinority, pl)
				continue
			}
			players = append(players, pl)
			chosen++
			t.Logf("%s: owner h%d, keeper h%d", pl, h, host(keeper))
		}
	}

	stopClients := r.startClients(all, players)
	r.waitServed(all, players, 0, "every node serves every player before the cut")
	var cuts []window
	for round := 1; round <= rounds; round++ {
		cuts = append(cuts, r.rejectRound(fw, round, majority, minority, players))
	}
	stopClients()

	final := r.readAll(players)
	c.players = players
	after := c.waitSettled(t)
	t.Logf("after the heal: %q", after)

	// The minority never acknowledged a reward while it was cut off.
	for i, w := range cuts {
		for _, op := range r.acksIn(minority, w) {
			t.Errorf("cut %d: %s, on the minority side, acknowledged reward %s %d (called %v, answered %v: %d): a minority must not acknowledge a reward",
				i+1, op.node, op.player, op.delta, op.call.Round(time.Millisecond), op.ret.Round(time.Millisecond), op.total)
		}
	}
	r.check(players, final)

	// What became of the players both of whose copies were on the
	// minority side: not checked, since two holders failed together as
	// far as the majority could tell.
	for _, pl := range bothMinority {
		a := nsReward(t, c.h, c.lan, 1, c.ps[0].name, pl, 0)
		t.Logf("%s, both of whose copies were on the minority side, was 5 before the cut; after the heal %s answers %s", pl, c.ps[0].name, a)
	}
	c.logMembershipEvents(minority)
}

// rejectRound cuts the minority off with REJECT rules on both sides,
// waits until the majority serves every player and the minority refuses
// for want of a majority, heals, and waits until every node serves every
// player again. It returns the stretch of the history during which every
// rule was in place.
func (r *nsRecorder) rejectRound(fw *nsFirewall, round int, majority, minority []int, players []string) window {
	c, t := r.c, r.c.t
	t.Helper()
	ms := time.Millisecond
	procsOf := func(hosts []int) []*proc {
		var ps []*proc
		for _, h := range hosts {
			ps = append(ps, c.ps[h-1])
		}
		return ps
	}
	from := r.since()
	for _, h := range majority {
		fw.reject(h, minority...)
	}
	for _, h := range minority {
		fw.reject(h, majority...)
	}
	cutAt := r.since()
	t.Logf("cut %d: REJECT rules in place between h%v and h%v at %v (%v to install them)", round, majority, minority, cutAt.Round(ms), (cutAt - from).Round(ms))

	c.h.waitMembers(procsOf(majority)...)
	listed := r.since()
	t.Logf("cut %d: the majority's nodes list only each other %v after the rules", round, (listed - cutAt).Round(ms))
	r.waitServed(majority, players, listed, fmt.Sprintf("cut %d: every majority node serves every player", round))
	t.Logf("cut %d: every majority node served every player %v after the rules", round, (r.since() - cutAt).Round(ms))

	noQuorum := wire.CodeNoQuorum.String()
	testenv.Eventually(t, settleLimit, fmt.Sprintf("cut %d: the minority refuses rewards for want of a majority", round), func() (bool, string) {
		refused := map[int]bool{}
		for _, op := range r.history() {
			if op.call >= cutAt && op.code == noQuorum {
				refused[op.host] = true
			}
		}
		var not []string
		for _, h := range minority {
			if !refused[h] {
				not = append(not, fmt.Sprintf("h%d: %s", h, r.answersIn(h, window{cutAt, r.since()})))
			}
		}
		return len(not) == 0, strings.Join(not, "; ")
	})
	t.Logf("cut %d: every minority node has refused a reward for want of a majority (%s) by %v after the rules", round, noQuorum, (r.since() - cutAt).Round(ms))

	healFrom := r.since()
	cut := window{cutAt, healFrom}
	for _, h := range minority {
		t.Logf("cut %d: answers at h%d while cut off: %s", round, h, r.answersIn(h, cut))
	}
	for h := 1; h <= len(c.ps); h++ {
		fw.clear(h)
	}
	healAt := r.since()
	t.Logf("cut %d: rules removed at %v, after %v", round, healAt.Round(ms), (healAt - cutAt).Round(ms))
	c.h.waitMembers(c.ps...)
	t.Logf("heal %d: every node lists every other %v after the rules went", round, (r.since() - healAt).Round(ms))
	all := append(slices.Clone(majority), minority...)
	r.waitServed(all, players, healAt, fmt.Sprintf("heal %d: every node serves every player", round))
	t.Logf("heal %d: every node served every player %v after the rules went", round, (r.since() - healAt).Round(ms))
	return cut
}

// logMembershipEvents logs what hosts' nodes said about membership.
func (c *nsCluster) logMembershipEvents(hosts []int) {
	for _, h := range hosts {
		p := c.ps[h-1]
		var lines []string
		for _, e := range p.Lines() {
			if strings.Contains(e, "declared") || strings.Contains(e, "rejoin") || strings.Contains(e, "majority") || strings.Contains(e, "roster") || strings.HasSuffix(e, " down") || strings.HasSuffix(e, " up") {
				lines = append(lines, e)
			}
		}
		c.t.Logf("%s's events about membership:\n%s", p.name, strings.Join(lines, "\n"))
	}
}

// asymPhase is one rule of TestNetnsAsymmetric.
type asymPhase struct {
	what    string
	install func()
	// blocked says whether an owner cannot reach its keeper under the
	// rule: that player cannot be updated while the rule holds.
	blocked func(owner, keeper string) bool
}

func TestNetnsAsymmetric(t *testing.T) {
	hold := asymHold(t)
	const a, b, cc = 1, 2, 3 // hosts: A refuses B; C reaches both
	all := []int{a, b, cc}
	ipt := nsNeedIptables(t)
	c := nsStartNodes(t, 3)
	fw := nsFirewallSetup(t, c.lan, ipt)
	x := &asymRun{
		t: t, c: c, r: newRecorder(c), hold: hold, all: all, via: cc,
		pa: c.ps[a-1], aPlayers: fmt.Sprintf(`["as%da","as%db"]`, a, a),
	}
	nameA, nameB := c.ps[a-1].name, c.ps[b-1].name

	x.placePlayers()
	x.pa.expect("local_players", x.aPlayers)
	rostersBefore := map[string]int{}
	for _, p := range c.ps {
		rostersBefore[p.name] = len(rosterEvents(p))
	}

	stopClients := x.r.startClients(all, x.players)
	x.r.waitServed(all, x.players, 0, "every node serves every player before the rule")

	// The rules. The second replaces the first without a gap, so that
	// the connections from B that the first broke stay refused, while
	// A's own new connections to B get through (their replies, and the
	// datagrams of flows A opened, are established).
	phases := []asymPhase{
		{
			what:    fmt.Sprintf("h%d refuses every packet from h%d", a, b),
			install: func() { fw.reject(a, b) },
			blocked: func(o, k string) bool {
				return (o == nameA && k == nameB) || (o == nameB && k == nameA)
			},
		},
		{
			what:    fmt.Sprintf("h%d refuses new connections and flows from h%d, its own to h%d get through", a, b, b),
			install: func() { fw.rejectNew(a, b); fw.unreject(a, b) },
			blocked: func(o, k string) bool { return o == nameB && k == nameA },
		},
	}
	var rules []window
	for i, ph := range phases {
		served, blocked := x.split(ph)
		ph.install()
		w := x.holdRule(i, ph, served)
		rules = append(rules, w)
		x.logRule(i, w, served, blocked)
	}
	fw.clear(a)
	healAt := x.r.since()
	t.Logf("rules removed at %v, after %v", healAt.Round(time.Millisecond), (healAt - rules[0].from).Round(time.Millisecond))

	c.h.waitMembers(c.ps...)
	x.r.waitServed(all, x.players, healAt, "every node serves every player after the rules went")
	stopClients()
	x.checkHealed(rostersBefore)
}

// asymHold is how long each rule of TestNetnsAsymmetric holds at least:
// 3 s, or APPNODE_NETNS_HOLD.
func asymHold(t *testing.T) time.Duration {
	hold := 3 * time.Second
	if v := os.Getenv("APPNODE_NETNS_HOLD"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("APPNODE_NETNS_HOLD=%q: want a duration", v)
		}
		hold = d
	}
	return hold
}

// asymRun is TestNetnsAsymmetric's cluster, its players and where they
// were placed, shared by the test's steps.
type asymRun struct {
	t        *testing.T
	c        *nsCluster
	r        *nsRecorder
	hold     time.Duration
	all      []int
	via      int   // the host that reaches both sides of the rules
	pa       *proc // the host whose rules these are
	aPlayers string

	players         []string
	owners, keepers map[string]string
}

// placePlayers creates two players at each host, each owned by the host
// that created it, and notes their owners and keepers.
func (x *asymRun) placePlayers() {
	t, c := x.t, x.c
	x.owners, x.keepers = map[string]string{}, map[string]string{}
	for _, h := range x.all {
		for _, suffix := range []string{"a", "b"} {
			pl := fmt.Sprintf("as%d%s", h, suffix)
			x.r.rewardOK(-1, h, pl, 5)
			owner, keeper := nsWhere(t, c.ps[x.via-1], pl)
			if owner != c.ps[h-1].name {
				t.Fatalf("%s, created at h%d, is owned by %s", pl, h, owner)
			}
			x.players = append(x.players, pl)
			x.owners[pl], x.keepers[pl] = owner, keeper
			t.Logf("%s: owner %s, keeper %s", pl, owner, keeper)
		}
	}
}

// split sorts the players into those that must be served under the rule
// ph and those that need not be. A player whose owner cannot reach its
// keeper cannot be updated while the rule holds: neither is removed (most
// of the roster reaches both), so the owner keeps a keeper it cannot
// reach. The others must be served through C all along.
func (x *asymRun) split(ph asymPhase) (served, blocked []string) {
	for _, pl := range x.players {
		if ph.blocked(x.owners[pl], x.keepers[pl]) && os.Getenv("APPNODE_NETNS_ASYM_ALL") == "" {
			blocked = append(blocked, pl)
		} else {
			served = append(served, pl)
		}
	}
	return served, blocked
}

// holdRule keeps rule i (just installed) for hold, and until C has served
// every player it must serve in a call made under the rule. Meanwhile,
// every 250 ms: A still runs its players' primaries; what `nodes` answers
// is logged. It returns when the rule held.
func (x *asymRun) holdRule(i int, ph asymPhase, served []string) window {
	t, c, r, ms := x.t, x.c, x.r, time.Millisecond
	at := r.since()
	t.Logf("rule %d from %v on: %s", i+1, at.Round(ms), ph.what)
	nodesSeen := map[string]map[string]bool{}
	tick := time.NewTicker(250 * ms)
	for {
		<-tick.C // polling interval, not synchronisation: the rule's length is hold
		if got := x.pa.ask("local_players"); got != x.aPlayers {
			t.Errorf("rule %d: %v into it, %s runs %s, want %s: its players must stay on it", i+1, (r.since() - at).Round(ms), x.pa.name, got, x.aPlayers)
		}
		for _, p := range c.ps {
			if nodesSeen[p.name] == nil {
				nodesSeen[p.name] = map[string]bool{}
			}
			nodesSeen[p.name][p.ask("nodes")] = true
		}
		missing := r.unserved([]int{x.via}, served, at)
		if r.since() >= at+x.hold && len(missing) == 0 {
			break
		}
		if r.since() > at+x.hold+settleLimit {
			tick.Stop()
			t.Fatalf("rule %d: %v into it, h%d has not served %v in a call made since: rewards through C must keep working", i+1, (r.since() - at).Round(ms), x.via, missing)
		}
	}
	tick.Stop()
	w := window{at, r.since()}
	for _, p := range c.ps {
		var seen []string
		for s := range nodesSeen[p.name] {
			seen = append(seen, s)
		}
		slices.Sort(seen)
		t.Logf("rule %d: `nodes` at %s answered %v", i+1, p.name, seen)
	}
	return w
}

// logRule logs what each host answered while rule i held, and how often
// each player was acknowledged.
func (x *asymRun) logRule(i int, w window, served, blocked []string) {
	t, r, cc := x.t, x.r, x.via
	for _, h := range x.all {
		t.Logf("rule %d: answers at h%d: %s", i+1, h, r.answersIn(h, w))
	}
	servedAtC, servedAnywhere := map[string]int{}, map[string]int{}
	for _, op := range r.acksIn(x.all, w) {
		servedAnywhere[op.player]++
		if op.host == cc {
			servedAtC[op.player]++
		}
	}
	for _, pl := range served {
		t.Logf("rule %d: %s acknowledged %d times at h%d", i+1, pl, servedAtC[pl], cc)
	}
	for _, pl := range blocked {
		t.Logf("rule %d: %s, owner %s and keeper %s, which it cannot reach, acknowledged %d times anywhere (%d at h%d); APPNODE_NETNS_ASYM_ALL=1 requires it served through h%d",
			i+1, pl, x.owners[pl], x.keepers[pl], servedAnywhere[pl], servedAtC[pl], cc, cc)
	}
}

// checkHealed checks the cluster once the rules are gone and the clients
// stopped: one placement, every player where it was, no roster changed
// since rostersBefore, nobody declared failed, and every total accounted.
func (x *asymRun) checkHealed(rostersBefore map[string]int) {
	t, c, players := x.t, x.c, x.players
	final := x.r.readAll(players)
	c.players = players
	after := c.waitSettled(t)
	t.Logf("after the rules: %q", after)
	for _, pl := range players {
		if owner, _ := nsWhere(t, c.ps[x.via-1], pl); owner != x.owners[pl] {
			t.Errorf("%s moved from %s to %s, although no node was removed", pl, x.owners[pl], owner)
		}
	}
	// Nobody was removed from the roster, nor declared failed.
	for _, p := range c.ps {
		rs := rosterEvents(p)
		for _, ro := range rs[rostersBefore[p.name]:] {
			t.Errorf("%s learnt a new roster during or after the rules: %s", p.name, ro)
		}
		for _, e := range p.Lines() {
			if strings.Contains(e, "declared failed") {
				t.Errorf("%s: %s", p.name, e)
			}
		}
	}
	x.r.check(players, final)
	c.logMembershipEvents(x.all)
}
