// Package shell is appnode's console: a line editor that feels like the
// Erlang shell, with its prompt `(app_node1@host)1> `, its answers printed as
// Erlang terms, and reports from the rest of the node printed between
// prompts. It reaches the node only through the Cluster interface.
package shell

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/appnode/appnode/replica"
)

// Cluster is what the console needs from the node it runs on. Its methods
// may be called from more than one goroutine: tab completion asks for
// Nodes and LocalPlayers while a line is being typed.
type Cluster interface {
	// Name is this node's name, such as "app_node1@host".
	Name() string
	// Connect joins the cluster of target, given as "app_node2@host" or
	// "host:port".
	Connect(ctx context.Context, target string) error
	// Reward adds points, as typed, to player's total and returns the new
	// total. The node parses points: a non-integer crashes the primary
	// deliberately and comes back as an error with wire.CodeCrashed.
	Reward(ctx context.Context, player, points string) (int64, error)
	// LocalPlayers lists the players whose primary runs on this node, sorted.
	LocalPlayers() []string
	// Nodes lists the other live members, sorted.
	Nodes() []string
	// Where names the nodes holding player's primary (owner) and backup
	// (keeper). An empty owner means the player is unknown.
	Where(ctx context.Context, player string) (owner, keeper string, err error)
}

// Config is what Run needs.
type Config struct {
	Cluster Cluster
	// Events are printed as they arrive, as Erlang prints reports. May be nil.
	Events <-chan replica.Event
	// Stdin is where commands come from. Run owns it and closes it before
	// returning.
	Stdin  io.ReadCloser
	Stdout io.Writer
	Stderr io.Writer
	// Interactive says Stdin is a terminal: Run then edits lines with
	// readline and shows a prompt. Otherwise Run reads one command per line
	// and prints one answer per line, with no prompt (scripted mode).
	Interactive bool
	// HistoryFile keeps the lines typed across runs; "" keeps none.
	HistoryFile string
	// Timeout bounds each command; 10 s if zero.
	Timeout time.Duration
}

const defaultTimeout = 10 * time.Second

// Run reads and runs commands until q/quit/q()./Ctrl-D, the end of Stdin, or
// ctx is done. It returns nil on a normal quit; the caller then leaves the
// cluster gracefully. When ctx is done it returns ctx.Err() without running
// the line being typed.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	s := &session{cfg: cfg, peers: map[string]bool{}, players: map[string]bool{}}
	defer cfg.Stdin.Close()

	// A pending Read must end when ctx is done; closing in does that.
	in, reopened := interruptible(cfg.Stdin)
	if reopened {
		defer in.Close()
	}
	stopInterrupt := context.AfterFunc(ctx, func() { in.Close() })
	defer stopInterrupt()

	if cfg.Interactive {
		return s.interactive(ctx, in)
	}
	return s.scripted(ctx, in)
}

// A session is one run of the console. Besides the configuration it
// remembers the nodes connected to and the players rewarded, for tab
// completion.
type session struct {
	cfg Config

	mu      sync.Mutex      // guards the contents of peers and players: the completer reads them while a line is typed
	peers   map[string]bool // nodes connected to
	players map[string]bool // players rewarded
}

// eval runs one line with the command deadline and remembers what tab
// completion should offer from then on.
func (s *session) eval(ctx context.Context, line string) result {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	r := evaluate(ctx, s.cfg.Cluster, line)
	if r.err != nil || r.cmd.spec == nil {
		return r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.cmd.name() {
	case "connect":
		s.peers[r.cmd.args[0]] = true
	case "reward":
		s.players[r.cmd.args[0]] = true
	}
	return r
}

// scripted reads one command per line and writes one answer per line on
// Stdout; events go to Stderr, one line each, so that a program driving the
// console can pair each line it sends with the line it gets back.
func (s *session) scripted(ctx context.Context, in io.Reader) error {
	// Stdout and Stderr may be one file; one lock keeps their lines whole.
	var mu sync.Mutex
	writeLine := func(w io.Writer, text string) {
		mu.Lock()
		defer mu.Unlock()
		io.WriteString(w, oneLine(text)+"\n")
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		watch(stop, s.cfg.Events, func(ev replica.Event) { writeLine(s.cfg.Stderr, reportLine(ev)) }, nil, nil)
	})
	defer wg.Wait()
	defer close(stop)

	r := bufio.NewReader(in)
	for {
		line, err := r.ReadString('\n')
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res := s.eval(ctx, line)
		if res.out != "" { // a blank line has no answer
			writeLine(s.cfg.Stdout, res.out)
		}
		if res.quit {
			return nil
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return fmt.Errorf("shell: reading commands: %w", err)
		}
	}
}

// oneLine keeps a multi-line answer (help, or an error from a peer) on one
// line in scripted mode.
func oneLine(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(slices.DeleteFunc(lines, func(l string) bool { return l == "" }), "; ")
}
