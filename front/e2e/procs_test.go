// Package e2e runs the front door as its users meet it: real node
// processes of the built binary, a real browser (headless Chromium) on the
// live page, and nginx as the load balancer in front of three nodes.
//
// It has its own small process spawner. The project is growing a shared
// one (internal/procs, for the process tests in test/); this file can move
// onto it when both are merged.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/names"
	"go.uber.org/goleak"
)

var appnodeBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "appnode-front-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	appnodeBin = filepath.Join(dir, "appnode")
	goCmd := "go"
	if _, err := exec.LookPath(goCmd); err != nil {
		goCmd = "/usr/local/go/bin/go"
	}
	if out, err := exec.Command(goCmd, "build", "-o", appnodeBin, "github.com/appnode/appnode/cmd/appnode").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building appnode: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// goleak exits the process itself, so the build is removed in Run.
	goleak.VerifyTestMain(cleanup{m, dir})
}

// cleanup removes the build once the tests have run.
type cleanup struct {
	m   *testing.M
	dir string
}

func (c cleanup) Run() int {
	defer os.RemoveAll(c.dir)
	return c.m.Run()
}

// toolOrSkip finds an external tool; without it the test fails under CI
// (which installs it) and is skipped elsewhere, saying how to get it.
func toolOrSkip(t *testing.T, tool, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/bin", "/usr/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, tool)); err == nil {
			return filepath.Join(dir, tool)
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing under CI: install Debian package %s (.ci/run does)", tool, debianPackage)
	}
	t.Skipf("%s not found: apt-get install %s to run this test", tool, debianPackage)
	return ""
}

// cluster is one test's nodes: their own state directory, name service
// port and cookie, every listener on 127.0.0.1.
type cluster struct {
	t         *testing.T
	dir       string
	namesPort int
	host      string
	mu        sync.Mutex
	procs     map[string]*proc
}

type proc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser // kept open: the console ends at EOF
	url    string
	exited chan struct{}
	out    bytes.Buffer // stdout and stderr, for a failing test's log
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, dir: t.TempDir(), namesPort: testenv.FreePort(t), host: names.ShortHostname(), procs: map[string]*proc{}}
	// The test runs the host's name service itself, so that it ends with
	// the test (a node would start one that outlives it by 10 s).
	c.spawn("names", exec.Command(appnodeBin, "names-serve", "--bind", "127.0.0.1", "--port", strconv.Itoa(c.namesPort)))
	return c
}

func (c *cluster) full(name string) string { return name + "@" + c.host }

func (c *cluster) env() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, cookie.EnvCookie+"=") || strings.HasPrefix(kv, cookie.EnvCookieFile+"=") || strings.HasPrefix(kv, "APPNODE_HTTP_TOKEN=")
	})
	return append(env,
		"APPNODE_STATE_DIR="+c.dir,
		fmt.Sprintf("APPNODE_NAMES_PORT=%d", c.namesPort),
		cookie.EnvCookieFile+"="+filepath.Join(c.dir, "cookie"))
}

func (c *cluster) spawn(name string, cmd *exec.Cmd) *proc {
	c.t.Helper()
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	cmd.Env = c.env()
	cmd.Stdout, cmd.Stderr = &syncWriter{w: &p.out}, &syncWriter{w: &p.out}
	// A group of its own, so that cleanup kills what it started too
	// (nginx's workers, which hold its output pipe).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	c.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			c.t.Errorf("%s (pid %d) did not exit after SIGKILL", name, cmd.Process.Pid)
		}
		p.stdin.Close()
		if c.t.Failed() {
			c.t.Logf("%s output:\n%s", name, p.output())
		}
	})
	return p
}

var outMu sync.Mutex

type syncWriter struct{ w *bytes.Buffer }

func (s *syncWriter) Write(b []byte) (int, error) {
	outMu.Lock()
	defer outMu.Unlock()
	return s.w.Write(b)
}

func (p *proc) output() string {
	outMu.Lock()
	defer outMu.Unlock()
	return p.out.String()
}

// start runs node name with its console on a pipe, waits until it answers
// `appnode rpc NAME http`, and records its front door's URL.
func (c *cluster) start(name string) *proc {
	c.t.Helper()
	p := c.spawn(name, exec.Command(appnodeBin, "--bind", "127.0.0.1", name))
	testenv.WaitFor(c.t, 20*time.Second, name+" to answer rpc http", func() bool {
		out, err := c.rpc(name, "http")
		if err != nil {
			return false
		}
		p.url = strings.TrimSpace(out)
		return strings.HasPrefix(p.url, "http://127.0.0.1:")
	})
	return p
}

// rpc runs `appnode rpc NAME@HOST COMMAND...`.
func (c *cluster) rpc(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, appnodeBin, append([]string{"rpc", c.full(name)}, args...)...)
	cmd.Env = c.env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// connect joins b to a's cluster with `appnode rpc a connect b`.
func (c *cluster) connect(a, b string) {
	c.t.Helper()
	if out, err := c.rpc(a, "connect", c.full(b)); err != nil || strings.TrimSpace(out) != "true" {
		c.t.Fatalf("connect %s %s: %v %s", a, b, err, out)
	}
}

// three starts n1, n2, n3 and connects them.
func (c *cluster) three() {
	c.t.Helper()
	for _, n := range []string{"n1", "n2", "n3"} {
		c.start(n)
	}
	c.connect("n1", "n2")
	c.connect("n1", "n3")
	testenv.WaitFor(c.t, 20*time.Second, "every node to be ready", func() bool {
		for _, n := range []string{"n1", "n2", "n3"} {
			if r := get(c.t, c.url(n)+"/readyz"); r.status != 200 {
				return false
			}
		}
		return true
	})
}

func (c *cluster) url(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name].url
}

// kill9 kills node name with SIGKILL and waits for it to be gone.
func (c *cluster) kill9(name string) {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[name]
	c.mu.Unlock()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s did not die", name)
	}
}

type reply struct {
	status int
	body   map[string]any
	raw    string
	err    error // the request got no HTTP answer
}

func (r reply) code() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (r reply) outcome() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["outcome"].(string)
	return s
}

var client = &http.Client{Timeout: 20 * time.Second}

func do(t *testing.T, method, url, body string, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

func get(t *testing.T, url string) reply { return do(t, "GET", url, "") }

// exitCode waits for node name to exit by itself and returns its code.
func (c *cluster) exitCode(name string, within time.Duration) (int, bool) {
	c.mu.Lock()
	p := c.procs[name]
	c.mu.Unlock()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(within):
		return 0, false
	}
}
