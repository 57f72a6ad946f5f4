// Package bench is `appnode bench`: it measures a cluster as its users
// see it. It spawns nodes of the running binary (or targets running ones),
// drives rewards from many clients through package client, and compares
// every figure with the floor, the bare cost of this project's own
// transport doing forward-and-ack, measured in the same run. See
// benchUsage for what it does and the flags.
//
// It must run inside the appnode binary (Main is its `bench`
// sub-command): it starts its nodes and floor servers as processes of the
// binary that runs it.
package bench

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/appnode/appnode/client"
	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/internal/procs"
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
transport), and prints every figure as a ratio to it; then the same
against the bare wire: two processes that do the same forward and ack
over plain msgpack on TCP (one connection, a read loop, a write per frame;
as ../shared/peers' mpbench), which shows what appnode's transport costs.
With three or more spawned nodes, last the bare mesh: as many bare
servers as nodes, each client request sent as --entry says (to its
player's owner, or to any server, which passes it to the owner and the
answer back), the owner forwarding it to the one of the others the player
hashes to, as a node replicates to a player's keeper. It carries the same
load over the same links as the cluster, so it shows what appnode costs
over the bare wire in the cluster's own shape.

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
	owners      int // create the players at the first owners targets only; 0: all
	duration    time.Duration
	entry       entryMode
	floor       bool
	http        bool // rewards through the nodes' HTTP front doors
	killAfter   time.Duration
	populate    int
	settle      time.Duration
	callTimeout time.Duration
	json        bool
	progress    bool
	profileDir  string
	cookie      string // with --nodes; "" resolves it as `appnode rpc` does
	args        []string
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && readline.IsTerminal(int(f.Fd()))
}

func parseBenchFlags(args []string, stderr io.Writer) (benchConfig, error) {
	c := benchConfig{args: args}
	fs := flag.NewFlagSet("appnode bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	nodes := fs.String("nodes", "", "comma-separated NAME@HOST of a running cluster's nodes to send requests to")
	entry := fs.String("entry", "any", "where each reward goes: owner (the player's owner), other (a node that must forward) or any (a random node)")
	fs.IntVar(&c.spawn, "spawn", 0, "start this many nodes (2 or more) of this binary on 127.0.0.1, with a private name service port and state dir")
	fs.IntVar(&c.namesPort, "names-port", client.DefaultNamesPort(), "with --nodes: port of the name service of the nodes' host (env "+client.EnvNamesPort+")")
	fs.IntVar(&c.clients, "clients", 64, "concurrent clients, each with one reward in flight")
	fs.IntVar(&c.players, "players", 10000, "players the rewards are spread over, created before the clock starts")
	fs.IntVar(&c.owners, "owners", 0, "create the players at the first N nodes only (0: spread over all); --spawn 2 --owners 1 --entry owner is the bare wire's own shape: client -> the first node -> its keeper")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "length of each measured phase")
	fs.BoolVar(&c.http, "http", false, "send the load's rewards to the nodes' HTTP front doors (POST /players/ID/reward), as a game server would, instead of over appnode's own client protocol")
	fs.BoolVar(&c.floor, "floor", false, "also measure the floor (forward + ack over appnode's transport) with the same clients, and print ratios to it")
	fs.DurationVar(&c.killAfter, "kill-after", 0, "with --spawn: kill -9 the last spawned node this long into the load, and report stalls and recovery")
	fs.IntVar(&c.populate, "populate", 0, "with --spawn: instead of the load, create this many players and report resident memory per node and bytes per player copy")
	fs.DurationVar(&c.settle, "settle", 10*time.Second, "with --populate: how long to wait at most for each node's memory to stop changing before reading it")
	fs.DurationVar(&c.callTimeout, "call-timeout", 10*time.Second, "deadline of each request; a reward that misses it is retried")
	fs.BoolVar(&c.json, "json", false, "print one JSON object instead of the tables")
	fs.BoolVar(&c.progress, "progress", isTerminal(stderr), "show a live progress line on stderr (default: when stderr is a terminal)")
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
				c.nodes = append(c.nodes, client.FullName(n))
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
	case c.owners < 0 || c.owners > n:
		return c, fmt.Errorf("--owners must be between 0 (all nodes) and the %d nodes given", n)
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

// Main is `appnode bench ARGS`: it runs the bench, prints the report on
// stdout and notes on stderr, and returns the exit status (0 done, 1
// failed, 2 bad flags, 130 interrupted). Its hidden sub-commands
// `serve-floor` and `serve-bare` are a floor server and a bare wire server.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "serve-floor" {
		return serveFloor(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "serve-bare" {
		return serveBare(args[1:], stdout, stderr)
	}
	cfg, err := parseBenchFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "appnode bench: %v\n", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go func() {
		// After the first signal, a second one ends the bench at once;
		// its children then exit when their stdin closes. Ends with ctx.
		<-ctx.Done()
		stop()
	}()

	b := &bench{cfg: cfg, stderr: stderr}
	rep, err := b.run(ctx)
	b.close()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "appnode bench: interrupted; every process it started was stopped")
			return 130
		}
		fmt.Fprintf(stderr, "appnode bench: %v\n", err)
		return 1
	}
	if cfg.json {
		err = writeJSON(stdout, rep)
	} else {
		err = printReport(stdout, rep)
	}
	if err != nil {
		fmt.Fprintf(stderr, "appnode bench: writing the report: %v\n", err)
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
	cookie  cookie.Cookie // of the cluster measured; zero: as `appnode rpc` finds it
	exe     string        // this binary, which the bench's processes run

	httpClient *http.Client // with --http: the clients' keep-alive connections to the front doors

	dir       string // spawned nodes' state dir
	keepDir   bool   // a failure: keep the logs for the user
	namesPort int
	nodes     []*procs.Proc // spawned nodes, in targets' order
	pprof     []string      // their profiling addresses, with --profile
	targets   []*target     // the cluster's nodes
	floors    []*procs.Proc
	floorA    *target   // forwards to floorB and waits for its ack
	floorB    *target   // answers at once
	bareA     *target   // the bare wire: forwards to bare-b, as floorA does
	mesh      []*target // the bare mesh, as many servers as nodes
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
		b.cookie = cookie.Cookie{}
		if b.cfg.cookie != "" {
			if b.cookie, _, err = cookie.Resolve(b.cfg.cookie, os.Getenv, false); err != nil {
				return nil, err
			}
		}
	}
	if b.exe, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("find this program's binary to spawn processes of it: %w", err)
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
	for _, t := range append([]*target{b.bareA}, b.mesh...) {
		if t != nil {
			t.bare.Close()
		}
	}
	if started := append(slices.Clone(b.nodes), b.floors...); len(started) > 0 {
		start := time.Now()
		// The whole cluster goes, and its players were made up for the
		// run: a graceful leave would only hand them to nodes that are
		// leaving too. The nodes are killed (-9) at once; the floor
		// servers, which hold nothing, get SIGTERM.
		for _, c := range b.nodes {
			if _, err := c.Kill9(); err != nil {
				b.say("%v", err)
			}
		}
		killed := procs.StopAll(b.floors, stopGrace)
		b.say("stopped the %d processes it started in %v (the nodes with kill -9: the bench's players are not kept)", len(started), time.Since(start).Round(time.Millisecond))
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
