package shell

import (
	"bufio"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/appnode/appnode/wire"

	"go.uber.org/goleak"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected answers in testdata/*.txt with the actual ones")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestTranscripts runs the console transcripts in testdata. In a transcript,
// a line "> COMMAND" is typed at the console (a lone ">" is an empty line),
// and the lines after it are what the console answers; blank lines and
// lines starting with "# " are comments. The commands of one file run in order
// against one fake cluster.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			runTranscript(t, file)
		})
	}
}

func runTranscript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	c := newFakeCluster()
	var (
		rewritten strings.Builder
		line      string   // the command being checked
		lineNo    int      // where it is in the file
		want      []string // its expected answer so far
		started   bool
	)
	check := func() {
		if !started {
			return
		}
		out, _, err := Eval(context.Background(), c, line)
		if out != "" {
			rewritten.WriteString(out + "\n")
		}
		if got := strings.Join(want, "\n"); out != got {
			t.Errorf("%s:%d: %q\ngot:\n%s\nwant:\n%s", file, lineNo, line, out, got)
		}
		if (err != nil) != strings.HasPrefix(out, "** ") {
			t.Errorf("%s:%d: %q: err = %v for answer %q", file, lineNo, line, err, out)
		}
	}
	var comments strings.Builder // blank and comment lines, written after the answer they follow
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		switch {
		case text == ">" || strings.HasPrefix(text, "> "):
			check()
			rewritten.WriteString(comments.String() + text + "\n")
			comments.Reset()
			line, lineNo, want, started = strings.TrimPrefix(strings.TrimPrefix(text, ">"), " "), n, nil, true
		case text == "" || text == "#" || strings.HasPrefix(text, "# "):
			comments.WriteString(text + "\n")
		default:
			want = append(want, text)
		}
	}
	check()
	rewritten.WriteString(comments.String())
	if *rewrite {
		if err := os.WriteFile(file, []byte(rewritten.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEvalQuit(t *testing.T) {
	for _, line := range []string{"q", "quit", "q().", "init:stop().", "  q  ", "q.", "quit.", "q()", "init:stop()"} {
		out, quit, err := Eval(context.Background(), newFakeCluster(), line)
		if out != "ok" || !quit || err != nil {
			t.Errorf("Eval(%q) = %q, quit %v, failed %v; want ok, quit, not failed", line, out, quit, err)
		}
	}
	for _, line := range []string{"q 1", "q(1).", "quit now", "nodes"} {
		if _, quit, _ := Eval(context.Background(), newFakeCluster(), line); quit {
			t.Errorf("Eval(%q) asked to quit", line)
		}
	}
}

func TestEvalEmptyLine(t *testing.T) {
	for _, line := range []string{"", "   ", "\t", "\n", " \r\n"} {
		out, quit, err := Eval(context.Background(), newFakeCluster(), line)
		if out != "" || quit || err != nil {
			t.Errorf("Eval(%q) = %q, %v, %v; want no answer", line, out, quit, err)
		}
	}
}

// A Cluster that panics gets an answer, not a dead console.
func TestEvalPanickingCluster(t *testing.T) {
	for _, line := range []string{
		"node", "node().", "nodes", "nodes().", "connect app_node2@host",
		"net_kernel:connect_node('app_node2@host').", "reward player1 5",
		`interface:reward_player(<<"player1">>, 5).`, "local_players",
		"interface:local_players().", "where player1",
	} {
		out, quit, err := Eval(context.Background(), panicCluster{}, line)
		if out != "** error: internal: boom" || quit || wire.CodeFor(err) != wire.CodeInternal {
			t.Errorf("Eval(%q) = %q, quit %v, failed %v; want an internal error", line, out, quit, err)
		}
	}
	// Tab completion asks the Cluster too, from readline's goroutine.
	s := &session{cfg: Config{Cluster: panicCluster{}}, peers: map[string]bool{}, players: map[string]bool{}}
	for _, line := range []string{"connect ", "reward p"} {
		if endings, n := s.complete([]rune(line), len(line)); endings != nil || n != 0 {
			t.Errorf("complete(%q) = %q, %d; want nothing", line, endings, n)
		}
	}
}

// The console's deadline reaches the Cluster, and the answer says what
// timed out.
func TestEvalDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	out, _, err := Eval(ctx, newFakeCluster(), "connect slow@host")
	want := "** error: cannot connect to slow@host: context deadline exceeded (is that node running, and are its name and host right?)"
	if out != want || wire.OutcomeOf(err) != wire.OutcomeUnknown {
		t.Errorf("got %q, err %v; want %q, outcome unknown", out, err, want)
	}
}

func TestComplete(t *testing.T) {
	c := newFakeCluster()
	s := &session{cfg: Config{Cluster: c, Timeout: time.Second}, peers: map[string]bool{}, players: map[string]bool{}}
	ctx := context.Background()
	// 127.0.0.1:4370 is not in Nodes (the fake lists it, a real node would
	// list the name behind it), so only the session can remember it.
	for _, line := range []string{"connect 127.0.0.1:4370", "connect app_node2@host", "reward player1 1", "reward player2 1"} {
		if r := s.eval(ctx, line); r.err != nil {
			t.Fatalf("%s: %s", line, r.out)
		}
	}
	c.mu.Lock()
	delete(c.totals, "player2") // moved away: only the session remembers it
	c.peers = slices.DeleteFunc(c.peers, func(p string) bool { return p == "127.0.0.1:4370" })
	c.mu.Unlock()

	for _, tc := range []struct {
		line string
		want []string // full words offered
	}{
		{"", completions},
		{"loc", []string{"local_players"}},
		{"no", []string{"nodes", "node"}},
		{"con", []string{"connect "}},
		{"q", []string{"q", "quit"}},
		{"connect ", []string{"127.0.0.1:4370", "app_node2@host"}},
		{"connect app", []string{"app_node2@host"}},
		{"reward ", []string{"player1", "player2"}},
		{"where player2", []string{"player2"}},
		{"reward player1 ", nil},
		{"nodes ", nil},
		{"xyz", nil},
	} {
		endings, n := s.complete([]rune(tc.line), len([]rune(tc.line)))
		word := tc.line[strings.LastIndex(tc.line, " ")+1:]
		if n != len([]rune(word)) {
			t.Errorf("complete(%q) replaces %d runes, want %d", tc.line, n, len(word))
		}
		var got []string
		for _, e := range endings {
			got = append(got, word+string(e))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("complete(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

// A node without a front door says so instead of printing nothing.
func TestHTTPWithoutFrontDoor(t *testing.T) {
	out, _, err := Eval(context.Background(), noHTTP{newFakeCluster()}, "http")
	if err == nil || !strings.Contains(out, "serves no HTTP") {
		t.Fatalf("http on a node without HTTP: %q, %v", out, err)
	}
}

// noHTTP hides the fake's HTTPURL.
type noHTTP struct{ c *fakeCluster }

func (n noHTTP) Name() string                                     { return n.c.Name() }
func (n noHTTP) Connect(ctx context.Context, target string) error { return n.c.Connect(ctx, target) }
func (n noHTTP) Reward(ctx context.Context, p, pts string) (int64, error) {
	return n.c.Reward(ctx, p, pts)
}
func (n noHTTP) LocalPlayers() []string { return n.c.LocalPlayers() }
func (n noHTTP) Nodes() []string        { return n.c.Nodes() }
func (n noHTTP) Where(ctx context.Context, p string) (string, string, error) {
	return n.c.Where(ctx, p)
}
