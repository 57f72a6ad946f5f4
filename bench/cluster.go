package bench

// The cluster the bench measures, and its floor servers: spawned as
// processes of this binary, or dialled by name.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/appnode/appnode/client"
	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/internal/ports"
	"github.com/appnode/appnode/internal/procs"
	"github.com/appnode/appnode/names"
)

// keepLines is how much of a spawned process's output is kept, to be
// shown if it dies.
const keepLines = 40

func (b *bench) clientConfig(c cookie.Cookie, namesPort int) client.Config {
	return client.Config{
		NamesPort:   namesPort,
		Cookie:      c,
		Self:        client.FullName(fmt.Sprintf("bench-%d", os.Getpid())),
		DialTimeout: dialLimit,
		CallTimeout: b.cfg.callTimeout,
	}
}

// startProc starts a process of this binary: a node or a floor server.
// Each runs in its own process group (a Ctrl-C at the terminal reaches
// only the bench, which then stops them in order) with its stdin on a pipe
// from the bench: if the bench dies without cleaning up, even by kill -9,
// the pipe closes and the child exits on its own.
func (b *bench) startProc(name string, args, env []string) (*procs.Proc, error) {
	return procs.Start(procs.Config{Name: name, Path: b.exe, Args: args, Env: env, OwnGroup: true, KeepLines: keepLines})
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
	fulls := make([]string, b.cfg.spawn)
	for i := range fulls {
		fulls[i] = client.FullName(fmt.Sprintf("bench%d", i+1))
	}
	b.say("starting %d nodes (names port %d, state dir %s)", b.cfg.spawn, b.namesPort, b.dir)
	// The first node serves the name service; the others register with it.
	if err := b.startNode(fulls[0]); err != nil {
		return err
	}
	first, err := b.waitRegistered(ctx, b.nodes[0])
	if err != nil {
		return err
	}
	b.targets = append(b.targets, first)
	for _, full := range fulls[1:] {
		if err := b.startNode(full); err != nil {
			return err
		}
	}
	for _, p := range b.nodes[1:] {
		t, err := b.waitRegistered(ctx, p)
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

// startNode starts node full on 127.0.0.1 (with --profile, with its
// profiling endpoint on).
func (b *bench) startNode(full string) error {
	env := b.env
	if b.cfg.profileDir != "" {
		port, err := ports.Free()
		if err != nil {
			return err
		}
		b.pprof = append(b.pprof, fmt.Sprintf("127.0.0.1:%d", port))
		env = append(slices.Clone(b.env), "APPNODE_PPROF="+b.pprof[len(b.pprof)-1])
	}
	p, err := b.startProc(full, []string{"--bind", "127.0.0.1", "--names-port", strconv.Itoa(b.namesPort), "--state-dir", b.dir, full}, env)
	if err != nil {
		return err
	}
	b.nodes = append(b.nodes, p)
	return nil
}

// waitRegistered waits until node p is in the name service, which it
// joins once its transport and membership listen, and connects to it.
func (b *bench) waitRegistered(ctx context.Context, p *procs.Proc) (*target, error) {
	cfg := b.clientConfig(b.cookie, b.namesPort)
	cfg.DialTimeout = time.Second
	deadline := time.Now().Add(nodeStartLimit)
	for {
		cl, err := client.Dial(ctx, p.Name(), cfg)
		if err == nil {
			return &target{name: p.Name(), cl: cl}, nil
		}
		switch {
		case p.Exited():
			return nil, fmt.Errorf("node %s", p.DescribeExit())
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case !errors.Is(err, names.ErrNotFound) && !errors.Is(err, names.ErrNoService):
			return nil, err // found, but it would not take the connection
		case time.Now().After(deadline):
			return nil, fmt.Errorf("node %s (pid %d) did not register with the name service on port %d within %v: %v; its last output:\n%s",
				p.Name(), p.PID(), b.namesPort, nodeStartLimit, err, procs.Indent(strings.Join(p.Lines(), "\n")))
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
		cl, err := client.Dial(ctx, full, b.clientConfig(b.cookie, b.cfg.namesPort))
		if err != nil {
			return err
		}
		b.targets = append(b.targets, &target{name: full, cl: cl})
	}
	b.say("connected to %d nodes", len(b.targets))
	return nil
}

// command runs one console line on t, as `appnode rpc` does.
func (b *bench) command(ctx context.Context, t *target, line string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, commandLimit)
	defer cancel()
	rep, err := t.cl.Command(cctx, line)
	if err != nil {
		return "", err
	}
	if rep.Failed {
		return "", fmt.Errorf("%q at %s failed: %s", line, t.name, rep.Output)
	}
	return rep.Output, nil
}

// startFloor starts the two floor servers and connects to both.
func (b *bench) startFloor(ctx context.Context) error {
	addrB, err := b.startFloorServer(ctx, "floor-b", []string{"bench", "serve-floor", "--name", "floor-b"})
	if err != nil {
		return err
	}
	addrA, err := b.startFloorServer(ctx, "floor-a", []string{"bench", "serve-floor", "--name", "floor-a", "--peer", "floor-b=" + addrB})
	if err != nil {
		return err
	}
	cfg := b.clientConfig(b.private, 0)
	clA, err := client.DialAddr(ctx, "floor-a", addrA, cfg)
	if err != nil {
		return err
	}
	b.floorA = &target{name: "floor-a", cl: clA}
	clB, err := client.DialAddr(ctx, "floor-b", addrB, cfg)
	if err != nil {
		return err
	}
	b.floorB = &target{name: "floor-b", cl: clB}

	bareB, err := b.startFloorServer(ctx, "bare-b", []string{"bench", "serve-bare"})
	if err != nil {
		return err
	}
	bareA, err := b.startFloorServer(ctx, "bare-a", []string{"bench", "serve-bare", "--backup", bareB})
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, dialLimit)
	defer cancel()
	bc, err := dialBare(dctx, bareA, b.cfg.clients == 1)
	if err != nil {
		return fmt.Errorf("connect to the bare wire's bare-a: %w", err)
	}
	b.bareA = &target{name: "bare-a", bare: bc}
	if len(b.nodes) >= 3 {
		if err := b.startMesh(ctx, len(b.nodes)); err != nil {
			return err
		}
	}
	which := "the transport's and the bare wire's"
	if len(b.mesh) > 0 {
		which = "the transport's, the bare wire's and the bare mesh's"
	}
	b.say("floor servers up (%s): %s", which, describePIDs(b.floors))
	return nil
}

// startMesh starts the bare mesh, size servers that forward to each other
// (bare.go), and connects to each.
func (b *bench) startMesh(ctx context.Context, size int) error {
	addrs := make([]string, size)
	for i := range addrs {
		port, err := ports.Free()
		if err != nil {
			return fmt.Errorf("a port for the bare mesh: %w", err)
		}
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", port)
	}
	dctx, cancel := context.WithTimeout(ctx, dialLimit)
	defer cancel()
	for i, addr := range addrs {
		others := append(slices.Clone(addrs[:i]), addrs[i+1:]...)
		name := fmt.Sprintf("mesh-%d", i+1)
		args := []string{"bench", "serve-bare", "--listen", addr, "--backup", strings.Join(others, ","),
			"--owners", strings.Join(addrs, ","), "--self", strconv.Itoa(i)}
		if _, err := b.startFloorServer(ctx, name, args); err != nil {
			return err
		}
		bc, err := dialBare(dctx, addr, b.cfg.clients == 1)
		if err != nil {
			return fmt.Errorf("connect to the bare mesh's %s: %w", name, err)
		}
		b.mesh = append(b.mesh, &target{name: name, bare: bc})
	}
	return nil
}

// startFloorServer starts one floor or bare wire server (args: its
// command line) and returns the address it prints.
func (b *bench) startFloorServer(ctx context.Context, name string, args []string) (string, error) {
	p, err := b.startProc(name, args, b.env)
	if err != nil {
		return "", err
	}
	b.floors = append(b.floors, p)
	timer := time.NewTimer(nodeStartLimit)
	defer timer.Stop()
	select {
	case addr := <-p.FirstLine():
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", fmt.Errorf("floor server %s printed %q instead of its address", name, addr)
		}
		return addr, nil
	case <-p.Done():
		return "", fmt.Errorf("floor server %s", p.DescribeExit())
	case <-timer.C:
		return "", fmt.Errorf("floor server %s (pid %d) did not print its address within %v", name, p.PID(), nodeStartLimit)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func describePIDs(ps []*procs.Proc) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%s (pid %d)", p.Name(), p.PID())
	}
	return strings.Join(parts, ", ")
}
