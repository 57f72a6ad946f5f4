// Package procs runs processes of the appnode binary (nodes, floor
// servers) for `appnode bench` and for the process tests: start one with
// its arguments and environment, signal it (kill -9, SIGSTOP, SIGCONT,
// SIGTERM), wait for its exit, read its output, and, for a node whose
// console runs in scripted mode, type lines on its stdin and read its
// answers.
//
// Every process's stdin is a pipe from this process, so that a child
// whose parent died without cleaning up, even by kill -9, sees its input
// close. Each Proc owns the goroutines that read its output and wait for
// it; they end when the process has exited.
package procs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config says what to run.
type Config struct {
	Name string   // for messages, e.g. the node's full name
	Path string   // the program
	Args []string // its arguments
	Env  []string // its whole environment
	// Console makes stdout the console's answers, one per line, read
	// with Next; otherwise stdout is kept with stderr (see Lines).
	Console bool
	// OwnGroup runs the process in a process group of its own, so that a
	// Ctrl-C at the terminal reaches only this program, which then stops
	// its children in order.
	OwnGroup bool
	// KeepLines bounds how many lines of output are kept (the last ones);
	// 0 keeps them all.
	KeepLines int
}

// Proc is one running (or exited) process.
type Proc struct {
	cfg     Config
	cmd     *exec.Cmd
	started time.Time
	stdin   io.WriteCloser
	answers chan string   // stdout lines in Console mode; closed at EOF
	first   chan string   // the first stdout line; buffered
	exited  chan struct{} // closed once the process has been waited for
	waitErr error         // its exit status, valid after exited is closed

	mu    sync.Mutex
	lines []string // stderr, and stdout unless Console
}

// answerBuffer is how many console answers may wait unread; the console
// blocks on its stdout beyond that.
const answerBuffer = 1024

// Start starts the process and returns at once.
func Start(cfg Config) (*Proc, error) {
	p := &Proc{cfg: cfg, answers: make(chan string, answerBuffer), first: make(chan string, 1), exited: make(chan struct{})}
	p.cmd = exec.Command(cfg.Path, cfg.Args...)
	p.cmd.Env = cfg.Env
	if cfg.OwnGroup {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	var readers sync.WaitGroup
	readers.Go(func() { p.readStdout(stdout) })
	readers.Go(func() { scanLines(stderr, p.keep) })
	go func() {
		readers.Wait() // Wait must not run before the pipes are read to EOF
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *Proc) readStdout(r io.Reader) {
	defer close(p.answers)
	sent := false
	scanLines(r, func(line string) {
		if !sent {
			p.first <- line
			sent = true
		}
		if p.cfg.Console {
			p.answers <- line
		} else {
			p.keep(line)
		}
	})
}

func scanLines(r io.Reader, f func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f(sc.Text())
	}
	_, _ = io.Copy(io.Discard, r) // after a runaway line: drain to EOF
}

func (p *Proc) keep(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, line)
	if n := p.cfg.KeepLines; n > 0 && len(p.lines) > 2*n {
		p.lines = slices.Clone(p.lines[len(p.lines)-n:])
	}
}

// Name is the name the process was started under.
func (p *Proc) Name() string { return p.cfg.Name }

// PID is its process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Started is when it was started.
func (p *Proc) Started() time.Time { return p.started }

// Done is closed once the process has exited and been waited for.
func (p *Proc) Done() <-chan struct{} { return p.exited }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Err is the process's exit status (nil for status 0); valid once Done is
// closed.
func (p *Proc) Err() error { return p.waitErr }

// Lines returns the output kept so far: stderr, and stdout unless the
// process is a Console (at most the last KeepLines lines).
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.cfg.KeepLines; n > 0 && len(p.lines) > n {
		return slices.Clone(p.lines[len(p.lines)-n:])
	}
	return slices.Clone(p.lines)
}

// FirstLine delivers the first line the process writes on stdout (a
// floor server's address), once.
func (p *Proc) FirstLine() <-chan string { return p.first }

// DescribeExit says how the process ended and what it last printed, for
// an error message.
func (p *Proc) DescribeExit() string {
	return fmt.Sprintf("%s (pid %d) exited: %v; its last output:\n%s", p.cfg.Name, p.PID(), p.waitErr, Indent(strings.Join(p.Lines(), "\n")))
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(p.PID(), sig); err != nil {
		return fmt.Errorf("kill -%v %s (pid %d): %w", sig, p.cfg.Name, p.PID(), err)
	}
	return nil
}

// Wait waits until the process has exited, at most limit, and returns its
// exit status.
func (p *Proc) Wait(limit time.Duration) error {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-p.exited:
		return p.waitErr
	case <-t.C:
		return fmt.Errorf("%s (pid %d) did not exit within %v", p.cfg.Name, p.PID(), limit)
	}
}

// killLimit is how long a process may take to go after SIGKILL.
const killLimit = 10 * time.Second

// Kill9 sends SIGKILL (which ends a stopped process too), and waits until
// the process is gone. It returns when the signal was sent.
func (p *Proc) Kill9() (time.Time, error) {
	err := syscall.Kill(p.PID(), syscall.SIGKILL)
	at := time.Now()
	if err != nil && !p.Exited() {
		return at, fmt.Errorf("kill -9 %s (pid %d): %w", p.cfg.Name, p.PID(), err)
	}
	select {
	case <-p.exited:
		return at, nil
	case <-time.After(killLimit):
		return at, fmt.Errorf("%s (pid %d) was sent SIGKILL but did not exit within %v", p.cfg.Name, p.PID(), killLimit)
	}
}

// Stop asks the process to exit (SIGTERM: a node leaves gracefully), and
// kills it if it has not within grace. It reports whether it had to kill.
func (p *Proc) Stop(grace time.Duration) (killed bool) {
	if p.Exited() {
		return false
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return false
	case <-time.After(grace):
	}
	_, _ = p.Kill9()
	return true
}

// StopAll stops ps concurrently, as Stop does, and returns the names of
// those it had to kill.
func StopAll(ps []*Proc, grace time.Duration) (killed []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			if p.Stop(grace) {
				mu.Lock()
				killed = append(killed, p.cfg.Name)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return killed
}

// CloseStdin closes the process's stdin: end of input, as Ctrl-D gives a
// console, and how a child of the bench learns that the bench is gone.
func (p *Proc) CloseStdin() error { return p.stdin.Close() }

// ErrExited is returned by Next when the process ended before answering.
var ErrExited = errors.New("the process exited")

// Type writes one line on the console's stdin without waiting for the
// answer (the pipe buffers it, even while the process is stopped).
func (p *Proc) Type(line string) error {
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		return fmt.Errorf("%s: typing %q: %w", p.cfg.Name, line, err)
	}
	return nil
}

// Next returns the console's next answer, waiting at most limit.
func (p *Proc) Next(limit time.Duration) (string, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case a, ok := <-p.answers:
		if !ok {
			<-p.exited
			return "", fmt.Errorf("%s: %w (%v)", p.cfg.Name, ErrExited, p.waitErr)
		}
		return a, nil
	case <-t.C:
		return "", fmt.Errorf("%s: no answer within %v", p.cfg.Name, limit)
	}
}

// Indent indents every line of s by four spaces, for output quoted in a
// message; "(nothing)" if s is blank.
func Indent(s string) string {
	if strings.TrimSpace(s) == "" {
		return "    (nothing)"
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
