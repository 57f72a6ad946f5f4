package procs

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const limit = 10 * time.Second

// echo answers each line of its stdin on stdout and reports it on stderr.
func echo(t *testing.T, console bool) *Proc {
	t.Helper()
	p, err := Start(Config{
		Name: "echo", Path: "/bin/sh", Env: os.Environ(), Console: console, KeepLines: 3,
		Args: []string{"-c", `echo ready; while read l; do echo "got $l"; echo "event $l" >&2; done`},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = p.Kill9() })
	return p
}

func TestConsole(t *testing.T) {
	p := echo(t, true)
	if a, err := p.Next(limit); err != nil || a != "ready" {
		t.Fatalf("first answer %q, %v", a, err)
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"a", "b", "c", "d"} {
		if err := p.Type(l); err != nil { // buffered by the pipe while stopped
			t.Fatal(err)
		}
	}
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"a", "b", "c", "d"} {
		if a, err := p.Next(limit); err != nil || a != "got "+l {
			t.Fatalf("answer %q, %v; want got %s", a, err, l)
		}
	}
	if err := p.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(limit); err != nil {
		t.Fatalf("exit after end of input: %v", err)
	}
	if _, err := p.Next(limit); !errors.Is(err, ErrExited) {
		t.Errorf("Next after the exit: %v, want ErrExited", err)
	}
	if got := strings.Join(p.Lines(), ","); got != "event b,event c,event d" {
		t.Errorf("kept %q, want the last 3 events", got)
	}
}

func TestKillAndStop(t *testing.T) {
	p := echo(t, false)
	if l := <-p.FirstLine(); l != "ready" {
		t.Fatalf("first line %q", l)
	}
	if _, err := p.Kill9(); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() || p.Err() == nil {
		t.Errorf("after kill -9: exited %v, status %v", p.Exited(), p.Err())
	}
	if !strings.Contains(p.DescribeExit(), "ready") {
		t.Errorf("DescribeExit does not show its output: %s", p.DescribeExit())
	}

	// sh ignores nothing: SIGTERM ends it before the grace.
	q := echo(t, false)
	if killed := StopAll([]*Proc{q}, limit); len(killed) != 0 {
		t.Errorf("StopAll had to kill %v", killed)
	}
}
