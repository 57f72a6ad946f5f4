package bench

// The load generator of `appnode bench`: closed-loop clients that send
// rewards over one multiplexed connection per node, and record latency
// histograms, errors and a throughput timeline.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appnode/appnode/client"
	"github.com/appnode/appnode/transport"
	"github.com/appnode/appnode/wire"
)

type entryMode int

const (
	entryOwner entryMode = iota // to the player's owner
	entryOther                  // to a node that must forward
	entryAny                    // to a random node
)

func parseEntry(s string) (entryMode, error) {
	switch s {
	case "owner":
		return entryOwner, nil
	case "other":
		return entryOther, nil
	case "any":
		return entryAny, nil
	}
	return 0, fmt.Errorf("--entry must be owner, other or any, not %q", s)
}

func (e entryMode) String() string {
	return [...]string{"owner", "other", "any"}[e]
}

// Requests are classed by whether the node they were sent to owned the
// player (as far as the bench knew) or had to forward them.
const (
	classOwner = 0
	classFwd   = 1
)

var classNames = [2]string{"owner", "forwarded"}

// target is one node (or floor server) with the bench's one connection to
// it, shared by every client: Client.Call is safe for concurrent use and
// multiplexes calls by request id.
type target struct {
	name    string
	cl      *client.Client
	httpURL string      // its front door, with --http
	bare    *bareClient // instead of cl: the bare wire's first server

	down    atomic.Bool
	mu      sync.Mutex
	downAt  time.Time
	downWhy string
}

// markDown stops sending to t after its connection broke. It is not
// redialed: a node the bench killed stays dead, and one that merely lost
// its link is reported rather than silently replaced.
func (t *target) markDown(err error) {
	if t.down.Swap(true) {
		return
	}
	t.mu.Lock()
	t.downAt, t.downWhy = time.Now(), err.Error()
	t.mu.Unlock()
}

// linkBroken tells whether err means the connection to the node is gone.
func linkBroken(err error) bool {
	return errors.Is(err, wire.ErrLinkLost) || errors.Is(err, wire.ErrGone) || errors.Is(err, wire.ErrRefused) || errors.Is(err, transport.ErrClosed)
}

// playerTable is the bench's picture of the players: names, and which
// target it believes owns each (-1: unknown). Beliefs are hints learned
// with Where; a wrong one costs a forward, not a wrong answer.
type playerTable struct {
	names []string
	owner []atomic.Int32
}

func newPlayerTable(prefix string, n int) *playerTable {
	pt := &playerTable{names: make([]string, n), owner: make([]atomic.Int32, n)}
	for i := range pt.names {
		pt.names[i] = fmt.Sprintf("%s%d", prefix, i+1)
		pt.owner[i].Store(-1)
	}
	return pt
}

// killPlan kills one node at `after` into the load.
type killPlan struct {
	after  time.Duration
	target int          // index in load.targets
	do     func() error // kill -9 and wait until the process is gone
}

// load is one timed phase: clients sending rewards to targets.
type load struct {
	label       string
	targets     []*target
	players     *playerTable
	entry       entryMode
	clients     int
	duration    time.Duration
	callTimeout time.Duration
	progress    io.Writer    // nil: no live progress line
	kill        *killPlan    // nil: nothing is killed
	http        *http.Client // non-nil: rewards go through the targets' HTTP front doors

	start        time.Time
	initialOwner []int32      // owners as believed when the phase started
	killedAt     atomic.Int64 // ns after start; 0 until the kill
	ok, failed   atomic.Int64 // for the progress line
}

// clientStats is what one client saw; merged into phaseResult at the end.
type clientStats struct {
	lat      [2]histogram
	errs     [2]errorTally
	buckets  []int64 // successes per timelineStep
	maxStall time.Duration
	// maxStallKilled is the longest stall of a player the killed node
	// owned when the phase started.
	maxStallKilled time.Duration
	slow           int64 // requests that took over a second
	errsAfterKill  int64
}

type errorTally map[string]*errorKind

type errorKind struct {
	count   int64
	example string
}

func (t errorTally) add(kind, example string) {
	e := t[kind]
	if e == nil {
		e = &errorKind{example: example}
		t[kind] = e
	}
	e.count++
}

// errorKindOf names an error for the tally: its wire code when a node
// answered, otherwise what happened to the call.
func errorKindOf(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, wire.ErrLinkLost):
		return "connection lost"
	case errors.Is(err, wire.ErrGone) || errors.Is(err, wire.ErrRefused) || errors.Is(err, transport.ErrClosed):
		return "node gone"
	case errors.Is(err, errNoLiveNode):
		return "no live node"
	}
	if code, ok := wire.CodeOf(err); ok {
		return code.String()
	}
	return "other"
}

var errNoLiveNode = errors.New("every node's connection is lost")

// phaseResult is a finished phase, all clients merged.
type phaseResult struct {
	label       string
	elapsed     time.Duration
	lat         [2]histogram
	all         histogram
	errs        [2]errorTally
	buckets     []int64
	maxStall    time.Duration
	interrupted bool
	kill        *killResult
	cpu         map[string]float64 // cores used by each process during the phase
	down        []downInfo
}

type killResult struct {
	node           string
	at             time.Duration
	err            error
	maxStall       time.Duration
	maxStallKilled time.Duration
	slow           int64
	errsAfter      int64
	preRate        float64 // rewards/s before the kill
	recovered      bool
	recoveredAfter time.Duration
}

type downInfo struct {
	node string
	at   time.Duration
	why  string
}

func (r *phaseResult) errors() int64 {
	var n int64
	for _, t := range r.errs {
		for _, e := range t {
			n += e.count
		}
	}
	return n
}

// run drives the phase until its duration has passed or ctx ends.
func (l *load) run(ctx context.Context) *phaseResult {
	l.initialOwner = make([]int32, len(l.players.names))
	for i := range l.initialOwner {
		l.initialOwner[i] = l.players.owner[i].Load()
	}
	l.start = time.Now()
	// Cancelled at the phase's end rather than given it as a deadline:
	// see reward.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	end := time.AfterFunc(l.duration, cancel)
	defer end.Stop()

	var wg sync.WaitGroup
	stats := make([]*clientStats, l.clients)
	nBuckets := int(l.duration/timelineStep) + 2
	for i := range stats {
		st := &clientStats{buckets: make([]int64, nBuckets), errs: [2]errorTally{{}, {}}}
		stats[i] = st
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
		wg.Go(func() { l.client(runCtx, rng, st) })
	}

	var kr *killResult
	if l.kill != nil {
		kr = &killResult{node: l.targets[l.kill.target].name}
		wg.Go(func() { l.killAt(runCtx, kr) })
	}
	stopProgress := func() {}
	if l.progress != nil {
		stopProgress = l.showProgress()
	}
	wg.Wait()
	stopProgress()

	r := &phaseResult{label: l.label, elapsed: min(time.Since(l.start), l.duration), errs: [2]errorTally{{}, {}}, buckets: make([]int64, nBuckets)}
	r.interrupted = ctx.Err() != nil
	for _, st := range stats {
		for c := range st.lat {
			r.lat[c].merge(&st.lat[c])
			r.all.merge(&st.lat[c])
			for k, e := range st.errs[c] {
				x := r.errs[c][k]
				if x == nil {
					r.errs[c][k] = &errorKind{count: e.count, example: e.example}
				} else {
					x.count += e.count
				}
			}
		}
		for i, n := range st.buckets {
			r.buckets[i] += n
		}
		r.maxStall = max(r.maxStall, st.maxStall)
		if kr != nil {
			kr.maxStall = max(kr.maxStall, st.maxStall)
			kr.maxStallKilled = max(kr.maxStallKilled, st.maxStallKilled)
			kr.slow += st.slow
			kr.errsAfter += st.errsAfterKill
		}
	}
	// Trim the timeline to the phase's length.
	r.buckets = r.buckets[:min(len(r.buckets), int((r.elapsed+timelineStep-1)/timelineStep))]
	if kr != nil && kr.at > 0 {
		per, after, ok := recovery(r.buckets, kr.at, 0.8, 5)
		kr.preRate = per * float64(time.Second/timelineStep)
		kr.recoveredAfter, kr.recovered = after, ok
	}
	r.kill = kr
	for _, t := range l.targets {
		if t.down.Load() {
			t.mu.Lock()
			r.down = append(r.down, downInfo{node: t.name, at: t.downAt.Sub(l.start), why: t.downWhy})
			t.mu.Unlock()
		}
	}
	return r
}

func (l *load) killAt(ctx context.Context, kr *killResult) {
	timer := time.NewTimer(l.kill.after)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		return
	}
	at := time.Since(l.start)
	l.killedAt.Store(int64(at))
	kr.at = at
	kr.err = l.kill.do()
}

// client sends one reward at a time until ctx ends.
func (l *load) client(ctx context.Context, rng *rand.Rand, st *clientStats) {
	for ctx.Err() == nil {
		l.reward(ctx, rng, rng.IntN(len(l.players.names)), st)
	}
}

// reward sends one reward for player p, retrying until it succeeds or the
// phase ends, and records how long the player waited.
func (l *load) reward(ctx context.Context, rng *rand.Rand, p int, st *clientStats) {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		t, class := l.pick(ctx, rng, p, st)
		var err error
		if t < 0 {
			err = errNoLiveNode
		} else {
			// ctx ends with the phase and has no deadline: the client
			// bounds each call by callTimeout (its CallTimeout) with one
			// timer per connection, where a ctx with a deadline per call
			// costs a timer per call, which the bare wire's client (and
			// mpbench's) does not pay.
			switch tg := l.targets[t]; {
			case tg.bare != nil:
				err = tg.bare.reward(ctx, l.players.names[p], 1, l.callTimeout)
			case l.http != nil:
				cctx, cancel := context.WithTimeout(ctx, l.callTimeout)
				err = tg.rewardHTTP(cctx, l.http, l.players.names[p])
				cancel()
			default:
				_, err = tg.cl.Reward(ctx, l.players.names[p], 1)
			}
		}
		if err == nil {
			now := time.Now()
			l.ok.Add(1)
			st.lat[class].record(now.Sub(start))
			if i := int(now.Sub(l.start) / timelineStep); i < len(st.buckets) {
				st.buckets[i]++
			}
			if o := l.players.owner[p].Load(); o < 0 || l.targets[o].down.Load() {
				// Its owner unknown or gone, the node asked most likely
				// took the player itself (a node asked about a player nobody
				// holds becomes its owner).
				l.players.owner[p].Store(int32(t))
			}
			l.noteStall(p, now.Sub(start), st)
			return
		}
		if ctx.Err() != nil {
			// The phase ended during the call: not the node's fault, but
			// a player left waiting is a stall.
			l.noteStall(p, time.Since(start), st)
			return
		}
		l.failed.Add(1)
		st.errs[class].add(errorKindOf(err), err.Error())
		if l.killedAt.Load() != 0 {
			st.errsAfterKill++
		}
		if t >= 0 {
			if linkBroken(err) {
				l.targets[t].markDown(err)
			}
			if o := l.players.owner[p].Load(); o == int32(t) || linkBroken(err) {
				l.players.owner[p].Store(-1) // learn it again
			}
		}
		if !sleepCtx(ctx, retryDelay(attempt, rng)) {
			l.noteStall(p, time.Since(start), st)
			return
		}
	}
}

func (l *load) noteStall(p int, d time.Duration, st *clientStats) {
	st.maxStall = max(st.maxStall, d)
	if d > time.Second {
		st.slow++
	}
	if l.kill != nil && l.initialOwner[p] == int32(l.kill.target) {
		st.maxStallKilled = max(st.maxStallKilled, d)
	}
}

// retryDelay backs off from 1 ms to 50 ms, with jitter.
func retryDelay(attempt int, rng *rand.Rand) time.Duration {
	d := min(time.Millisecond<<min(attempt, 6), 50*time.Millisecond)
	return d/2 + time.Duration(rng.Int64N(int64(d/2)+1))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pick chooses the target for player p by the entry mode, and says whether
// the request goes to its owner or must be forwarded. -1: no live target.
func (l *load) pick(ctx context.Context, rng *rand.Rand, p int, st *clientStats) (int, int) {
	owner := int(l.players.owner[p].Load())
	if owner >= 0 && l.targets[owner].down.Load() {
		owner = -1
	}
	switch l.entry {
	case entryOwner:
		if owner < 0 {
			owner = l.learnOwner(ctx, rng, p, st)
		}
		return owner, classOwner
	case entryOther:
		if owner < 0 {
			owner = l.learnOwner(ctx, rng, p, st)
		}
		if t := l.randomLive(rng, owner); t >= 0 {
			return t, classFwd
		}
		return owner, classOwner // no other node is left
	default:
		t := l.randomLive(rng, -1)
		if t >= 0 && t == owner {
			return t, classOwner
		}
		return t, classFwd
	}
}

// randomLive returns a random target that is not down and not except, or
// -1 if there is none.
func (l *load) randomLive(rng *rand.Rand, except int) int {
	n := len(l.targets)
	first := rng.IntN(n)
	for i := range n {
		t := (first + i) % n
		if t != except && !l.targets[t].down.Load() {
			return t
		}
	}
	return -1
}

// learnOwner asks a random live node where player p lives. If its owner is
// not a live target (it died, or p is new), the node asked is returned: a
// reward sent there makes it the owner.
func (l *load) learnOwner(ctx context.Context, rng *rand.Rand, p int, st *clientStats) int {
	t := l.randomLive(rng, -1)
	if t < 0 {
		return -1
	}
	cctx, cancel := context.WithTimeout(ctx, l.callTimeout)
	wr, err := l.targets[t].cl.Where(cctx, l.players.names[p])
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			l.failed.Add(1)
			st.errs[classOwner].add("where: "+errorKindOf(err), err.Error())
			if linkBroken(err) {
				l.targets[t].markDown(err)
			}
		}
		return l.randomLive(rng, -1)
	}
	if o := l.indexOf(wr.Owner.Name); o >= 0 && !l.targets[o].down.Load() {
		l.players.owner[p].Store(int32(o))
		return o
	}
	return t
}

func (l *load) indexOf(name string) int {
	for i, t := range l.targets {
		if t.name == name {
			return i
		}
	}
	return -1
}

// showProgress prints a line, rewritten in place, until the returned stop
// is called.
func (l *load) showProgress() (stop func()) {
	type sample struct {
		at time.Time
		ok int64
	}
	var window []sample // the last second; touched only by the ticker
	return ticker(l.progress, func() string {
		now, ok := time.Now(), l.ok.Load()
		window = append(window, sample{now, ok})
		for len(window) > 1 && now.Sub(window[0].at) > time.Second {
			window = window[1:]
		}
		rate := 0.0
		if d := now.Sub(window[0].at).Seconds(); d > 0 {
			rate = float64(ok-window[0].ok) / d
		}
		var down []string
		for _, t := range l.targets {
			if t.down.Load() {
				down = append(down, t.name)
			}
		}
		extra := ""
		if len(down) > 0 {
			extra = "  connection lost: " + strings.Join(down, ",")
		}
		return fmt.Sprintf("%s %5.1fs/%v  %8.0f rewards/s  %9d done  %d errors%s",
			l.label, now.Sub(l.start).Seconds(), l.duration, rate, ok, l.failed.Load(), extra)
	})
}

// ticker prints render()'s line, rewritten in place, every 250 ms until
// the returned stop is called.
func ticker(w io.Writer, render func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprint(w, "\r\033[K"+render())
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
