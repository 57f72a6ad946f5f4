//go:build linux

// The pseudo-terminal tests read termios with Linux ioctls, and the console
// relies on /proc to interrupt a read of its standard input (see
// interruptible).

package shell

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/appnode/appnode/replica"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// ptyScreen reads what a program writes to a pseudo-terminal, for expect.
type ptyScreen struct {
	t          *testing.T
	master     *os.File // the test's side of the terminal
	readerDone chan struct{}

	mu      sync.Mutex
	out     []byte        // everything written to the terminal
	changed chan struct{} // signalled when out grows
	seen    int           // how far expect has read text()
}

func newPtyScreen(t *testing.T, master *os.File) *ptyScreen {
	p := &ptyScreen{t: t, master: master, readerDone: make(chan struct{}), changed: make(chan struct{}, 1)}
	go p.read()
	return p
}

// read copies what is written to the terminal into out, until close.
func (p *ptyScreen) read() {
	defer close(p.readerDone)
	buf := make([]byte, 4096)
	for {
		n, err := p.master.Read(buf)
		p.mu.Lock()
		p.out = append(p.out, buf[:n]...)
		p.mu.Unlock()
		select {
		case p.changed <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

func (p *ptyScreen) close() {
	p.master.Close()
	<-p.readerDone
}

func (p *ptyScreen) typ(keys string) {
	p.t.Helper()
	if _, err := p.master.WriteString(keys); err != nil {
		p.t.Fatal(err)
	}
}

// controls matches the escape sequences readline draws with.
var controls = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]|\r")

// text is what was written, without escape sequences and carriage returns.
func (p *ptyScreen) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return controls.ReplaceAllString(string(p.out), "")
}

// expect waits until want appears after what the previous expect matched.
func (p *ptyScreen) expect(want string) {
	p.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		text := p.text()
		if i := strings.Index(text[p.seen:], want); i >= 0 {
			p.seen += i + len(want)
			return
		}
		select {
		case <-p.changed:
		case <-deadline.C:
			p.t.Fatalf("waiting for %q; the screen after the last match:\n%s", want, text[p.seen:])
		}
	}
}

// terminal runs Run in interactive mode on a pseudo-terminal: Run gets the
// terminal's side, the test types on the other side and reads the screen.
type terminal struct {
	*ptyScreen
	cluster *fakeCluster
	events  chan replica.Event
	cancel  context.CancelFunc
	done    chan error // Run's result
}

func startTerminal(t *testing.T, historyFile string) *terminal {
	t.Helper()
	master, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	if err := pty.Setsize(master, &pty.Winsize{Rows: 24, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	term := &terminal{
		ptyScreen: newPtyScreen(t, master), cluster: newFakeCluster(),
		events: make(chan replica.Event), cancel: cancel, done: make(chan error, 1),
	}
	term.cluster.totals["player1"] = 5
	term.cluster.totals["player2"] = 7
	go func() {
		term.done <- Run(ctx, Config{
			Cluster: term.cluster, Events: term.events,
			Stdin: tty, Stdout: tty, Stderr: tty,
			Interactive: true, HistoryFile: historyFile,
		})
	}()
	t.Cleanup(func() {
		cancel()
		term.wait()
		term.close()
	})
	return term
}

// wait returns what Run returned, failing the test if it does not return.
func (term *terminal) wait() error {
	term.t.Helper()
	select {
	case err := <-term.done:
		term.done <- err // for the next caller
		return err
	case <-time.After(waitLimit):
		term.t.Fatalf("Run did not return; the screen:\n%s", term.text())
		return nil
	}
}

func TestInteractive(t *testing.T) {
	term := startTerminal(t, "")
	term.expect("(app_node1@host)1> ")

	term.typ("node\r")
	term.expect("'app_node1@host'\n(app_node1@host)2> ")

	// The counter advances after an error too, as in erl.
	term.typ("bogus\r")
	term.expect("** error: unknown command \"bogus\". Type help for the list.\n(app_node1@host)3> ")

	// Ctrl-C drops the line and prompts again, without counting.
	term.typ("xyz\x03")
	term.expect("xyz^C\n(app_node1@host)3> ")

	// So does an empty line.
	term.typ("\r")
	term.expect("(app_node1@host)3> \n(app_node1@host)3> ")

	// An event arrives while a line is being typed: it is printed above the
	// prompt, and the prompt and the line are drawn again below it.
	term.typ("loc")
	term.expect("(app_node1@host)3> loc")
	term.events <- replica.Event{Time: upAt, Level: replica.Info, Text: "node app_node2@host up"}
	term.expect("=INFO REPORT==== 27-Nov-2026::13:20:01.123456 ===\n    node app_node2@host up\n(app_node1@host)3> loc")

	// Tab completes the line, which was kept.
	term.typ("\t")
	term.expect("(app_node1@host)3> local_players")
	term.typ("\r")
	term.expect(`["player1","player2"]` + "\n(app_node1@host)4> ")

	// Ctrl-D on an empty line quits like q.
	term.typ("\x04")
	term.expect("ok\n")
	if err := term.wait(); err != nil {
		t.Errorf("Run after Ctrl-D = %v, want nil", err)
	}
}

func TestInteractiveQuit(t *testing.T) {
	term := startTerminal(t, "")
	term.expect("(app_node1@host)1> ")
	term.typ("q().\r")
	term.expect("ok\n")
	if err := term.wait(); err != nil {
		t.Errorf("Run after q(). = %v, want nil", err)
	}
}

func TestInteractiveHistory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "history")

	term := startTerminal(t, file)
	term.expect("(app_node1@host)1> ")
	term.typ("nodes\r")
	term.expect("[]\n(app_node1@host)2> ")
	term.typ("\x04")
	if err := term.wait(); err != nil {
		t.Fatalf("Run after Ctrl-D = %v, want nil", err)
	}

	// The next run recalls the line with the Up arrow.
	term = startTerminal(t, file)
	term.expect("(app_node1@host)1> ")
	term.typ("\x1b[A")
	term.expect("(app_node1@host)1> nodes")
	term.typ("\r")
	term.expect("[]\n(app_node1@host)2> ")
}

// Cancelling Run while a line is half typed returns at once and does not
// run the line.
func TestInteractiveCancel(t *testing.T) {
	term := startTerminal(t, "")
	term.expect("(app_node1@host)1> ")
	term.typ("connect app_node2@host")
	term.expect("(app_node1@host)1> connect app_node2@host")
	term.cancel()
	if err := term.wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want context.Canceled", err)
	}
	if nodes := term.cluster.Nodes(); len(nodes) != 0 {
		t.Errorf("the half-typed line ran: nodes %q", nodes)
	}
}

const childEnv = "SHELL_TEST_CONSOLE_CHILD"

// TestConsoleProcess runs the console as the node does: in a process of its
// own, on the process's standard input, a terminal that controls the
// process. Ctrl-C must not stop the process; SIGTERM, which cancels Run's
// context, must end Run while it waits for a key (closing os.Stdin alone
// would not) and leave the terminal as it found it.
func TestConsoleProcess(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestConsoleChild$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	master, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 100})
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	scr := newPtyScreen(t, master)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("console process: %v; its screen:\n%s", err, scr.text())
			}
		case <-time.After(waitLimit):
			cmd.Process.Kill()
			<-exited
			t.Errorf("console process did not exit; its screen:\n%s", scr.text())
		}
		scr.close()
	}()

	scr.expect("(app_node1@host)1> ")
	scr.typ("node\x03")
	scr.expect("node^C\n(app_node1@host)1> ")
	scr.typ("nodes\r")
	scr.expect("[]\n(app_node1@host)2> ")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	scr.expect("Run returned context canceled; terminal echo true, canonical true\n")
}

// TestConsoleChild is the console process of TestConsoleProcess.
func TestConsoleChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("runs as the console process of TestConsoleProcess")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err := Run(ctx, Config{Cluster: newFakeCluster(), Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Interactive: true})
	// Run closed os.Stdin; standard output is the same terminal.
	tio, terr := unix.IoctlGetTermios(1, unix.TCGETS)
	if terr != nil {
		t.Fatal(terr)
	}
	fmt.Printf("Run returned %v; terminal echo %v, canonical %v\n", err, tio.Lflag&unix.ECHO != 0, tio.Lflag&unix.ICANON != 0)
}
