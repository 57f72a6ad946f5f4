// Command appnode runs one node of an appnode cluster with its console,
// or talks to a running node (rpc).
//
//	appnode [flags] NAME             run node NAME@<short host name>
//	appnode rpc NAME@HOST COMMAND... run one console command on a running node
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/appnode/appnode/membership"
	"github.com/appnode/appnode/names"
	"github.com/appnode/appnode/node"
	"github.com/appnode/appnode/shell"
	"github.com/appnode/appnode/transport"
	"github.com/appnode/appnode/wire"
	"github.com/chzyer/readline"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "rpc":
			os.Exit(rpc(os.Args[2:]))
		case "bench":
			os.Exit(runBench(os.Args[2:]))
		case "names-serve":
			os.Exit(namesServe(os.Args[2:]))
		}
	}
	os.Exit(run(os.Args[1:]))
}

func usage(fs *flag.FlagSet) func() {
	return func() {
		fmt.Fprintf(fs.Output(), `usage:
  appnode [flags] NAME              run node NAME@<host> with its console
  appnode rpc NAME@HOST COMMAND...  run one console command on a running node

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

func defaultNamesPort() int {
	if v := os.Getenv("APPNODE_NAMES_PORT"); v != "" {
		if p, err := strconv.Atoi(v); err == nil {
			return p
		}
	}
	return names.DefaultPort
}

func run(args []string) int {
	fs := flag.NewFlagSet("appnode", flag.ContinueOnError)
	fs.Usage = usage(fs)
	bind := fs.String("bind", "127.0.0.1", "address to listen on and advertise; another host's nodes can reach this one only on an address they can route to")
	namesPort := fs.Int("names-port", defaultNamesPort(), "port of this host's name service (env APPNODE_NAMES_PORT)")
	stateDir := fs.String("state-dir", defaultStateDir(), "where console history, logs and each name's ports are kept (env APPNODE_STATE_DIR)")
	profile := fs.String("profile", "local", "failure detection timers: local (a kill -9 is noticed in about 1-2 s) or lan (memberlist's LAN defaults)")
	gossipPort := fs.Int("gossip-port", 0, "gossip port (0: the one this name used last time, else any free one)")
	transportPort := fs.Int("transport-port", 0, "node-to-node transport port (0: as for --gossip-port)")
	cookieFlag := fs.String("cookie", "", cookieUsage)
	httpFl := addHTTPFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	prof := membership.ProfileLocal
	switch *profile {
	case "local":
	case "lan":
		prof = membership.ProfileLAN
	default:
		fmt.Fprintf(os.Stderr, "appnode: --profile must be local or lan, not %q\n", *profile)
		return 2
	}
	full := node.FullName(fs.Arg(0))
	if err := node.ValidateName(full); err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
		return 2
	}

	logf, closeLog := openLog(*stateDir, full)
	defer closeLog()
	secret, err := nodeCookie(*cookieFlag, logf)
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

	door, err := listenHTTP(httpFl, full, *stateDir, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
		return 1
	}
	defer door.close()
	cluster := &lateCluster{}
	startCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	n, err := node.Start(startCtx, node.Config{
		Name:          full,
		Cookie:        secret,
		BindAddr:      *bind,
		GossipPort:    *gossipPort,
		TransportPort: *transportPort,
		NamesPort:     *namesPort,
		SpawnNames:    spawnNames(*bind, *namesPort),
		StateDir:      *stateDir,
		Profile:       prof,
		Logf:          logf,
		OwnsProcess:   true,
		HTTPPort:      door.port, HTTPURL: door.url, Observer: door.metrics,
		Command: func(ctx context.Context, line string) (string, error) {
			out, quit, err := shell.Eval(ctx, cluster, line)
			if quit {
				stop() // the console ends and the node leaves gracefully
			}
			return out, err
		},
	})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
		return 1
	}
	cluster.Cluster = n
	if err := door.serve(n, stop); err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
	}

	interactive := readline.IsTerminal(int(os.Stdin.Fd()))
	if interactive {
		fmt.Printf("appnode %s (gossip %s:%d, transport %s:%d, %s) - type help for commands, q to leave\n\n",
			n.Name(), *bind, n.GossipPort(), *bind, n.TransportPort(), door.banner())
	}

	history := ""
	if *stateDir != "" {
		history = filepath.Join(*stateDir, "history")
	}
	runErr := shell.Run(ctx, shell.Config{
		Cluster:     n,
		Events:      n.Events(),
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		Interactive: interactive,
		HistoryFile: history,
	})
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		logf("console: %v", runErr)
	}

	leaveCtx, cancelLeave := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelLeave()
	if err := n.Leave(leaveCtx); err != nil {
		fmt.Fprintf(os.Stderr, "appnode: %v\n", err)
		return 1
	}
	return 0
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

// rpc runs one console command on a running node, as erl_call does, and
// exits non-zero if it failed.
func rpc(args []string) int {
	fs := flag.NewFlagSet("appnode rpc", flag.ContinueOnError)
	namesPort := fs.Int("names-port", defaultNamesPort(), "port of the target host's name service (env APPNODE_NAMES_PORT)")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the answer")
	cookieFlag := fs.String("cookie", "", cookieUsage)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: appnode rpc [flags] NAME@HOST COMMAND...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 2 {
		fs.Usage()
		return 2
	}
	target := node.FullName(fs.Arg(0))
	line := strings.Join(fs.Args()[1:], " ")
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	out, failed, err := rpcCall(ctx, target, *namesPort, line, *cookieFlag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "appnode rpc: %v\n", err)
		return 1
	}
	w := io.Writer(os.Stdout)
	if failed {
		w = os.Stderr
	}
	fmt.Fprintln(w, out)
	if failed {
		return 1
	}
	return 0
}

func rpcCall(ctx context.Context, target string, namesPort int, line, cookieFlag string) (string, bool, error) {
	_, host, _ := strings.Cut(target, "@")
	ip := host
	if host == node.ShortHostname() || host == "localhost" {
		ip = "127.0.0.1"
	}
	e, err := names.Lookup(ctx, fmt.Sprintf("%s:%d", ip, namesPort), target)
	if err != nil {
		return "", false, err
	}
	// After the lookup: with no node running, that is the news, not the
	// cookie file a first node would have created.
	secret, err := clientCookie(cookieFlag)
	if err != nil {
		return "", false, err
	}
	c, err := transport.DialClient(ctx, fmt.Sprintf("%s:%d", ip, e.TransportPort), fmt.Sprintf("rpc-%d@%s", os.Getpid(), node.ShortHostname()), secret)
	if err != nil {
		return "", false, explainDial(target, err)
	}
	defer c.Close()
	rep, err := c.Call(ctx, &wire.Command{Line: line})
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", target, err)
	}
	cr, ok := rep.(*wire.CommandReply)
	if !ok {
		return "", false, fmt.Errorf("%s answered with %s", target, rep.Kind())
	}
	return cr.Output, cr.Failed, nil
}
