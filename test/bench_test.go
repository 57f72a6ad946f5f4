package test

// Tests of `appnode bench`: short smoke runs of the built binary against
// spawned clusters (figures are checked for sanity, never for speed). The
// unit tests of its arithmetic are in package bench.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/procs"
	"github.com/appnode/appnode/internal/testenv"
)

// benchLimit bounds one short bench run, start to exit. Passing runs take
// a few seconds.
const benchLimit = 90 * time.Second

// runBenchCmd runs `appnode bench ARGS` to completion and returns its
// stdout, stderr and exit code.
func runBenchCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), benchLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, appnodeBin, append([]string{"bench"}, args...)...)
	cmd.Env = append(h.env(), "TMPDIR="+t.TempDir())
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("appnode bench %v did not exit within %v; stderr:\n%s", args, benchLimit, errOut.String())
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("appnode bench %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// assertGone fails the test if any process in pids is still running.
func assertGone(t *testing.T, what string, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s: pid %d still exists after the bench exited (kill -0: %v)", what, pid, err)
		}
	}
}

var pidRE = regexp.MustCompile(`\(pid (\d+)\)`)

// pidsIn finds every "(pid N)" in the bench's notes.
func pidsIn(s string) []int {
	var pids []int
	for _, m := range pidRE.FindAllStringSubmatch(s, -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

func TestBenchSmokeTables(t *testing.T) {
	out, errOut, code := runBenchCmd(t, "--spawn", "3", "--duration", "1s", "--clients", "4", "--players", "50")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	t.Logf("stdout:\n%s", out)
	var row []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "appnode" {
			row = f
		}
	}
	// appnode  requests  rewards/s  mean  p50  p90  p99  p99.9  max  errors
	if len(row) != 10 {
		t.Fatalf("no appnode row with 9 figures in:\n%s", out)
	}
	if n, err := strconv.Atoi(row[1]); err != nil || n <= 0 {
		t.Errorf("requests %q, want a positive count", row[1])
	}
	if v, err := strconv.ParseFloat(row[2], 64); err != nil || v <= 0 {
		t.Errorf("rewards/s %q, want a positive rate", row[2])
	}
	if d, err := time.ParseDuration(strings.ReplaceAll(row[4], "µ", "u")); err != nil || d <= 0 {
		t.Errorf("p50 %q, want a positive duration", row[4])
	}
	if _, err := strconv.Atoi(row[9]); err != nil {
		t.Errorf("errors %q, want a count", row[9])
	}
	if !strings.Contains(out, "errors: none") && !strings.Contains(out, "errors (every failed attempt") {
		t.Errorf("no errors section in:\n%s", out)
	}
	pids := pidsIn(errOut)
	if len(pids) != 3 {
		t.Fatalf("want the 3 nodes' pids in the notes, got %v:\n%s", pids, errOut)
	}
	assertGone(t, "spawned node", pids)
}

func TestBenchSmokeJSONFloorKill(t *testing.T) {
	out, errOut, code := runBenchCmd(t, "--spawn", "3", "--duration", "2s", "--kill-after", "1s",
		"--clients", "4", "--players", "50", "--entry", "other", "--floor", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	var rep struct {
		Throughput float64 `json:"throughput"`
		P50Us      float64 `json:"p50_us"`
		P99Us      float64 `json:"p99_us"`
		Errors     *int64  `json:"errors"`
		Nodes      []struct {
			Name  string `json:"name"`
			PID   int    `json:"pid"`
			Owned int    `json:"players_owned"`
		} `json:"nodes"`
		Floor *struct {
			Throughput float64 `json:"throughput"`
			P50Us      float64 `json:"p50_us"`
			Hop        *struct {
				P50Us float64 `json:"p50_us"`
			} `json:"hop"`
		} `json:"floor"`
		Ratio *struct {
			P50        float64 `json:"p50"`
			Throughput float64 `json:"throughput"`
		} `json:"ratio_to_floor"`
		Kill *struct {
			Node           string   `json:"node"`
			LongestStallMs float64  `json:"longest_stall_ms"`
			RecoveryMs     *float64 `json:"recovery_ms"`
		} `json:"kill"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	t.Logf("throughput %.0f/s p50 %.0fus p99 %.0fus errors %v; floor %+v; ratio %+v; kill %+v",
		rep.Throughput, rep.P50Us, rep.P99Us, *rep.Errors, rep.Floor, rep.Ratio, rep.Kill)
	switch {
	case rep.Throughput <= 0 || rep.P50Us <= 0 || rep.P99Us < rep.P50Us:
		t.Errorf("throughput %v, p50_us %v, p99_us %v: want positive figures, p99 >= p50", rep.Throughput, rep.P50Us, rep.P99Us)
	case rep.Errors == nil:
		t.Errorf("no errors key")
	case rep.Floor == nil || rep.Floor.Throughput <= 0 || rep.Floor.P50Us <= 0:
		t.Errorf("floor %+v: want positive throughput and p50_us", rep.Floor)
	case rep.Floor.Hop == nil || rep.Floor.Hop.P50Us <= 0:
		t.Errorf("entry other: want the floor's one-hop figure")
	case rep.Ratio == nil || rep.Ratio.P50 <= 0 || rep.Ratio.Throughput <= 0:
		t.Errorf("ratio_to_floor %+v: want positive ratios", rep.Ratio)
	case len(rep.Nodes) != 3:
		t.Errorf("nodes %+v, want 3", rep.Nodes)
	case rep.Kill == nil || rep.Kill.Node != rep.Nodes[2].Name:
		t.Errorf("kill %+v: want the last node, %s", rep.Kill, rep.Nodes[2].Name)
	case rep.Nodes[0].Owned+rep.Nodes[1].Owned+rep.Nodes[2].Owned != 50 || rep.Nodes[0].Owned == 0 || rep.Nodes[1].Owned == 0 || rep.Nodes[2].Owned == 0:
		t.Errorf("players owned %+v: want the 50 spread over all three", rep.Nodes)
	}
	var pids []int
	for _, n := range rep.Nodes {
		pids = append(pids, n.PID)
	}
	assertGone(t, "spawned node", pids)
	assertGone(t, "floor server", pidsIn(errOut[strings.Index(errOut, "floor servers up"):]))
}

func TestBenchPopulate(t *testing.T) {
	out, errOut, code := runBenchCmd(t, "--spawn", "2", "--populate", "500", "--settle", "1s", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	var rep struct {
		Populate *struct {
			Players int `json:"players"`
			Nodes   []struct {
				RSSBefore int64 `json:"rss_before"`
				RSSAfter  int64 `json:"rss_after"`
			} `json:"nodes"`
			BytesPerCopy *float64 `json:"bytes_per_copy"`
		} `json:"populate"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	p := rep.Populate
	if p == nil || p.Players != 500 || len(p.Nodes) != 2 || p.BytesPerCopy == nil {
		t.Fatalf("populate %+v: want 500 players, 2 nodes and bytes_per_copy", p)
	}
	for _, n := range p.Nodes {
		if n.RSSBefore <= 0 || n.RSSAfter <= 0 {
			t.Errorf("node RSS %+v: want positive readings", n)
		}
	}
}

// TestBenchInterrupt stops the bench with Ctrl-C (SIGINT) during its load:
// it must exit, and take every node it started with it.
func TestBenchInterrupt(t *testing.T) {
	h := newHarness(t)
	p, err := procs.Start(procs.Config{
		Name: "appnode bench",
		Path: appnodeBin,
		Args: []string{"bench", "--spawn", "3", "--duration", "5m", "--clients", "2", "--players", "20", "--floor"},
		Env:  append(h.env(), "TMPDIR="+t.TempDir()),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = p.Kill9() })
	testenv.Eventually(t, benchLimit, "the bench's load starts", func() (bool, string) {
		notes := p.Lines()
		if p.Exited() {
			t.Fatalf("bench exited before its load started: %v\n%s", p.Err(), strings.Join(notes, "\n"))
		}
		started := slices.ContainsFunc(notes, func(l string) bool { return strings.Contains(l, "load:") })
		return started, fmt.Sprintf("notes so far:\n%s", strings.Join(notes, "\n"))
	})
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = p.Wait(benchLimit)
	notes := strings.Join(p.Lines(), "\n")
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 130 {
		t.Errorf("after SIGINT the bench exited with %v, want status 130; its notes:\n%s", err, notes)
	}
	pids := pidsIn(notes)
	if len(pids) != 10 {
		t.Fatalf("want the pids of 3 nodes and 7 floor servers (the transport's, the bare wire's and the bare mesh's) in the notes, got %v:\n%s", pids, notes)
	}
	assertGone(t, "process started by the bench", pids)
}

func TestBenchFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--spawn", "1"},
		{"--spawn", "3", "--nodes", "a@h"},
		{"--spawn", "2", "--kill-after", "1s"},
		{"--spawn", "3", "--kill-after", "5s", "--duration", "2s"},
		{"--nodes", "a@h", "--populate", "10"},
		{"--spawn", "3", "--entry", "nearest"},
		{"--spawn", "2", "--owners", "3"},
		{"--spawn", "2", "--owners", "-1"},
	} {
		_, errOut, code := runBenchCmd(t, args...)
		if code != 2 || !strings.Contains(errOut, "appnode bench: ") {
			t.Errorf("bench %v: exit %d, stderr %q; want exit 2 with a reason", args, code, errOut)
		}
	}
}

// --owners 1 creates every player at the first node: with two nodes and
// entry owner, each reward goes client -> that node -> its keeper, the
// bare wire's own shape, and none is forwarded.
func TestBenchOwnersAtTheFirstNode(t *testing.T) {
	out, errOut, code := runBenchCmd(t, "--spawn", "2", "--owners", "1", "--entry", "owner",
		"--duration", "1s", "--clients", "2", "--players", "40", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	var rep struct {
		Requests int64 `json:"requests"`
		Owner    *struct {
			Requests int64 `json:"requests"`
		} `json:"owner"`
		Nodes []struct {
			Name  string `json:"name"`
			Owned int    `json:"players_owned"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	switch {
	case len(rep.Nodes) != 2 || rep.Nodes[0].Owned != 40 || rep.Nodes[1].Owned != 0:
		t.Errorf("players owned %+v: want all 40 at the first node", rep.Nodes)
	case rep.Requests == 0 || rep.Owner == nil || rep.Owner.Requests != rep.Requests:
		t.Errorf("%d requests, to the owner %+v: want all of them sent to the owner", rep.Requests, rep.Owner)
	}
}

// `appnode bench --http` drives the nodes' HTTP front doors, as a game
// server would, and reports the same figures.
func TestBenchOverHTTP(t *testing.T) {
	out, errOut, code := runBenchCmd(t, "--spawn", "3", "--http", "--duration", "1s", "--clients", "4", "--players", "50", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	var r struct {
		HTTP       bool    `json:"http"`
		Throughput float64 `json:"throughput"`
		Requests   int64   `json:"requests"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out)
	}
	if !r.HTTP || r.Throughput <= 0 || r.Requests <= 0 {
		t.Fatalf("over HTTP: %+v, want http true and rewards served\n%s", r, out)
	}
	assertGone(t, "spawned node", pidsIn(errOut))
}
