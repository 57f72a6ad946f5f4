package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/appnode/appnode/replica"
	"github.com/chzyer/readline"
)

// interactive runs the console on a terminal: readline edits the lines
// (Emacs keys, Ctrl-R, history, Tab), the prompt counts commands as erl's
// does, and events are printed above the prompt.
func (s *session) interactive(ctx context.Context, in io.ReadCloser) error {
	defer makeRaw(s.cfg.Stdin)()

	scr := &screen{w: s.cfg.Stdout}
	var onResize func()
	noop := func() error { return nil }
	rl, err := readline.NewEx(&readline.Config{
		HistoryFile:       s.cfg.HistoryFile,
		HistorySearchFold: true,
		AutoComplete:      completerFunc(s.complete),
		Stdin:             in,
		Stdout:            scr,
		Stderr:            scr,
		// The caller says Stdin is a terminal, and makeRaw has already set
		// it up for the whole session; readline's defaults would look at
		// the process's own descriptors 0 and 1 instead.
		FuncIsTerminal: func() bool { return true },
		FuncMakeRaw:    noop,
		FuncExitRaw:    noop,
		FuncGetWidth:   func() int { return width(s.cfg.Stdout, s.cfg.Stdin) },
		// Readline's default watches SIGWINCH from a goroutine that never
		// ends; watch does it here instead.
		FuncOnWidthChanged: func(f func()) { onResize = f },
		// Ctrl-Z would suspend the node, which its peers would soon declare
		// failed; readline also sends SIGTSTP to the parent process.
		FuncFilterInputRune: func(r rune) (rune, bool) { return r, r != readline.CharCtrlZ },
	})
	if err != nil {
		return fmt.Errorf("shell: starting the line editor: %w", err)
	}

	resized := make(chan os.Signal, 1)
	signal.Notify(resized, syscall.SIGWINCH)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	printAbove := func(ev replica.Event) {
		// Clear the line being typed, print the report, and draw the prompt
		// and the line again below it. rl.Write would do the same, but it
		// reads readline's completion state without a lock, a data race
		// with the Tab key.
		rl.Clean()
		io.WriteString(scr, report(ev))
		rl.Refresh()
	}
	wg.Go(func() { watch(stop, s.cfg.Events, printAbove, resized, onResize) })
	defer func() {
		signal.Stop(resized)
		close(stop)
		wg.Wait()
		closeReadline(rl, in, scr)
	}()

	return s.readLoop(ctx, rl, scr)
}

// readLoop reads and runs lines. Answers are written to the screen
// directly, not through readline: no line is being edited then, and
// readline, not yet aware of that, would draw the old prompt again below the
// answer.
func (s *session) readLoop(ctx context.Context, rl *readline.Instance, scr io.Writer) error {
	name := s.cfg.Cluster.Name()
	for n := 1; ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		rl.SetPrompt(fmt.Sprintf("(%s)%d> ", name, n))
		line, err := rl.Readline()
		if err := ctx.Err(); err != nil {
			return err // the line, if any, was cut short: do not run it
		}
		switch {
		case errors.Is(err, readline.ErrInterrupt):
			continue // Ctrl-C: readline has dropped the line; same prompt again
		case err != nil:
			// Ctrl-D on an empty line, or the terminal went away.
			io.WriteString(scr, "ok\n")
			return nil
		case strings.TrimSpace(line) == "":
			continue
		}
		n++ // as in erl, also when the command fails
		r := s.eval(ctx, line)
		io.WriteString(scr, r.out+"\n")
		if r.quit {
			return nil
		}
	}
}

// closeReadline stops readline's goroutines.
//
// rl.Close alone leaves one of them blocked for ever (readline v1.5.1):
// Operation.Close queues an io.EOF that only a Readline call takes, and the
// line-editing goroutine, seeing its input end, then blocks queueing one of
// its own. One more Readline call takes the first and lets the second
// through. That call would draw a prompt, so the screen is muted first.
func closeReadline(rl *readline.Instance, in io.Closer, scr *screen) {
	in.Close() // ends a pending read, so that rl.Close does not wait for a key
	scr.mute()
	rl.Close()
	rl.Readline()
}

// completerFunc adapts a function to readline.AutoCompleter.
type completerFunc func(line []rune, pos int) ([][]rune, int)

func (f completerFunc) Do(line []rune, pos int) ([][]rune, int) { return f(line, pos) }

// complete offers the rest of the word before the cursor: a command name at
// the start of the line, a node name after connect, a player after reward
// and where. It returns the endings of the candidates and the length of the
// word they complete, as readline wants.
func (s *session) complete(line []rune, pos int) (endings [][]rune, length int) {
	// This runs in readline's goroutine, where a panicking Cluster would
	// take the node down; offering nothing is the better failure.
	defer func() {
		if recover() != nil {
			endings, length = nil, 0
		}
	}()
	before := string(line[:pos])
	start := strings.LastIndexAny(before, " \t") + 1
	word, prev := before[start:], strings.Fields(before[:start])

	var candidates []string
	switch {
	case len(prev) == 0:
		candidates = completions
	case len(prev) == 1 && prev[0] == "connect":
		candidates = s.known(s.cfg.Cluster.Nodes(), s.peers)
	case len(prev) == 1 && (prev[0] == "reward" || prev[0] == "where"):
		candidates = s.known(s.cfg.Cluster.LocalPlayers(), s.players)
	}
	for _, c := range candidates {
		if strings.HasPrefix(c, word) {
			endings = append(endings, []rune(c[len(word):]))
		}
	}
	return endings, utf8.RuneCountInString(word)
}

// known merges names the cluster reports with those this session has seen,
// sorted.
func (s *session) known(current []string, seen map[string]bool) []string {
	s.mu.Lock()
	names := slices.AppendSeq(slices.Clone(current), maps.Keys(seen))
	s.mu.Unlock()
	slices.Sort(names)
	return slices.Compact(names)
}
