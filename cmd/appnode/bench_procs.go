package main

// Child processes of `appnode bench`: spawned nodes and floor servers. Each
// child runs in its own process group (a Ctrl-C at the terminal reaches
// only the bench, which then stops them in order) with its stdin on a pipe
// from the bench: if the bench dies without cleaning up, even by kill -9,
// the pipe closes and the child exits on its own.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is one process started by the bench.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *tailWriter   // stdout and stderr, last lines
	done  chan struct{} // closed once the process has been waited for
	err   error         // its exit status, valid after done
}

// startChild runs this binary with args and env. The process is waited
// for by a goroutine the child owns; stop or kill9 end it.
func startChild(name string, args, env []string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program's binary to spawn %s: %w", name, err)
	}
	c := &child{name: name, out: newTailWriter(40), done: make(chan struct{})}
	c.cmd = exec.Command(exe, args...)
	c.cmd.Env = env
	c.cmd.Stdout = c.out
	c.cmd.Stderr = c.out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// describeExit says how the child ended and what it last printed, for an
// error message.
func (c *child) describeExit() string {
	return fmt.Sprintf("%s (pid %d) exited: %v; its last output:\n%s", c.name, c.pid(), c.err, indent(c.out.String()))
}

// kill9 kills the child with SIGKILL and waits until it is gone.
func (c *child) kill9() error {
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil && !c.exited() {
		return fmt.Errorf("kill -9 %s (pid %d): %w", c.name, c.pid(), err)
	}
	select {
	case <-c.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) was sent SIGKILL but did not exit within 10s", c.name, c.pid())
	}
}

// stop asks the child to exit (SIGTERM: a node leaves gracefully), and
// kills it if it has not within grace. It reports whether it had to kill.
func (c *child) stop(grace time.Duration) (killed bool) {
	if c.exited() {
		return false
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return false
	case <-time.After(grace):
	}
	_ = c.kill9()
	return true
}

// stopAll stops children concurrently and waits for all of them.
func stopAll(children []*child, grace time.Duration) (killed []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range children {
		wg.Go(func() {
			if c.stop(grace) {
				mu.Lock()
				killed = append(killed, c.name)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return killed
}

// rssBytes reads a process's resident set size from /proc.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read resident memory of pid %d: %w (this needs Linux's /proc)", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read resident memory of pid %d: bad VmRSS line %q", pid, sc.Text())
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("read resident memory of pid %d: no VmRSS in /proc/%d/status", pid, pid)
}

// tailWriter keeps the last lines written to it, and hands the first line
// to whoever waits on first (a floor server prints its address there).
type tailWriter struct {
	mu      sync.Mutex
	max     int
	lines   []string
	partial []byte
	first   chan string // buffered; receives the first complete line
	sent    bool
}

func newTailWriter(maxLines int) *tailWriter {
	return &tailWriter{max: maxLines, first: make(chan string, 1)}
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if !w.sent {
			w.first <- line
			w.sent = true
		}
		w.lines = append(w.lines, line)
		if len(w.lines) > w.max {
			w.lines = w.lines[1:]
		}
	}
	if len(w.partial) > 4096 { // a runaway line: keep its end
		w.partial = w.partial[len(w.partial)-4096:]
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := strings.Join(w.lines, "\n")
	if len(w.partial) > 0 {
		s += "\n" + string(w.partial)
	}
	return s
}

func indent(s string) string {
	if strings.TrimSpace(s) == "" {
		return "    (nothing)"
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// clockTicks is the unit of /proc/PID/stat's CPU times (USER_HZ), 100 on
// every Linux the bench targets; Go cannot ask sysconf without cgo.
const clockTicks = 100

// procCPU reads the CPU time (user + system) a process has used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// benchProcName names the load generator in CPU figures, and
// restProcName everything else the machine ran meanwhile: other
// processes competing for the CPUs make a run's figures worse.
const (
	benchProcName = "bench (load generator)"
	restProcName  = "rest of the machine"
	machineBusy   = "(machine)" // a sample's key for all CPUs' busy time
)

// machineBusyTime reads the time all CPUs spent busy (not idle nor waiting
// for I/O) so far, from /proc/stat.
func machineBusyTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: unexpected format")
	}
	var busy int64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, errors.New("/proc/stat: unexpected format")
		}
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}

// cpuSample is the CPU time used so far by the bench and its children.
type cpuSample map[string]time.Duration

func sampleCPU(children []*child) cpuSample {
	s := cpuSample{}
	if d, err := machineBusyTime(); err == nil {
		s[machineBusy] = d
	}
	if d, err := procCPU(os.Getpid()); err == nil {
		s[benchProcName] = d
	}
	for _, c := range children {
		if c.exited() {
			continue
		}
		if d, err := procCPU(c.pid()); err == nil {
			s[c.name] = d
		}
	}
	return s
}

// coresUsed turns two samples into CPU cores used over elapsed, for the
// processes present in both.
func coresUsed(before, after cpuSample, elapsed time.Duration) map[string]float64 {
	if elapsed <= 0 || len(before) == 0 {
		return nil
	}
	out := map[string]float64{}
	var ours float64
	for name, b := range before {
		if a, ok := after[name]; ok && name != machineBusy {
			out[name] = float64(a-b) / float64(elapsed)
			ours += out[name]
		}
	}
	if b, ok := before[machineBusy]; ok {
		if a, ok := after[machineBusy]; ok {
			// Includes a killed node's share, which has no after sample.
			out[restProcName] = max(0, float64(a-b)/float64(elapsed)-ours)
		}
	}
	return out
}
