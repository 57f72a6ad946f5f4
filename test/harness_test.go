package test

// The harness of the process tests: they run the built appnode binary as
// real processes (through internal/procs), each test with its own state
// directory and its own name service port, all on 127.0.0.1 (but for the
// network namespaces of netns_test.go).

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/internal/procs"
	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/names"
	"go.uber.org/goleak"
)

// appnodeBin is the binary under test, built once by TestMain.
var appnodeBin string

// Limits of the waits in these tests. Passing runs take a small fraction of
// them; they only bound how long a broken product can hang a test.
const (
	answerLimit = 20 * time.Second // one console answer (the console's own command timeout is 10 s)
	rpcLimit    = 30 * time.Second // one `appnode rpc` process, start to exit
	settleLimit = 20 * time.Second // a cluster converging after a change
)

func TestMain(m *testing.M) {
	code := buildAndRun(m)
	if code == 0 {
		// Every process, connection and reader a test started has ended.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) int {
	flag.Parse() // for testing.Verbose
	dir, err := os.MkdirTemp("", "appnode-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	appnodeBin = filepath.Join(dir, "appnode")
	goCmd := "go"
	if _, err := exec.LookPath(goCmd); err != nil {
		goCmd = "/usr/local/go/bin/go"
	}
	start := time.Now()
	build := exec.Command(goCmd, "build", "-o", appnodeBin, "github.com/appnode/appnode/cmd/appnode")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building appnode: %v\n%s", err, out)
		return 1
	}
	if testing.Verbose() {
		fmt.Printf("built %s in %v\n", appnodeBin, time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// harness is one test's private world: a state directory and a name
// service port that no other test uses.
type harness struct {
	t         *testing.T
	stateDir  string
	namesPort int
	host      string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return &harness{t: t, stateDir: t.TempDir(), namesPort: testenv.FreePort(t), host: names.ShortHostname()}
}

// full turns "app_node1" into "app_node1@<short host name>".
func (h *harness) full(name string) string { return name + "@" + h.host }

// env is the test's processes' environment. Their cookie is the file
// cookieFile(), which the first node creates; a cookie inherited from the
// environment is dropped, and the real home's cookie file is never used.
func (h *harness) env() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, cookie.EnvCookie+"=") || strings.HasPrefix(kv, cookie.EnvCookieFile+"=")
	})
	return append(env,
		"APPNODE_STATE_DIR="+h.stateDir,
		fmt.Sprintf("APPNODE_NAMES_PORT=%d", h.namesPort),
		cookie.EnvCookieFile+"="+h.cookieFile(),
	)
}

func (h *harness) cookieFile() string { return filepath.Join(h.stateDir, "cookie") }

// cookie is the test cluster's cookie, for clients dialled from the test
// itself, once a node has created it; before that, the zero Cookie, which
// transport.DialClient refuses. Safe from any goroutine.
func (h *harness) cookie() cookie.Cookie {
	c, _ := cookie.Load(h.cookieFile())
	return c
}

// proc is one running node process in scripted mode: its stdin is a pipe
// the test writes commands to, one per line; its stdout gives one answer
// per line; its stderr carries the events.
type proc struct {
	*procs.Proc
	t    *testing.T
	name string // full name
}

// start runs `appnode --bind 127.0.0.1 [FLAGS] NAME` and returns at once,
// before the node is up. Whatever happens, the process is killed and
// waited for when the test ends.
func (h *harness) start(name string, flags ...string) *proc {
	h.t.Helper()
	return launch(h.t, h.full(name), h.stateDir, appnodeBin, append(append([]string{"--bind", "127.0.0.1"}, flags...), name), h.env())
}

// launch starts path with args and env: a node named name, whose state
// dir is logDir, in scripted mode; see start.
func launch(t *testing.T, name, logDir, path string, args, env []string) *proc {
	t.Helper()
	pp, err := procs.Start(procs.Config{Name: name, Path: path, Args: args, Env: env, Console: true})
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{Proc: pp, t: t, name: name}
	t.Cleanup(func() {
		if _, err := p.Kill9(); err != nil { // works on a stopped process too
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("%s stderr (events):\n%s", p.name, strings.Join(p.Lines(), "\n"))
			if b, err := os.ReadFile(filepath.Join(logDir, p.name+".log")); err == nil {
				t.Logf("%s log (tail):\n%s", p.name, tail(string(b), 60))
			}
		}
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ask types one command and returns the one line the console answers.
func (p *proc) ask(line string) string {
	p.t.Helper()
	p.typeLine(line)
	return p.next(line)
}

// typeLine writes one line on the console's stdin without waiting for the
// answer (the pipe buffers it, even while the process is stopped).
func (p *proc) typeLine(line string) {
	p.t.Helper()
	if err := p.Type(line); err != nil {
		p.t.Fatal(err)
	}
}

// next returns the console's next answer line; line is what it answers,
// for messages.
func (p *proc) next(line string) string {
	p.t.Helper()
	a, err := p.Next(answerLimit)
	if err != nil {
		p.t.Fatalf("%v, instead of answering %q; stderr:\n%s", err, line, strings.Join(p.Lines(), "\n"))
	}
	return a
}

// expect types line and fails the test unless the answer is want.
func (p *proc) expect(line, want string) {
	p.t.Helper()
	if got := p.ask(line); got != want {
		p.t.Fatalf("%s: %q answered %q, want %q", p.name, line, got, want)
	}
}

// waitUp waits until the console answers `node` with this node's name and
// returns how long after the process started that was.
func (p *proc) waitUp() time.Duration {
	p.t.Helper()
	p.expect("node", "'"+p.name+"'")
	return time.Since(p.Started())
}

// kill9 sends SIGKILL, returns the moment it was sent, and waits until the
// process is gone.
func (p *proc) kill9() time.Time {
	p.t.Helper()
	at, err := p.Kill9()
	if err != nil {
		p.t.Fatal(err)
	}
	return at
}

// waitExit waits for the process to end and returns its exit error.
func (p *proc) waitExit() error {
	p.t.Helper()
	err := p.Wait(settleLimit)
	if !p.Exited() {
		p.t.Fatal(err)
	}
	return err
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// rpcResult is what one `appnode rpc` run gave.
type rpcResult struct {
	out, errOut string // trimmed stdout and stderr
	code        int    // exit status
	took        time.Duration
}

func (r rpcResult) ok() bool { return r.code == 0 }

func (r rpcResult) String() string {
	if r.ok() {
		return fmt.Sprintf("%q", r.out)
	}
	return fmt.Sprintf("exit %d: %q", r.code, strings.TrimSpace(r.out+"\n"+r.errOut))
}

// rpc runs `appnode rpc TARGET LINE` and returns what it printed and its
// exit status. target may be a bare name ("app_node2").
func (h *harness) rpc(target, line string, flags ...string) rpcResult {
	h.t.Helper()
	if !strings.Contains(target, "@") {
		target = h.full(target)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcLimit)
	defer cancel()
	args := append(append([]string{"rpc"}, flags...), target)
	if line != "" {
		args = append(args, line)
	}
	cmd := exec.CommandContext(ctx, appnodeBin, args...)
	cmd.Env = h.env()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	r := rpcResult{out: strings.TrimSpace(out.String()), errOut: strings.TrimSpace(errOut.String()), took: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		h.t.Fatalf("appnode rpc %s %q did not exit within %v", target, line, rpcLimit)
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		h.t.Fatalf("appnode rpc %s %q: %v", target, line, err)
	}
	return r
}

// mustRPC runs line on target (with rpc's flags) and fails the test unless
// it succeeds with the answer want.
func (h *harness) mustRPC(target, line, want string, flags ...string) {
	h.t.Helper()
	if r := h.rpc(target, line, flags...); !r.ok() || r.out != want {
		h.t.Fatalf("rpc %v %s %q: got %v, want %q", flags, target, line, r, want)
	}
}

// An asker runs one console line on one node, at its console or by rpc,
// and returns the answer and whether the command succeeded.
type asker struct {
	where string
	ask   func(line string) (string, bool)
}

// console asks at p's console. A failed command's answer starts with `**`.
func (p *proc) console() asker {
	return asker{where: p.name + " console", ask: func(line string) (string, bool) {
		a := p.ask(line)
		return a, !strings.HasPrefix(a, "** ")
	}}
}

// viaRPC asks through `appnode rpc`, which exits non-zero on failure.
func (h *harness) viaRPC(name string) asker {
	return asker{where: name + " by rpc", ask: func(line string) (string, bool) {
		r := h.rpc(name, line)
		if !r.ok() {
			return r.String(), false
		}
		return r.out, true
	}}
}

// startCluster starts the named nodes one after the other (so the first
// serves the host's name service), waits until each answers, and connects
// the first to each of the others from its console.
func (h *harness) startCluster(names ...string) []*proc {
	h.t.Helper()
	ps := make([]*proc, len(names))
	for i, n := range names {
		ps[i] = h.start(n)
		ps[i].waitUp()
	}
	for _, p := range ps[1:] {
		ps[0].expect("connect "+p.name, "true")
	}
	h.waitMembers(ps...)
	return ps
}

// waitMembers waits until `nodes`, typed at each of ps, lists exactly the
// others, and returns how long that took.
func (h *harness) waitMembers(ps ...*proc) time.Duration {
	h.t.Helper()
	return testenv.Eventually(h.t, settleLimit, "every node lists the others", func() (bool, string) {
		for _, p := range ps {
			if got, want := p.ask("nodes"), othersList(p, ps); got != want {
				return false, fmt.Sprintf("nodes at %s: %s, want %s", p.name, got, want)
			}
		}
		return true, ""
	})
}

// othersList is what `nodes` at p should answer when ps are the members.
func othersList(p *proc, ps []*proc) string {
	var names []string
	for _, q := range ps {
		if q.name != p.name {
			names = append(names, "'"+q.name+"'")
		}
	}
	slices.Sort(names)
	return "[" + strings.Join(names, ",") + "]"
}

// rewardUntilOK asks for `reward PLAYER POINTS` until it succeeds or limit
// passes; it returns the successful answer, the failed answers before it,
// and when the success arrived. Retrying is safe only because a reward
// that fails must leave the total unchanged, whatever the failure (a node
// must never pretend, nor apply half a request): callers check the total
// that follows.
func rewardUntilOK(t *testing.T, a asker, player string, points int, limit time.Duration) (string, []string, time.Time) {
	t.Helper()
	line := fmt.Sprintf("reward %s %d", player, points)
	var failures []string
	var answer string
	var at time.Time
	testenv.Eventually(t, limit, fmt.Sprintf("%q succeeds at %s", line, a.where), func() (bool, string) {
		out, ok := a.ask(line)
		if !ok {
			failures = append(failures, out)
			return false, fmt.Sprintf("%d failures, last: %s", len(failures), out)
		}
		answer, at = out, time.Now()
		return true, ""
	})
	return answer, failures, at
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
