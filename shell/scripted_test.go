package shell

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/appnode/appnode/replica"
)

// waitLimit bounds every wait of these tests; passing runs take milliseconds.
const waitLimit = 5 * time.Second

var upAt = time.Date(2026, time.November, 27, 13, 20, 1, 123456000, time.UTC)

// scriptedConsole runs Run in scripted mode with pipes for its three files.
type scriptedConsole struct {
	t      *testing.T
	in     *os.File // what the test types
	stdout *os.File // Run's end of out
	out    *bufio.Reader
	errOut *bufio.Reader
	events chan replica.Event
	cancel context.CancelFunc
	done   chan error
}

func startScripted(t *testing.T) *scriptedConsole {
	t.Helper()
	stdin, in := pipe(t)
	outR, stdout := pipe(t)
	errR, stderr := pipe(t)
	for _, r := range []*os.File{outR, errR} {
		r.SetReadDeadline(time.Now().Add(waitLimit))
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &scriptedConsole{
		t: t, in: in, stdout: stdout, out: bufio.NewReader(outR), errOut: bufio.NewReader(errR),
		events: make(chan replica.Event), cancel: cancel, done: make(chan error, 1),
	}
	go func() {
		c.done <- Run(ctx, Config{Cluster: newFakeCluster(), Events: c.events, Stdin: stdin, Stdout: stdout, Stderr: stderr})
	}()
	t.Cleanup(func() {
		cancel()
		c.wait()
	})
	return c
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func (c *scriptedConsole) send(lines string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, lines); err != nil {
		c.t.Fatal(err)
	}
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading an answer: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

// wait returns what Run returned, failing the test if it does not return.
func (c *scriptedConsole) wait() error {
	c.t.Helper()
	select {
	case err := <-c.done:
		c.done <- err // for the next caller
		return err
	case <-time.After(waitLimit):
		c.t.Fatal("Run did not return")
		return nil
	}
}

func TestScriptedOneLinePerAnswer(t *testing.T) {
	c := startScripted(t)
	for _, step := range []struct{ send, want string }{
		{"node\n", "'app_node1@host'"},
		{"\n   \nnodes().\n", "[]"}, // empty lines have no answer
		{"reward player1 5\n", "** error: cannot reward player1: fewer than two live nodes"},
		{"connect app_node2@host\n", "true"},
		{"reward player1 a\n", `** crash: player1: points "a" is not an integer (primary restarted, state restored from keeper on app_node2@host)`},
		{"bogus\n", `** error: unknown command "bogus". Type help for the list.`},
	} {
		c.send(step.send)
		if got := readLine(t, c.out); got != step.want {
			t.Errorf("after %q: got %q, want %q", step.send, got, step.want)
		}
	}

	// Help is several lines at a terminal, one here.
	c.send("help\nnode\n")
	if got := readLine(t, c.out); !strings.HasPrefix(got, "connect NODE") || !strings.Contains(got, "; reward PLAYER POINTS") {
		t.Errorf("help: got %q, want the list on one line", got)
	}
	if got := readLine(t, c.out); got != "'app_node1@host'" {
		t.Errorf("after help: got %q", got)
	}

	// Events go to stderr, one line each.
	c.events <- replica.Event{Time: upAt, Level: replica.Info, Text: "node app_node2@host up"}
	c.events <- replica.Event{Time: upAt, Level: replica.Error, Text: "primary of player1 crashed\nrestarted from keeper"}
	for _, want := range []string{
		"=INFO REPORT==== 27-Nov-2026::13:20:01.123456 === node app_node2@host up",
		"=ERROR REPORT==== 27-Nov-2026::13:20:01.123456 === primary of player1 crashed; restarted from keeper",
	} {
		if got := readLine(t, c.errOut); got != want {
			t.Errorf("event: got %q, want %q", got, want)
		}
	}

	c.send("q().\nnode\n")
	if got := readLine(t, c.out); got != "ok" {
		t.Errorf("q(): got %q, want ok", got)
	}
	if err := c.wait(); err != nil {
		t.Errorf("Run after q() = %v, want nil", err)
	}
	c.stdout.Close()
	if line, err := c.out.ReadString('\n'); line != "" || err == nil {
		t.Errorf("after q(): got %q, %v; want nothing more", line, err)
	}
}

func TestScriptedEndOfInput(t *testing.T) {
	c := startScripted(t)
	c.send("node") // no newline before the end
	c.in.Close()
	if got := readLine(t, c.out); got != "'app_node1@host'" {
		t.Errorf("got %q", got)
	}
	if err := c.wait(); err != nil {
		t.Errorf("Run at end of input = %v, want nil", err)
	}
}

func TestScriptedCancel(t *testing.T) {
	c := startScripted(t)
	c.send("node\n")
	readLine(t, c.out)
	c.cancel() // Run is waiting for a line that never comes
	if err := c.wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want context.Canceled", err)
	}
}

// Stdin need not be a file: closing it is what ends a pending read.
func TestCancelWithPlainReader(t *testing.T) {
	for _, interactive := range []bool{false, true} {
		stdin, in := io.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config{Cluster: newFakeCluster(), Stdin: stdin, Stdout: io.Discard, Stderr: io.Discard, Interactive: interactive})
		}()
		io.WriteString(in, "node\n") // taken once Run reads
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("interactive %v: Run after cancel = %v, want context.Canceled", interactive, err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("interactive %v: Run did not return after cancel", interactive)
		}
		in.Close()
	}
}
