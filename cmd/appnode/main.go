// Command appnode runs one node of an appnode cluster with its console,
// or talks to a running node (rpc).
//
//	appnode [flags] NAME             run node NAME@<short host name>
//	appnode rpc NAME@HOST COMMAND... run one console command on a running node
//	appnode bench [flags]            measure a cluster (package bench)
//
// It only parses flags and wires the packages together: the node is
// package node, its console package shell, the client of `appnode rpc`
// package client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/appnode/appnode/bench"
	"github.com/appnode/appnode/client"
	"github.com/appnode/appnode/front"
	"github.com/appnode/appnode/membership"
	"github.com/appnode/appnode/names"
	"github.com/appnode/appnode/node"
	"github.com/appnode/appnode/shell"
	"github.com/chzyer/readline"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "rpc":
			os.Exit(rpc(os.Args[2:]))
		case "bench":
			// The load generator too, and the servers it spawns (nodes,
			// the floor and the bare wire) inherit the setting.
			keepSysmonAwake()
			os.Exit(bench.Main(os.Args[2:], os.Stdout, os.Stderr))
		case "names-serve":
			os.Exit(namesServe(os.Args[2:]))
		}
	}
	keepSysmonAwake()
	os.Exit(run(os.Args[1:]))
}

func usage(fs *flag.FlagSet) func() {
	return func() {
		fmt.Fprintf(fs.Output(), `usage:
  appnode [flags] NAME              run node NAME@<host> with its console
  appnode rpc NAME@HOST COMMAND...  run one console command on a running node
  appnode bench --spawn N [flags]   measure a cluster (appnode bench -h)

flags:
`)
		fs.PrintDefaults()
	}
}

func defaultStateDir() string {
	if d := os.Getenv("APPNODE_STATE_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".appnode")
}

// nodeFlags is what `appnode [flags] NAME` was told.
type nodeFlags struct {
	full, bind, stateDir, cookie     string
	namesPort, gossipPort, transport int
	profile                          membership.Profile
	http                             *front.DoorFlags
}

// parseNodeFlags reads the node's flags; ok is false when it printed why
// they are wrong.
func parseNodeFlags(args []string) (f nodeFlags, ok bool) {
	fs := flag.NewFlagSet("appnode", flag.ContinueOnError)
	fs.Usage = usage(fs)
	fs.StringVar(&f.bind, "bind", "127.0.0.1", "address to listen on and advertise; another host's nodes can reach this one only on an address they can route to")
	fs.IntVar(&f.namesPort, "names-port", client.DefaultNamesPort(), "port of this host's name service (env "+client.EnvNamesPort+")")
	fs.StringVar(&f.stateDir, "state-dir", defaultStateDir(), "where console history, logs and each name's ports are kept (env APPNODE_STATE_DIR)")
	profile := fs.String("profile", "local", "failure detection timers: local (a kill -9 is noticed in about 1-2 s) or lan (memberlist's LAN defaults)")
	fs.IntVar(&f.gossipPort, "gossip-port", 0, "gossip port (0: the one this name used last time, else any free one)")
	fs.IntVar(&f.transport, "transport-port", 0, "node-to-node transport port (0: as for --gossip-port)")
	fs.StringVar(&f.cookie, "cookie", "", cookieUsage)
	f.http = front.AddDoorFlags(fs)
	if err := fs.Parse(args); err != nil {
		return f, false
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return f, false
	}
	switch *profile {
	case "local":
		f.profile = membership.ProfileLocal
	case "lan":
		f.profile = membership.ProfileLAN
	default:
		fmt.Fprintf(os.Stderr, "appnode: --profile must be local or lan, not %q\n", *profile)
		return f, false
	}
	f.full = client.FullName(fs.Arg(0))
	if err := names.ValidateName(f.full); err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
		return f, false
	}
	return f, true
}

// run is a node: it starts, serves its console until told to quit, and
// leaves gracefully.
func run(args []string) int {
	f, ok := parseNodeFlags(args)
	if !ok {
		return 2
	}
	logf, closeLog := openLog(f.stateDir, f.full)
	defer closeLog()
	secret, err := nodeCookie(f.cookie, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
		return 1
	}
	defer startPprof(logf)() // only with APPNODE_PPROF=127.0.0.1:PORT

	// SIGTERM, SIGHUP (and SIGINT when not at a terminal, where readline
	// takes Ctrl-C as a key) end the console and exit gracefully, as does
	// `appnode rpc NODE q`.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	defer stop()

	door, err := front.ListenDoor(f.http, f.full, f.stateDir, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
		return 1
	}
	defer door.Close()
	cluster := &lateCluster{}
	startCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	cfg := node.DefaultConfig(f.full, secret)
	cfg.BindAddr = f.bind
	cfg.GossipPort, cfg.TransportPort = f.gossipPort, f.transport
	cfg.NamesPort = f.namesPort
	cfg.SpawnNames = spawnNames(f.bind, f.namesPort)
	cfg.StateDir = f.stateDir
	cfg.Profile = f.profile
	cfg.Logf = logf
	cfg.OwnsProcess = true
	cfg.HTTPPort, cfg.HTTPURL, cfg.Observer = door.Port(), door.URL(), door.Metrics()
	cfg.Command = func(ctx context.Context, line string) (string, error) {
		out, quit, err := shell.Eval(ctx, cluster, line)
		if quit {
			stop() // the console ends and the node leaves gracefully
		}
		return out, err
	}
	n, err := node.Start(startCtx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
		return 1
	}
	cluster.Cluster = n
	if err := door.Serve(n, stop); err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
	}
	console(ctx, n, f, door.Banner(), logf)

	leaveCtx, cancelLeave := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelLeave()
	if err := n.Leave(leaveCtx); err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
		return 1
	}
	return 0
}

// console runs the node's console on this process's terminal, or in
// scripted mode when stdin is not one, until ctx ends or input does.
func console(ctx context.Context, n *node.Node, f nodeFlags, front string, logf func(string, ...any)) {
	interactive := readline.IsTerminal(int(os.Stdin.Fd()))
	if interactive {
		fmt.Printf("appnode %s (gossip %s:%d, transport %s:%d, %s) - type help for commands, q to leave\n\n",
			n.Name(), f.bind, n.GossipPort(), f.bind, n.TransportPort(), front)
	}
	history := ""
	if f.stateDir != "" {
		history = filepath.Join(f.stateDir, "history")
	}
	err := shell.Run(ctx, shell.Config{
		Cluster:     n,
		Events:      n.Events(),
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		Interactive: interactive,
		HistoryFile: history,
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		logf("console: %v", err)
	}
}

// lateCluster lets the rpc command handler exist before the node does.
type lateCluster struct{ shell.Cluster }

func openLog(dir, name string) (func(string, ...any), func()) {
	if dir == "" {
		return func(string, ...any) {}, func() {}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return func(string, ...any) {}, func() {}
	}
	f, err := os.OpenFile(filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return func(string, ...any) {}, func() {}
	}
	l := log.New(f, "", log.LstdFlags|log.Lmicroseconds)
	return func(format string, args ...any) { l.Printf(format, args...) }, func() { f.Close() }
}
