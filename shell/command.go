package shell

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/appnode/appnode/wire"
)

// A spec describes one console command and its two spellings: the plain one
// (`reward player1 5`) and the Erlang one
// (`interface:reward_player(<<"player1">>, 5).`).
type spec struct {
	plain  []string // plain names; the first is the command's identity
	erlang []string // Erlang functions; none if the command has no Erlang spelling
	params []param
	help   string
	run    func(ctx context.Context, c Cluster, cmd command) (string, error)
}

// A param is one argument of a command.
type param struct {
	name string // as shown in usage, e.g. PLAYER
	erl  string // as shown in Erlang usage, e.g. <<"PLAYER">>
	// raw arguments reach the Cluster exactly as typed, also in Erlang
	// spelling, so that `a` in the points position crashes the primary as the
	// original example does.
	raw bool
}

// A command is one parsed console line.
type command struct {
	spec   *spec
	args   []string
	erlang bool // typed in Erlang spelling: lists of players then print as binaries
}

func (c command) name() string { return c.spec.plain[0] }

var (
	nodeParam   = param{name: "NODE", erl: "'NODE'"}
	playerParam = param{name: "PLAYER", erl: `<<"PLAYER">>`}
	pointsParam = param{name: "POINTS", erl: "POINTS", raw: true}
)

// commands is the console's command table, in the order help lists it.
var commands = []*spec{
	{
		plain: []string{"connect"}, erlang: []string{"net_kernel:connect_node"},
		params: []param{nodeParam},
		help:   "connect to the node NODE (name@host or host:port)",
		run:    runConnect,
	},
	{
		plain: []string{"reward"}, erlang: []string{"interface:reward_player"},
		params: []param{playerParam, pointsParam},
		help:   "add POINTS to PLAYER's total and print the new total",
		run:    runReward,
	},
	{
		plain: []string{"local_players"}, erlang: []string{"interface:local_players"},
		help: "list the players whose primary runs on this node",
		run:  runLocalPlayers,
	},
	{
		plain: []string{"nodes"}, erlang: []string{"nodes"},
		help: "list the other live nodes of the cluster",
		run:  runNodes,
	},
	{
		plain: []string{"node"}, erlang: []string{"node"},
		help: "print the name of this node",
		run:  runNode,
	},
	{
		plain:  []string{"where"},
		params: []param{playerParam},
		help:   "show the nodes holding PLAYER's primary (owner) and backup (keeper)",
		run:    runWhere,
	},
	{
		plain: []string{"http"},
		help:  "print the URL of this node's HTTP front door (API, metrics, live page)",
		run:   runHTTP,
	},
	helpSpec,
	quitSpec,
}

var (
	helpSpec = &spec{
		plain: []string{"help"}, erlang: []string{"help"},
		help: "show this list",
		// run is set by init: help lists the table it is part of.
	}
	quitSpec = &spec{
		plain: []string{"q", "quit"}, erlang: []string{"q", "init:stop"},
		help: "leave the cluster, handing this node's players over, and stop",
		run:  func(context.Context, Cluster, command) (string, error) { return "ok", nil },
	}
)

func init() {
	helpSpec.run = func(context.Context, Cluster, command) (string, error) { return helpText, nil }
}

// plainNames and erlangNames find a command by the name it was typed with.
var plainNames, erlangNames = func() (map[string]*spec, map[string]*spec) {
	plain, erl := map[string]*spec{}, map[string]*spec{}
	for _, s := range commands {
		for _, n := range s.plain {
			plain[n] = s
		}
		for _, n := range s.erlang {
			erl[n] = s
		}
	}
	return plain, erl
}()

// helpText is built from the table so that it cannot drift from what the
// console accepts.
var helpText = func() string {
	var b strings.Builder
	var erl []string
	for _, s := range commands {
		fmt.Fprintf(&b, "%-22s %s\n", strings.Join(s.plain, ", ")+paramNames(s.params), s.help)
		if len(s.erlang) > 0 {
			erl = append(erl, erlangUsage(s))
		}
	}
	b.WriteString("Erlang spellings work too: " + strings.Join(erl, " "))
	return b.String()
}()

func paramNames(ps []param) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(" " + p.name)
	}
	return b.String()
}

func plainUsage(s *spec) string { return s.plain[0] + paramNames(s.params) }

func erlangUsage(s *spec) string {
	args := make([]string, len(s.params))
	for i, p := range s.params {
		args[i] = p.erl
	}
	return s.erlang[0] + "(" + strings.Join(args, ", ") + ")."
}

// completions lists the command names that tab completion offers on an
// empty line. Commands that take arguments end in a space, so that a second
// Tab goes on to complete the argument.
var completions = func() []string {
	var names []string
	for _, s := range commands {
		for _, n := range s.plain {
			if len(s.params) > 0 {
				n += " "
			}
			names = append(names, n)
		}
	}
	return names
}()

// A result is what the console answers to one line.
type result struct {
	cmd  command // zero if the line did not parse
	out  string
	quit bool
	err  error // non-nil when the answer is an error
}

// Eval runs one console line and returns what the console would print for it
// (no trailing newline), and whether it asked to quit. Used by scripted mode
// and by `appnode rpc` (which runs one command on a running node). A
// non-nil err means the output is an error (rpc exits non-zero then); its
// code and outcome (wire.CodeFor, wire.OutcomeOf) travel with the answer.
//
// A blank line gives an empty answer. Eval never panics: a panic in the
// Cluster becomes an `** error: internal: ...` answer.
func Eval(ctx context.Context, c Cluster, line string) (out string, quit bool, err error) {
	r := evaluate(ctx, c, line)
	return r.out, r.quit, r.err
}

func evaluate(ctx context.Context, c Cluster, line string) (r result) {
	defer func() {
		if p := recover(); p != nil {
			err := wire.Errorf(wire.CodeInternal, "internal: %v", p)
			r = result{cmd: r.cmd, out: "** error: " + err.Error(), err: err}
		}
	}()
	line = strings.TrimSpace(line)
	if line == "" {
		return result{}
	}
	cmd, problem := parse(line)
	if problem != "" {
		return result{out: "** error: " + problem, err: wire.Errorf(wire.CodeBadRequest, "%s", problem)}
	}
	r.cmd = cmd // for the recover above
	out, err := cmd.spec.run(ctx, c, cmd)
	if err != nil {
		return result{cmd: cmd, out: errorAnswer(err), err: err}
	}
	return result{cmd: cmd, out: out, quit: cmd.spec == quitSpec}
}

// errorAnswer prints a failed request. A crash of the primary is expected
// behaviour (the supervisor restarts it), so it reads as a crash report
// rather than as an error of the console.
func errorAnswer(err error) string {
	if code, ok := wire.CodeOf(err); ok && code == wire.CodeCrashed {
		return "** crash: " + err.Error()
	}
	return "** error: " + err.Error()
}

// parse reads a line in either spelling; a line with a parenthesis is
// Erlang. It returns what is wrong with the line as the console says it, or
// "".
func parse(line string) (cmd command, problem string) {
	// Both spellings may end in a full stop, as every Erlang expression does.
	if l := strings.TrimSpace(strings.TrimSuffix(line, ".")); l != "" {
		line = l
	}
	if strings.Contains(line, "(") {
		return parseErlang(line)
	}
	fields := strings.Fields(line)
	s := plainNames[fields[0]]
	if s == nil {
		return command{}, unknown(fields[0])
	}
	if len(fields)-1 != len(s.params) {
		return command{}, "usage: " + plainUsage(s)
	}
	return command{spec: s, args: fields[1:]}, ""
}

// parseErlang reads a call such as interface:reward_player(<<"p1">>, 5).
// It knows just enough of Erlang's term syntax for the calls the console
// accepts: binaries, strings, atoms and numbers as arguments.
func parseErlang(line string) (command, string) {
	open := strings.IndexByte(line, '(')
	if !strings.HasSuffix(line, ")") {
		return command{}, fmt.Sprintf("syntax error: expected a call such as nodes(). but got %q", line)
	}
	name := strings.TrimSpace(line[:open])
	terms, err := splitArgs(line[open+1 : len(line)-1])
	if err != nil {
		return command{}, fmt.Sprintf("syntax error in %q: %v", line, err)
	}
	s := erlangNames[name]
	if s == nil {
		return command{}, unknown(fmt.Sprintf("%s/%d", name, len(terms)))
	}
	if len(terms) != len(s.params) {
		return command{}, "usage: " + erlangUsage(s)
	}
	args := make([]string, len(terms))
	for i, t := range terms {
		if s.params[i].raw {
			args[i] = t
			continue
		}
		if args[i], err = unquote(t); err != nil {
			return command{}, fmt.Sprintf("syntax error in %q: %v", line, err)
		}
	}
	return command{spec: s, args: args, erlang: true}, ""
}

func unknown(name string) string {
	return fmt.Sprintf("unknown command %q. Type help for the list.", name)
}

// splitArgs splits the text between a call's parentheses at the commas that
// are not inside quotes or brackets, and trims each argument.
func splitArgs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var args []string
	start, depth := 0, 0
	var quote byte // the quote we are inside of, or 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quote != 0 && c == '\\':
			i++ // the escaped character cannot end the quote
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
		case c == '"' || c == '\'':
			quote = c
		case strings.HasPrefix(s[i:], "<<"):
			depth++
			i++
		case strings.HasPrefix(s[i:], ">>"):
			depth--
			i++
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			depth--
		case c == ',' && depth == 0:
			args = append(args, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("missing closing %c", quote)
	}
	args = append(args, strings.TrimSpace(s[start:]))
	for _, a := range args {
		if a == "" {
			return nil, errors.New("empty argument")
		}
	}
	return args, nil
}

// unquote returns the text of an Erlang binary, string or atom:
// <<"p1">>, "p1", 'p1' and p1 all give p1.
func unquote(t string) (string, error) {
	if strings.HasPrefix(t, "<<") && strings.HasSuffix(t, ">>") {
		t = strings.TrimSpace(t[2 : len(t)-2])
		if !strings.HasPrefix(t, `"`) {
			return "", errors.New(`a binary must hold a string, as in <<"player1">>`)
		}
	}
	if q := t[0]; q == '"' || q == '\'' {
		if len(t) < 2 || t[len(t)-1] != q {
			return "", fmt.Errorf("missing closing %c in %s", q, t)
		}
		var b strings.Builder
		for i := 1; i < len(t)-1; i++ {
			if t[i] == '\\' && i+1 < len(t)-1 {
				i++
			}
			b.WriteByte(t[i])
		}
		t = b.String()
	}
	if t == "" {
		return "", errors.New("empty name")
	}
	return t, nil
}

func runConnect(ctx context.Context, c Cluster, cmd command) (string, error) {
	target := cmd.args[0]
	if err := c.Connect(ctx, target); err != nil {
		// Erlang answers false and leaves the user guessing; say why.
		if strings.HasPrefix(err.Error(), "cannot connect to "+target) {
			return "", err // it says so itself
		}
		return "", fmt.Errorf("cannot connect to %s: %w (is that node running, and are its name and host right?)", target, err)
	}
	return "true", nil
}

func runReward(ctx context.Context, c Cluster, cmd command) (string, error) {
	total, err := c.Reward(ctx, cmd.args[0], cmd.args[1])
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(total, 10), nil
}

func runLocalPlayers(_ context.Context, c Cluster, cmd command) (string, error) {
	players := c.LocalPlayers()
	if cmd.erlang {
		return erlList(players, erlBinary), nil
	}
	return erlList(players, erlString), nil
}

func runNodes(_ context.Context, c Cluster, _ command) (string, error) {
	return erlList(c.Nodes(), erlAtom), nil
}

func runNode(_ context.Context, c Cluster, _ command) (string, error) {
	return erlAtom(c.Name()), nil
}

func runWhere(ctx context.Context, c Cluster, cmd command) (string, error) {
	owner, keeper, err := c.Where(ctx, cmd.args[0])
	if err != nil {
		return "", err
	}
	if owner == "" {
		return "undefined", nil
	}
	return fmt.Sprintf("#{owner => %s,keeper => %s}", erlAtomOrUndefined(owner), erlAtomOrUndefined(keeper)), nil
}

// HTTPServer is implemented by a Cluster whose node serves HTTP (the
// front door); the http command asks it for its URL.
type HTTPServer interface {
	HTTPURL() string
}

// runHTTP prints the bare URL, not an Erlang string, so that a script can
// use `appnode rpc NODE http` as it is.
func runHTTP(ctx context.Context, c Cluster, cmd command) (string, error) {
	if h, ok := c.(HTTPServer); ok {
		if u := h.HTTPURL(); u != "" {
			return u, nil
		}
	}
	return "", wire.Errorf(wire.CodeBadRequest, "this node serves no HTTP (it was started with --http off)")
}

// The console prints results as Erlang terms, as the Erlang shell does.

func erlList(items []string, term func(string) string) string {
	terms := make([]string, len(items))
	for i, it := range items {
		terms[i] = term(it)
	}
	return "[" + strings.Join(terms, ",") + "]"
}

// erlAtom always quotes: node names hold an @, which Erlang quotes too.
func erlAtom(s string) string   { return "'" + escape(s, '\'') + "'" }
func erlString(s string) string { return `"` + escape(s, '"') + `"` }
func erlBinary(s string) string { return "<<" + erlString(s) + ">>" }

func erlAtomOrUndefined(s string) string {
	if s == "" {
		return "undefined"
	}
	return erlAtom(s)
}

func escape(s string, quote byte) string {
	if !strings.ContainsAny(s, `\`+string(quote)) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' || s[i] == quote {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
