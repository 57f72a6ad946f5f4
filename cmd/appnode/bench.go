package main

// `appnode bench`: measure a cluster as its users would. See benchUsage.

import (
	"cmp"
	"context"
	cryptorand "crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/appnode/appnode/client"
	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/internal/ports"
	"github.com/appnode/appnode/names"
	"github.com/appnode/appnode/node"
	"github.com/appnode/appnode/transport"
	"github.com/appnode/appnode/wire"
	"github.com/chzyer/readline"
)

const benchUsage = `usage:
  appnode bench --spawn N [flags]        start N nodes on 127.0.0.1, measure, stop them
  appnode bench --nodes a@h,b@h [flags]  measure a running cluster

Clients send rewards (1 point each) to random players, one at a time each,
over one shared, multiplexed connection per node, and retry a failed reward
until it succeeds. The report gives throughput (rewards/s), latency
percentiles (from a reward's first attempt to its success) and errors, split
by whether the node asked was the player's owner or had to forward.

On a running cluster (--nodes) the players are named bench-PID-RUN-playerN,
so no real player is touched; they stay in the cluster afterwards.

--floor adds, in the same run, the same load against two processes of this
binary that only forward each request and wait for an ack (the least any
synchronously replicated write can cost with appnode's framing and
transport), and prints every figure as a ratio to it.

flags:
`

// Timeouts of the bench's own waits. They bound how long a broken cluster
// can hang the bench; a healthy one takes a fraction of them.
const (
	nodeStartLimit = 20 * time.Second // a spawned node registers its name
	formLimit      = 30 * time.Second // the cluster sees all its members
	dialLimit      = 5 * time.Second  // connect and handshake
	commandLimit   = 15 * time.Second // one console command
	stopGrace      = 3 * time.Second  // SIGTERM before SIGKILL
	populateFlight = 256              // rewards in flight while populating
)

type benchConfig struct {
	spawn       int
	nodes       []string
	namesPort   int
	clients     int
	players     int
	duration    time.Duration
	entry       entryMode
	floor       bool
	killAfter   time.Duration
	populate    int
	settle      time.Duration
	callTimeout time.Duration
	json        bool
	progress    bool
	profileDir  string
	cookie      string // with --nodes; "" resolves it as `appnode rpc` does
}

func parseBenchFlags(args []string, stderr io.Writer) (benchConfig, error) {
	var c benchConfig
	fs := flag.NewFlagSet("appnode bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	nodes := fs.String("nodes", "", "comma-separated NAME@HOST of a running cluster's nodes to send requests to")
	entry := fs.String("entry", "any", "where each reward goes: owner (the player's owner), other (a node that must forward) or any (a random node)")
	fs.IntVar(&c.spawn, "spawn", 0, "start this many nodes (2 or more) of this binary on 127.0.0.1, with a private name service port and state dir")
	fs.IntVar(&c.namesPort, "names-port", client.DefaultNamesPort(), "with --nodes: port of the name service of the nodes' host (env APPNODE_NAMES_PORT)")
	fs.IntVar(&c.clients, "clients", 64, "concurrent clients, each with one reward in flight")
	fs.IntVar(&c.players, "players", 10000, "players the rewards are spread over, created before the clock starts")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "length of each measured phase")
	fs.BoolVar(&c.floor, "floor", false, "also measure the floor (forward + ack over appnode's transport) with the same clients, and print ratios to it")
	fs.DurationVar(&c.killAfter, "kill-after", 0, "with --spawn: kill -9 the last spawned node this long into the load, and report stalls and recovery")
	fs.IntVar(&c.populate, "populate", 0, "with --spawn: instead of the load, create this many players and report resident memory per node and bytes per player copy")
	fs.DurationVar(&c.settle, "settle", 10*time.Second, "with --populate: how long to wait at most for each node's memory to stop changing before reading it")
	fs.DurationVar(&c.callTimeout, "call-timeout", 10*time.Second, "deadline of each request; a reward that misses it is retried")
	fs.BoolVar(&c.json, "json", false, "print one JSON object instead of the tables")
	fs.BoolVar(&c.progress, "progress", readline.IsTerminal(int(os.Stderr.Fd())), "show a live progress line on stderr (default: when stderr is a terminal)")
	fs.StringVar(&c.cookie, "cookie", "", "with --nodes: the cluster's cookie (default: env APPNODE_COOKIE, else the cookie file); spawned nodes get a private one")
	fs.StringVar(&c.profileDir, "profile", "", "with --spawn: save each node's CPU profile during the load (and heap profile after it) in this directory")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (every setting is a flag; see appnode bench -h)", fs.Arg(0))
	}
	var err error
	if c.entry, err = parseEntry(*entry); err != nil {
		return c, err
	}
	if *nodes != "" {
		for _, n := range strings.Split(*nodes, ",") {
			if n = strings.TrimSpace(n); n != "" {
				c.nodes = append(c.nodes, node.FullName(n))
			}
		}
	}
	n := c.spawn + len(c.nodes)
	switch {
	case c.spawn != 0 && len(c.nodes) != 0:
		return c, errors.New("give either --spawn N or --nodes LIST, not both")
	case n == 0:
		return c, errors.New("say which cluster to measure: --spawn N to start one, or --nodes a@host,b@host for a running one")
	case c.spawn < 0 || c.spawn == 1:
		return c, errors.New("--spawn needs 2 or more nodes: a reward needs a keeper on a second node")
	case c.clients < 1:
		return c, errors.New("--clients must be at least 1")
	case c.players < 1:
		return c, errors.New("--players must be at least 1")
	case c.duration <= 0:
		return c, errors.New("--duration must be positive, e.g. 10s")
	case c.callTimeout <= 0:
		return c, errors.New("--call-timeout must be positive, e.g. 10s")
	case c.entry == entryOther && n < 2:
		return c, errors.New("--entry other needs 2 or more nodes")
	case c.killAfter < 0:
		return c, errors.New("--kill-after must be positive")
	case c.killAfter > 0 && c.spawn < 3:
		return c, errors.New("--kill-after needs --spawn 3 or more: the cluster must keep two nodes to serve rewards")
	case c.killAfter >= c.duration:
		return c, fmt.Errorf("--kill-after %v must be shorter than --duration %v", c.killAfter, c.duration)
	case c.populate < 0:
		return c, errors.New("--populate must be positive")
	case c.populate > 0 && c.spawn == 0:
		return c, errors.New("--populate needs --spawn: it reads the nodes' memory from /proc by their process ids")
	case c.populate > 0 && (c.floor || c.killAfter > 0):
		return c, errors.New("--populate replaces the load phase; it cannot be combined with --floor or --kill-after")
	case c.cookie != "" && c.spawn > 0:
		return c, errors.New("--cookie is for --nodes: a spawned cluster gets a private cookie of its own")
	case c.profileDir != "" && c.spawn == 0:
		return c, errors.New("--profile needs --spawn: it turns on the spawned nodes' profiling endpoint")
	}
	return c, nil
}

// runBench is `appnode bench`; its hidden sub-command `serve-floor` is a
// floor server.
func runBench(args []string) int {
	if len(args) > 0 && args[0] == "serve-floor" {
		return serveFloor(args[1:])
	}
	cfg, err := parseBenchFlags(args, os.Stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "appnode bench: %v\n", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go func() {
		// After the first signal, a second one ends the bench at once;
		// its children then exit when their stdin closes.
		<-ctx.Done()
		stop()
	}()

	b := &bench{cfg: cfg, stderr: os.Stderr}
	rep, err := b.run(ctx)
	b.close()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "appnode bench: interrupted; every process it started was stopped")
			return 130
		}
		fmt.Fprintf(os.Stderr, "appnode bench: %v\n", err)
		return 1
	}
	if cfg.json {
		err = writeJSON(os.Stdout, rep)
	} else {
		err = printReport(os.Stdout, rep)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "appnode bench: writing the report: %v\n", err)
		return 1
	}
	if rep.Interrupted {
		return 130
	}
	return 0
}

// bench holds everything one run creates, so that close can undo it
// whatever step failed.
type bench struct {
	cfg    benchConfig
	stderr io.Writer

	// private is the cookie of every process the bench starts, passed to
	// them in APPNODE_COOKIE: a spawned cluster is nobody else's. env is
	// their environment.
	private cookie.Cookie
	env     []string
	cookie  cookie.Cookie // of the cluster measured

	dir       string // spawned nodes' state dir
	keepDir   bool   // a failure: keep the logs for the user
	namesPort int
	nodes     []*child  // spawned nodes, in targets' order
	pprof     []string  // their profiling addresses, with --profile
	targets   []*target // the cluster's nodes
	floors    []*child
	floorA    *target // forwards to floorB and waits for its ack
	floorB    *target // answers at once
}

func (b *bench) say(format string, args ...any) {
	fmt.Fprintf(b.stderr, "appnode bench: "+format+"\n", args...)
}

func (b *bench) run(ctx context.Context) (*benchReport, error) {
	secret := make([]byte, 32)
	if _, err := cryptorand.Read(secret); err != nil {
		return nil, fmt.Errorf("make a cookie for the processes to start: %w", err)
	}
	text := base64.RawURLEncoding.EncodeToString(secret)
	var err error
	if b.private, err = cookie.New(text); err != nil {
		return nil, err
	}
	b.env = append(envWithout(os.Environ(), "APPNODE_PPROF", "APPNODE_STATE_DIR", "APPNODE_NAMES_PORT",
		cookie.EnvCookie, cookie.EnvCookieFile), cookie.EnvCookie+"="+text)
	b.cookie = b.private
	if b.cfg.spawn == 0 {
		if b.cookie, err = clientCookie(b.cfg.cookie); err != nil {
			return nil, err
		}
	}
	if b.cfg.spawn > 0 {
		if err := b.spawnCluster(ctx); err != nil {
			b.keepDir = b.dir != ""
			return nil, err
		}
	} else if err := b.dialCluster(ctx); err != nil {
		return nil, err
	}
	if b.cfg.floor {
		if err := b.startFloor(ctx); err != nil {
			return nil, err
		}
	}
	rep := b.newReport()
	if b.cfg.populate > 0 {
		return rep, b.runPopulate(ctx, rep)
	}
	return rep, b.runLoad(ctx, rep)
}

// close closes the connections, stops every process the bench started and
// removes its state dir.
func (b *bench) close() {
	for _, t := range append(slices.Clone(b.targets), b.floorA, b.floorB) {
		if t != nil && t.cl != nil {
			t.cl.Close()
		}
	}
	if procs := append(slices.Clone(b.nodes), b.floors...); len(procs) > 0 {
		start := time.Now()
		// The whole cluster goes, and its players were made up for the
		// run: a graceful leave would only hand them to nodes that are
		// leaving too. The nodes are killed (-9) at once; the floor
		// servers, which hold nothing, get SIGTERM.
		for _, c := range b.nodes {
			if err := c.kill9(); err != nil {
				b.say("%v", err)
			}
		}
		killed := stopAll(b.floors, stopGrace)
		b.say("stopped the %d processes it started in %v (the nodes with kill -9: the bench's players are not kept)", len(procs), time.Since(start).Round(time.Millisecond))
		if len(killed) > 0 {
			b.say("%s did not exit %v after SIGTERM, so were killed", strings.Join(killed, ", "), stopGrace)
		}
	}
	if b.dir != "" {
		if b.keepDir {
			b.say("the spawned nodes' logs are kept in %s", b.dir)
		} else {
			os.RemoveAll(b.dir)
		}
	}
}

// ---- the cluster ----

func (b *bench) clientName() string {
	return fmt.Sprintf("bench-%d@%s", os.Getpid(), node.ShortHostname())
}

// spawnCluster starts the nodes, connects them, and waits until each sees
// all the others.
func (b *bench) spawnCluster(ctx context.Context) error {
	started := time.Now()
	var err error
	if b.dir, err = os.MkdirTemp("", "appnode-bench-"); err != nil {
		return fmt.Errorf("create a state dir for the nodes: %w", err)
	}
	if b.namesPort, err = ports.Free(); err != nil {
		return err
	}
	host := node.ShortHostname()
	env := b.env
	fulls := make([]string, b.cfg.spawn)
	for i := range fulls {
		fulls[i] = fmt.Sprintf("bench%d@%s", i+1, host)
	}
	b.say("starting %d nodes (names port %d, state dir %s)", b.cfg.spawn, b.namesPort, b.dir)
	start := func(i int) (*child, error) {
		nodeEnv := env
		if b.cfg.profileDir != "" {
			port, err := ports.Free()
			if err != nil {
				return nil, err
			}
			b.pprof = append(b.pprof, fmt.Sprintf("127.0.0.1:%d", port))
			nodeEnv = append(slices.Clone(env), "APPNODE_PPROF="+b.pprof[i])
		}
		c, err := startChild(fulls[i], []string{"--bind", "127.0.0.1", "--names-port", strconv.Itoa(b.namesPort), "--state-dir", b.dir, fulls[i]}, nodeEnv)
		if err != nil {
			return nil, err
		}
		b.nodes = append(b.nodes, c)
		return c, nil
	}
	// The first node serves the name service; the others register with it.
	c, err := start(0)
	if err != nil {
		return err
	}
	entries := make([]names.Entry, b.cfg.spawn)
	if entries[0], err = b.waitRegistered(ctx, c); err != nil {
		return err
	}
	for i := 1; i < b.cfg.spawn; i++ {
		if _, err := start(i); err != nil {
			return err
		}
	}
	for i := 1; i < b.cfg.spawn; i++ {
		if entries[i], err = b.waitRegistered(ctx, b.nodes[i]); err != nil {
			return err
		}
	}
	for i, e := range entries {
		t, err := b.dial(ctx, fulls[i], net.JoinHostPort("127.0.0.1", strconv.Itoa(e.TransportPort)), b.cookie)
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	}
	for _, t := range b.targets[1:] {
		out, err := b.command(ctx, b.targets[0], "connect "+t.name)
		if err != nil {
			return err
		}
		if out != "true" {
			return fmt.Errorf("connect %s at %s answered %q, not true", t.name, b.targets[0].name, out)
		}
	}
	if err := b.waitFormed(ctx); err != nil {
		return err
	}
	b.say("cluster of %d formed in %v: %s", b.cfg.spawn, time.Since(started).Round(time.Millisecond), describePIDs(b.nodes))
	return nil
}

// waitRegistered waits until node c is in the name service, which it
// joins once its transport and membership listen.
func (b *bench) waitRegistered(ctx context.Context, c *child) (names.Entry, error) {
	ns := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.namesPort))
	deadline := time.Now().Add(nodeStartLimit)
	for {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		e, err := names.Lookup(lctx, ns, c.name)
		cancel()
		if err == nil {
			return e, nil
		}
		switch {
		case c.exited():
			return e, fmt.Errorf("node %s", c.describeExit())
		case ctx.Err() != nil:
			return e, ctx.Err()
		case time.Now().After(deadline):
			return e, fmt.Errorf("node %s (pid %d) did not register with the name service at %s within %v: %v; its last output:\n%s",
				c.name, c.pid(), ns, nodeStartLimit, err, indent(c.out.String()))
		}
		sleepCtx(ctx, 50*time.Millisecond) // poll interval
	}
}

// waitFormed waits until every node lists every other.
func (b *bench) waitFormed(ctx context.Context) error {
	deadline := time.Now().Add(formLimit)
	for {
		var missing string
		for _, t := range b.targets {
			out, err := b.command(ctx, t, "nodes")
			if err != nil {
				return err
			}
			seen := parseNodeList(out)
			for _, o := range b.targets {
				if o != t && !slices.Contains(seen, o.name) {
					missing = fmt.Sprintf("%s does not list %s yet (nodes: %s)", t.name, o.name, out)
				}
			}
		}
		switch {
		case missing == "":
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case time.Now().After(deadline):
			return fmt.Errorf("the cluster did not form within %v: %s", formLimit, missing)
		}
		sleepCtx(ctx, 100*time.Millisecond) // poll interval
	}
}

// parseNodeList reads the console's answer to `nodes`: ['a@h','b@h'].
func parseNodeList(out string) []string {
	out = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(out), "["), "]")
	var list []string
	for _, n := range strings.Split(out, ",") {
		if n = strings.Trim(strings.TrimSpace(n), "'"); n != "" {
			list = append(list, n)
		}
	}
	return list
}

// dialCluster connects to the nodes of a running cluster.
func (b *bench) dialCluster(ctx context.Context) error {
	for _, full := range b.cfg.nodes {
		_, host, _ := strings.Cut(full, "@")
		ip := host
		if host == node.ShortHostname() || host == "localhost" {
			ip = "127.0.0.1"
		}
		ns := net.JoinHostPort(ip, strconv.Itoa(b.cfg.namesPort))
		lctx, cancel := context.WithTimeout(ctx, dialLimit)
		e, err := names.Lookup(lctx, ns, full)
		cancel()
		if err != nil {
			return fmt.Errorf("find %s: %w (is it running, and is --names-port right?)", full, err)
		}
		t, err := b.dial(ctx, full, net.JoinHostPort(ip, strconv.Itoa(e.TransportPort)), b.cookie)
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	}
	b.say("connected to %d nodes", len(b.targets))
	return nil
}

func (b *bench) dial(ctx context.Context, name, addr string, c cookie.Cookie) (*target, error) {
	dctx, cancel := context.WithTimeout(ctx, dialLimit)
	defer cancel()
	cl, err := transport.DialClient(dctx, addr, b.clientName(), c)
	if err != nil {
		return nil, explainDial(name+" at "+addr, err)
	}
	return &target{name: name, cl: cl}, nil
}

// command runs one console line on t, as `appnode rpc` does.
func (b *bench) command(ctx context.Context, t *target, line string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, commandLimit)
	defer cancel()
	rep, err := t.cl.Call(cctx, &wire.Command{Line: line})
	if err != nil {
		return "", fmt.Errorf("%q at %s: %w", line, t.name, err)
	}
	cr, ok := rep.(*wire.CommandReply)
	if !ok {
		return "", fmt.Errorf("%q at %s: answered with %s", line, t.name, rep.Kind())
	}
	if cr.Failed {
		return "", fmt.Errorf("%q at %s failed: %s", line, t.name, cr.Output)
	}
	return cr.Output, nil
}

// startFloor starts the two floor servers and connects to both.
func (b *bench) startFloor(ctx context.Context) error {
	addrB, err := b.startFloorServer(ctx, "floor-b", nil, b.env)
	if err != nil {
		return err
	}
	addrA, err := b.startFloorServer(ctx, "floor-a", []string{"--peer", "floor-b=" + addrB}, b.env)
	if err != nil {
		return err
	}
	if b.floorA, err = b.dial(ctx, "floor-a", addrA, b.private); err != nil {
		return err
	}
	if b.floorB, err = b.dial(ctx, "floor-b", addrB, b.private); err != nil {
		return err
	}
	b.say("floor servers up: %s", describePIDs(b.floors))
	return nil
}

func (b *bench) startFloorServer(ctx context.Context, name string, extra, env []string) (string, error) {
	c, err := startChild(name, append([]string{"bench", "serve-floor", "--name", name}, extra...), env)
	if err != nil {
		return "", err
	}
	b.floors = append(b.floors, c)
	timer := time.NewTimer(nodeStartLimit)
	defer timer.Stop()
	select {
	case addr := <-c.out.first:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", fmt.Errorf("floor server %s printed %q instead of its address", name, addr)
		}
		return addr, nil
	case <-c.done:
		return "", fmt.Errorf("floor server %s", c.describeExit())
	case <-timer.C:
		return "", fmt.Errorf("floor server %s (pid %d) did not print its address within %v", name, c.pid(), nodeStartLimit)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// ---- the phases ----

// playerPrefix names the players. A spawned cluster is empty; on a running
// one, the bench must not touch anyone's real players.
func (b *bench) playerPrefix() string {
	if b.cfg.spawn > 0 {
		return "player"
	}
	return fmt.Sprintf("bench-%d-%x-player", os.Getpid(), time.Now().UnixNano()&0xffffff)
}

func (b *bench) progressOut() io.Writer {
	if b.cfg.progress {
		return b.stderr
	}
	return nil
}

// createPlayers gives every player its first reward, sending player i to
// target i mod N, which becomes its owner. It keeps inflight rewards going
// and records their latencies and how many attempts failed (and were
// retried).
func (b *bench) createPlayers(ctx context.Context, pt *playerTable, inflight int) (*histogram, int64, time.Duration, error) {
	var next, created, attemptsFailed atomic.Int64
	var mu sync.Mutex
	lat := &histogram{}
	var failed int64
	var lastErr error
	start := time.Now()
	stopProgress := func() {}
	if w := b.progressOut(); w != nil {
		stopProgress = ticker(w, func() string {
			return fmt.Sprintf("creating players %5.1fs  %d/%d", time.Since(start).Seconds(), created.Load(), len(pt.names))
		})
	}
	var wg sync.WaitGroup
	for w := range min(inflight, len(pt.names)) {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			var mine histogram
			defer func() {
				mu.Lock()
				lat.merge(&mine)
				mu.Unlock()
			}()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(pt.names) || ctx.Err() != nil {
					return
				}
				t := i % len(b.targets)
				req := &wire.Reward{Player: pt.names[i], Points: 1}
				began := time.Now()
				var err error
				for attempt := range 10 {
					cctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout)
					_, err = b.targets[t].cl.Call(cctx, req)
					cancel()
					if err == nil || ctx.Err() != nil {
						break
					}
					attemptsFailed.Add(1)
					if !sleepCtx(ctx, retryDelay(attempt, rng)) {
						break
					}
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					mu.Lock()
					failed++
					lastErr = fmt.Errorf("%s at %s: %w", req.Player, b.targets[t].name, err)
					mu.Unlock()
					continue
				}
				mine.record(time.Since(began))
				pt.owner[i].Store(int32(t))
				created.Add(1)
			}
		})
	}
	wg.Wait()
	stopProgress()
	took := time.Since(start)
	if ctx.Err() != nil {
		return nil, 0, took, ctx.Err()
	}
	if failed > 0 {
		return nil, 0, took, fmt.Errorf("%d of %d players could not be created (10 attempts each); last error: %v", failed, len(pt.names), lastErr)
	}
	return lat, attemptsFailed.Load(), took, nil
}

// checkOwners asks every player's believed owner whether it is, and
// corrects the beliefs that are wrong: a reward sent to a wrong owner is
// forwarded without error, so the bench would never learn otherwise.
func (b *bench) checkOwners(ctx context.Context, pt *playerTable) error {
	var next, wrong atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range min(64, len(pt.names)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(pt.names) || ctx.Err() != nil {
					return
				}
				o := pt.owner[i].Load()
				if o < 0 {
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout)
				rep, err := b.targets[o].cl.Call(cctx, &wire.Where{Player: pt.names[i]})
				cancel()
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, fmt.Errorf("where %s at %s: %w", pt.names[i], b.targets[o].name, err))
					mu.Unlock()
					return
				}
				if wr, ok := rep.(*wire.WhereReply); ok && wr.Role != wire.RolePrimary {
					wrong.Add(1)
					pt.owner[i].Store(int32(slices.IndexFunc(b.targets, func(t *target) bool { return t.name == wr.Owner.Name })))
				}
			}
		})
	}
	wg.Wait()
	if err := cmp.Or(ctx.Err(), firstErr); err != nil {
		return err
	}
	if n := wrong.Load(); n > 0 {
		b.say("%d of %d players were not owned by the node that created them (moved since? see the nodes' logs); the bench follows where they are", n, len(pt.names))
	}
	return nil
}

func (b *bench) runLoad(ctx context.Context, rep *benchReport) error {
	pt := newPlayerTable(b.playerPrefix(), b.cfg.players)
	b.say("creating %d players", b.cfg.players)
	if _, _, took, err := b.createPlayers(ctx, pt, max(b.cfg.clients, 64)); err != nil {
		return err
	} else {
		b.say("created %d players in %v", b.cfg.players, took.Round(time.Millisecond))
	}
	if err := b.checkOwners(ctx, pt); err != nil {
		return err
	}

	l := &load{
		label:       "appnode",
		targets:     b.targets,
		players:     pt,
		entry:       b.cfg.entry,
		clients:     b.cfg.clients,
		duration:    b.cfg.duration,
		callTimeout: b.cfg.callTimeout,
		progress:    b.progressOut(),
	}
	if b.cfg.killAfter > 0 {
		victim := len(b.nodes) - 1
		l.kill = &killPlan{after: b.cfg.killAfter, target: victim, do: b.nodes[victim].kill9}
	}
	b.say("load: %d clients, entry %s, %v", b.cfg.clients, b.cfg.entry, b.cfg.duration)
	stopProfiles := b.startProfiles(ctx)
	res := b.measure(ctx, l)
	if err := stopProfiles(); err != nil {
		b.say("%v", err)
	}
	rep.setLoad(res)
	if res.kill != nil && res.kill.err != nil {
		return fmt.Errorf("the kill did not happen as planned: %w", res.kill.err)
	}
	if res.interrupted || !b.cfg.floor {
		return nil
	}

	// The floor, with the same clients, players and duration: every request
	// goes to floor-a, which forwards it to floor-b.
	floorPlayers := newPlayerTable("player", b.cfg.players)
	for i := range floorPlayers.owner {
		floorPlayers.owner[i].Store(0)
	}
	fl := &load{
		label: "floor", targets: []*target{b.floorA}, players: floorPlayers, entry: entryAny,
		clients: b.cfg.clients, duration: b.cfg.duration, callTimeout: b.cfg.callTimeout, progress: b.progressOut(),
	}
	b.say("floor: %d clients, forward + ack, %v", b.cfg.clients, b.cfg.duration)
	floorRes := b.measure(ctx, fl)
	rep.setFloor(floorRes, nil)
	if floorRes.interrupted || b.cfg.entry == entryOwner {
		return nil
	}
	// One hop: floor-b answers at once. A forwarded reward pays one more.
	hop := &load{
		label: "one hop", targets: []*target{b.floorB}, players: floorPlayers, entry: entryAny,
		clients: b.cfg.clients, duration: b.cfg.duration, callTimeout: b.cfg.callTimeout, progress: b.progressOut(),
	}
	b.say("one hop: %d clients, direct answer, %v", b.cfg.clients, b.cfg.duration)
	hopRes := b.measure(ctx, hop)
	rep.setFloor(floorRes, hopRes)
	return nil
}

// measure runs a load phase and records the CPU each process used in it.
func (b *bench) measure(ctx context.Context, l *load) *phaseResult {
	procs := append(slices.Clone(b.nodes), b.floors...)
	before, start := sampleCPU(procs), time.Now()
	res := l.run(ctx)
	res.cpu = coresUsed(before, sampleCPU(procs), time.Since(start))
	return res
}

func (b *bench) runPopulate(ctx context.Context, rep *benchReport) error {
	b.say("reading the nodes' resident memory before (waiting up to %v for it to settle)", b.cfg.settle)
	before, err := b.settledRSS(ctx)
	if err != nil {
		return err
	}
	pt := newPlayerTable(b.playerPrefix(), b.cfg.populate)
	b.say("creating %d players, %d in flight", b.cfg.populate, populateFlight)
	lat, errs, took, err := b.createPlayers(ctx, pt, populateFlight)
	if err != nil {
		return err
	}
	b.say("created %d players in %v; reading memory after (waiting up to %v for it to settle)", b.cfg.populate, took.Round(time.Millisecond), b.cfg.settle)
	after, err := b.settledRSS(ctx)
	if err != nil {
		return err
	}
	if b.cfg.profileDir != "" {
		if err := b.saveHeapProfiles(ctx); err != nil {
			b.say("%v", err)
		}
	}
	rep.setPopulate(b.cfg.populate, took, lat, errs, b.nodes, before, after)
	return nil
}

// settledRSS reads every node's resident memory until it has not moved
// by more than 1% (or 256 KB) for 5 s, or settle has passed. The window
// is longer than a node takes to notice a burst is over and return its
// headroom to the OS (node.compactWhenIdle, 2-4 s): "at rest" means after
// that.
func (b *bench) settledRSS(ctx context.Context) ([]int64, error) {
	const every, window = 250 * time.Millisecond, 20
	deadline := time.Now().Add(b.cfg.settle)
	var samples [][]int64
	for {
		cur := make([]int64, len(b.nodes))
		for i, c := range b.nodes {
			if c.exited() {
				return nil, fmt.Errorf("node %s", c.describeExit())
			}
			v, err := rssBytes(c.pid())
			if err != nil {
				return nil, err
			}
			cur[i] = v
		}
		samples = append(samples, cur)
		if len(samples) > window {
			samples = samples[1:]
		}
		if len(samples) == window && steady(samples) || time.Now().After(deadline) {
			return cur, nil
		}
		if !sleepCtx(ctx, every) {
			return nil, ctx.Err()
		}
	}
}

func steady(samples [][]int64) bool {
	for i := range samples[0] {
		lo, hi := samples[0][i], samples[0][i]
		for _, s := range samples {
			lo, hi = min(lo, s[i]), max(hi, s[i])
		}
		if hi-lo > max(hi/100, 256<<10) {
			return false
		}
	}
	return true
}

// ---- profiles ----

// startProfiles fetches a CPU profile from every spawned node while the
// load runs; the returned function waits for them and saves them.
func (b *bench) startProfiles(ctx context.Context) (wait func() error) {
	if b.cfg.profileDir == "" {
		return func() error { return nil }
	}
	if err := os.MkdirAll(b.cfg.profileDir, 0o755); err != nil {
		return func() error { return fmt.Errorf("profiles: %w", err) }
	}
	secs := max(1, int(b.cfg.duration/time.Second))
	errs := make([]error, len(b.nodes))
	var wg sync.WaitGroup
	for i := range b.nodes {
		wg.Go(func() {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.pprof[i], secs)
			errs[i] = fetchTo(ctx, url, filepath.Join(b.cfg.profileDir, nodeFile(b.targets[i].name)+".cpu.pprof"), time.Duration(secs+15)*time.Second)
		})
	}
	return func() error {
		wg.Wait()
		if err := b.saveHeapProfiles(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("profiles: %w", err)
		}
		b.say("CPU and heap profiles of each node saved in %s (go tool pprof -top %s)", b.cfg.profileDir, filepath.Join(b.cfg.profileDir, "*.cpu.pprof"))
		return nil
	}
}

func (b *bench) saveHeapProfiles(ctx context.Context) error {
	if err := os.MkdirAll(b.cfg.profileDir, 0o755); err != nil {
		return fmt.Errorf("profiles: %w", err)
	}
	var errs []error
	for i := range b.nodes {
		if b.nodes[i].exited() {
			continue
		}
		url := fmt.Sprintf("http://%s/debug/pprof/heap", b.pprof[i])
		errs = append(errs, fetchTo(ctx, url, filepath.Join(b.cfg.profileDir, nodeFile(b.targets[i].name)+".heap.pprof"), 30*time.Second))
	}
	return errors.Join(errs...)
}

func nodeFile(name string) string { return strings.ReplaceAll(name, "@", "_") }

func fetchTo(ctx context.Context, url, path string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	return f.Close()
}

// ---- small helpers ----

func describePIDs(cs []*child) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%s (pid %d)", c.name, c.pid())
	}
	return strings.Join(parts, ", ")
}

func envWithout(env []string, keys ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(keys, k) {
			out = append(out, kv)
		}
	}
	return out
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

func machineInfo() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}
