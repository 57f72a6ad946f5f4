package bench

// What `appnode bench` reports: one struct, printed as tables or as JSON.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/appnode/appnode/internal/procs"
)

type benchReport struct {
	Command   string     `json:"command"`
	Machine   machine    `json:"machine"`
	Nodes     []nodeInfo `json:"nodes"`
	Spawned   bool       `json:"spawned"`
	Entry     string     `json:"entry"`
	HTTP      bool       `json:"http,omitempty"` // rewards went through the nodes' HTTP front doors
	Clients   int        `json:"clients"`
	Players   int        `json:"players"`
	DurationS float64    `json:"duration_s"` // of each phase, as measured

	// The appnode figures: the load phase, or with --populate the rewards
	// that created the players.
	*latencyStats
	Owner      *latencyStats `json:"owner,omitempty"`     // sent to the player's owner
	Forwarded  *latencyStats `json:"forwarded,omitempty"` // sent to a node that forwarded it
	ErrorKinds []errorOut    `json:"error_kinds"`
	// CPUCores is the CPU each process used during the phase, in cores:
	// on a small machine, the load generator's share limits the rest.
	CPUCores map[string]float64 `json:"cpu_cores,omitempty"`
	Lost     []lostOut          `json:"connections_lost,omitempty"`

	// NodesCPUUsPerReward is the CPU time the nodes used per reward, all
	// of them together, in microseconds (from CPUCores).
	NodesCPUUsPerReward float64 `json:"nodes_cpu_us_per_reward,omitempty"`

	Floor     *floorReport    `json:"floor,omitempty"`
	Ratio     *ratios         `json:"ratio_to_floor,omitempty"`
	Bare      *floorReport    `json:"bare_wire,omitempty"` // the same load over plain msgpack on TCP (bare.go)
	Mesh      *floorReport    `json:"bare_mesh,omitempty"` // the bare wire in the cluster's shape (bare.go)
	MeshRatio *ratios         `json:"ratio_to_mesh,omitempty"`
	Kill      *killReport     `json:"kill,omitempty"`
	Timeline  []int64         `json:"timeline_100ms,omitempty"` // rewards per 100 ms, with --kill-after
	Populate  *populateReport `json:"populate,omitempty"`

	Interrupted bool `json:"interrupted,omitempty"`
}

type machine struct {
	CPUs int    `json:"cpus"`
	CPU  string `json:"cpu_model"`
	OS   string `json:"os"`
	Go   string `json:"go"`
}

type nodeInfo struct {
	Name string `json:"name"`
	PID  int    `json:"pid,omitempty"` // spawned nodes only
	// Owned is how many of the bench's players it owned when the load
	// began (--owners says which nodes create them).
	Owned int `json:"players_owned"`
}

// countOwners records how many players each node owns, as checkOwners
// left the bench's beliefs.
func (r *benchReport) countOwners(pt *playerTable) {
	for i := range pt.owner {
		if o := int(pt.owner[i].Load()); o >= 0 && o < len(r.Nodes) {
			r.Nodes[o].Owned++
		}
	}
}

type latencyStats struct {
	Requests   int64   `json:"requests"`
	Throughput float64 `json:"throughput"` // rewards/s
	MeanUs     float64 `json:"mean_us"`
	P50Us      float64 `json:"p50_us"`
	P90Us      float64 `json:"p90_us"`
	P99Us      float64 `json:"p99_us"`
	P999Us     float64 `json:"p999_us"`
	MaxUs      float64 `json:"max_us"`
	Errors     int64   `json:"errors"`
}

type errorOut struct {
	Class   string `json:"class"` // owner or forwarded
	Kind    string `json:"kind"`
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

type lostOut struct {
	Node string  `json:"node"`
	AtS  float64 `json:"at_s"`
	Why  string  `json:"why"`
}

type floorReport struct {
	latencyStats
	// Hop is one plain request and answer, no forward: what a forward
	// adds to a reward. Measured when some requests are forwarded.
	Hop      *latencyStats      `json:"hop,omitempty"`
	CPUCores map[string]float64 `json:"cpu_cores,omitempty"`
	// ServersCPUUsPerRequest is the CPU time its two servers used per
	// request, together, in microseconds.
	ServersCPUUsPerRequest float64 `json:"servers_cpu_us_per_request,omitempty"`
}

// cpuPerRequest is the CPU time the named processes used per request, in
// microseconds, from their cores over a phase at throughput requests/s.
func cpuPerRequest(cores map[string]float64, throughput float64, names ...string) float64 {
	if throughput <= 0 {
		return 0
	}
	var sum float64
	for _, n := range names {
		sum += cores[n]
	}
	return sum / throughput * 1e6
}

// cells are q as a row of the load table, under its columns.
func (q *ratios) cells() []string {
	x := func(v float64) string { return fmt.Sprintf("%.2fx", v) }
	return []string{"", x(q.Throughput), "", x(q.P50), x(q.P90), x(q.P99), x(q.P999), x(q.Max), ""}
}

// ratios are appnode's figures divided by the floor's: above 1 is slower
// for latencies, below 1 is slower for throughput.
type ratios struct {
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50"`
	P90        float64 `json:"p90"`
	P99        float64 `json:"p99"`
	P999       float64 `json:"p999"`
	Max        float64 `json:"max"`
	// P50MinusHop is (p50 - hop p50) / floor p50: the forwarded target is
	// "at most 1.3x the floor's p50 plus one hop".
	P50MinusHop *float64 `json:"p50_minus_hop,omitempty"`
}

type killReport struct {
	Node           string   `json:"node"`
	AtS            float64  `json:"at_s"`
	LongestStallMs float64  `json:"longest_stall_ms"`     // any player
	ItsPlayersMs   float64  `json:"its_players_stall_ms"` // players the killed node owned
	SlowRequests   int64    `json:"requests_over_1s"`
	ErrorsAfter    int64    `json:"errors_after_kill"`
	PreKillRate    float64  `json:"pre_kill_throughput"`
	RecoveryMs     *float64 `json:"recovery_ms"` // to 80% of the pre-kill rate for 0.5 s; null: not within the run
}

type populateReport struct {
	Players      int       `json:"players"`
	Seconds      float64   `json:"seconds"`
	Nodes        []nodeMem `json:"nodes"`
	GrowthBytes  int64     `json:"rss_growth_bytes"`
	BytesPerCopy float64   `json:"bytes_per_copy"` // growth / (2 copies x players)
}

type nodeMem struct {
	Name      string `json:"name"`
	RSSBefore int64  `json:"rss_before"`
	RSSAfter  int64  `json:"rss_after"`
}

func (b *bench) newReport() *benchReport {
	r := &benchReport{
		Command:    strings.Join(append([]string{"appnode", "bench"}, b.cfg.args...), " "),
		Machine:    machineInfo(),
		Spawned:    b.cfg.spawn > 0,
		Entry:      b.cfg.entry.String(),
		HTTP:       b.cfg.http,
		Clients:    b.cfg.clients,
		Players:    b.cfg.players,
		ErrorKinds: []errorOut{},
	}
	for i, t := range b.targets {
		ni := nodeInfo{Name: t.name}
		if i < len(b.nodes) {
			ni.PID = b.nodes[i].PID()
		}
		r.Nodes = append(r.Nodes, ni)
	}
	return r
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func statsOf(h *histogram, elapsed time.Duration, errs int64) *latencyStats {
	s := &latencyStats{
		Requests: int64(h.n),
		MeanUs:   us(h.mean()),
		P50Us:    us(h.quantile(0.50)),
		P90Us:    us(h.quantile(0.90)),
		P99Us:    us(h.quantile(0.99)),
		P999Us:   us(h.quantile(0.999)),
		MaxUs:    us(h.max),
		Errors:   errs,
	}
	if elapsed > 0 {
		s.Throughput = float64(h.n) / elapsed.Seconds()
	}
	return s
}

func tallyCount(t errorTally) int64 {
	var n int64
	for _, e := range t {
		n += e.count
	}
	return n
}

func (r *benchReport) setLoad(res *phaseResult) {
	r.DurationS = res.elapsed.Seconds()
	r.Interrupted = res.interrupted
	r.latencyStats = statsOf(&res.all, res.elapsed, res.errors())
	r.CPUCores = res.cpu
	names := make([]string, len(r.Nodes))
	for i, n := range r.Nodes {
		names[i] = n.Name
	}
	r.NodesCPUUsPerReward = cpuPerRequest(res.cpu, r.Throughput, names...)
	r.Owner = statsOf(&res.lat[classOwner], res.elapsed, tallyCount(res.errs[classOwner]))
	r.Forwarded = statsOf(&res.lat[classFwd], res.elapsed, tallyCount(res.errs[classFwd]))
	for c, t := range res.errs {
		for kind, e := range t {
			r.ErrorKinds = append(r.ErrorKinds, errorOut{Class: classNames[c], Kind: kind, Count: e.count, Example: e.example})
		}
	}
	sort.Slice(r.ErrorKinds, func(i, j int) bool { return r.ErrorKinds[i].Count > r.ErrorKinds[j].Count })
	for _, d := range res.down {
		r.Lost = append(r.Lost, lostOut{Node: d.node, AtS: d.at.Seconds(), Why: d.why})
	}
	if k := res.kill; k != nil {
		r.Kill = &killReport{
			Node:           k.node,
			AtS:            k.at.Seconds(),
			LongestStallMs: float64(k.maxStall) / float64(time.Millisecond),
			ItsPlayersMs:   float64(k.maxStallKilled) / float64(time.Millisecond),
			SlowRequests:   k.slow,
			ErrorsAfter:    k.errsAfter,
			PreKillRate:    k.preRate,
		}
		if k.recovered {
			ms := float64(k.recoveredAfter) / float64(time.Millisecond)
			r.Kill.RecoveryMs = &ms
		}
		r.Timeline = res.buckets
	}
}

// setBare records the bare wire's phase.
func (r *benchReport) setBare(bare *phaseResult) {
	r.Bare = &floorReport{latencyStats: *statsOf(&bare.all, bare.elapsed, bare.errors()), CPUCores: bare.cpu}
	r.Bare.ServersCPUUsPerRequest = cpuPerRequest(bare.cpu, r.Bare.Throughput, "bare-a", "bare-b")
	r.Interrupted = r.Interrupted || bare.interrupted
}

// setMesh records the bare mesh's phase, of size servers.
func (r *benchReport) setMesh(mesh *phaseResult, size int) {
	r.Mesh = &floorReport{latencyStats: *statsOf(&mesh.all, mesh.elapsed, mesh.errors()), CPUCores: mesh.cpu}
	names := make([]string, size)
	for i := range names {
		names[i] = fmt.Sprintf("mesh-%d", i+1)
	}
	r.Mesh.ServersCPUUsPerRequest = cpuPerRequest(mesh.cpu, r.Mesh.Throughput, names...)
	r.MeshRatio = ratiosTo(r.latencyStats, &r.Mesh.latencyStats)
	r.Interrupted = r.Interrupted || mesh.interrupted
}

// ratiosTo is appnode's figures a over another phase's b.
func ratiosTo(a, b *latencyStats) *ratios {
	return &ratios{
		Throughput: div(a.Throughput, b.Throughput),
		P50:        div(a.P50Us, b.P50Us),
		P90:        div(a.P90Us, b.P90Us),
		P99:        div(a.P99Us, b.P99Us),
		P999:       div(a.P999Us, b.P999Us),
		Max:        div(a.MaxUs, b.MaxUs),
	}
}

// div is a/b, or 0 when b is (a phase with no requests).
func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *benchReport) setFloor(floor, hop *phaseResult) {
	r.Floor = &floorReport{latencyStats: *statsOf(&floor.all, floor.elapsed, floor.errors()), CPUCores: floor.cpu}
	r.Floor.ServersCPUUsPerRequest = cpuPerRequest(floor.cpu, r.Floor.Throughput, "floor-a", "floor-b")
	f := &r.Floor.latencyStats
	r.Ratio = ratiosTo(r.latencyStats, f)
	if hop != nil {
		r.Floor.Hop = statsOf(&hop.all, hop.elapsed, hop.errors())
		x := div(r.P50Us-r.Floor.Hop.P50Us, f.P50Us)
		r.Ratio.P50MinusHop = &x
		r.Interrupted = r.Interrupted || hop.interrupted
	}
	r.Interrupted = r.Interrupted || floor.interrupted
}

func (r *benchReport) setPopulate(players int, took time.Duration, lat *histogram, errs int64, nodes []*procs.Proc, before, after []int64) {
	r.Entry = "owner"
	r.Players = players
	r.DurationS = took.Seconds()
	r.latencyStats = statsOf(lat, took, errs)
	p := &populateReport{Players: players, Seconds: took.Seconds()}
	for i, c := range nodes {
		p.Nodes = append(p.Nodes, nodeMem{Name: c.Name(), RSSBefore: before[i], RSSAfter: after[i]})
		p.GrowthBytes += after[i] - before[i]
	}
	p.BytesPerCopy = float64(p.GrowthBytes) / float64(2*players)
	r.Populate = p
}

func writeJSON(w io.Writer, r *benchReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ---- tables ----

func fmtDur(microseconds float64) string {
	d := time.Duration(microseconds * float64(time.Microsecond))
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", microseconds)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", microseconds/1e3)
	}
	return fmt.Sprintf("%.2fs", microseconds/1e6)
}

func fmtBytes(n int64) string {
	switch a := max(n, -n); {
	case a >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case a >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case a >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func printReport(w io.Writer, r *benchReport) error {
	var sb strings.Builder
	what := "nodes"
	if r.Spawned {
		what = "spawned nodes"
	}
	if r.Populate != nil {
		fmt.Fprintf(&sb, "appnode bench: %d %s, populate %d players\n", len(r.Nodes), what, r.Populate.Players)
	} else {
		over := ""
		if r.HTTP {
			over = ", rewards over HTTP"
		}
		fmt.Fprintf(&sb, "appnode bench: %d %s, entry %s%s, %d clients, %d players, %.1fs per phase\n",
			len(r.Nodes), what, r.Entry, over, r.Clients, r.Players, r.DurationS)
	}
	fmt.Fprintf(&sb, "machine: %d CPUs, %s, %s, %s\n", r.Machine.CPUs, r.Machine.CPU, r.Machine.OS, r.Machine.Go)
	if r.Populate == nil && len(r.Nodes) > 0 {
		owned := make([]string, len(r.Nodes))
		for i, n := range r.Nodes {
			owned[i] = fmt.Sprintf("%s %d", n.Name, n.Owned)
		}
		fmt.Fprintf(&sb, "players owned when the load began: %s\n", strings.Join(owned, ", "))
	}
	if r.Interrupted {
		sb.WriteString("INTERRUPTED: the figures cover only part of the run\n")
	}
	sb.WriteString("\n")

	if r.Populate != nil {
		printPopulate(&sb, r)
	} else {
		printLoad(&sb, r)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// printCPU prints the CPU each phase's processes used, and per request.
func printCPU(sb *strings.Builder, r *benchReport) {
	if len(r.CPUCores) > 0 {
		fmt.Fprintf(sb, "\nCPU used (cores of %d), appnode phase: %s\n", r.Machine.CPUs, fmtCores(r.CPUCores))
	}
	if r.Floor != nil && len(r.Floor.CPUCores) > 0 {
		fmt.Fprintf(sb, "CPU used (cores of %d), floor phase:   %s\n", r.Machine.CPUs, fmtCores(r.Floor.CPUCores))
	}
	if r.Bare != nil && len(r.Bare.CPUCores) > 0 {
		fmt.Fprintf(sb, "CPU used (cores of %d), bare wire:     %s\n", r.Machine.CPUs, fmtCores(r.Bare.CPUCores))
	}
	if r.Mesh != nil && len(r.Mesh.CPUCores) > 0 {
		fmt.Fprintf(sb, "CPU used (cores of %d), bare mesh:     %s\n", r.Machine.CPUs, fmtCores(r.Mesh.CPUCores))
	}
	if r.NodesCPUUsPerReward > 0 {
		fmt.Fprintf(sb, "CPU per request: nodes %s", fmtDur(r.NodesCPUUsPerReward))
		if r.Floor != nil {
			fmt.Fprintf(sb, ", floor servers %s", fmtDur(r.Floor.ServersCPUUsPerRequest))
		}
		if r.Bare != nil {
			fmt.Fprintf(sb, ", bare wire servers %s", fmtDur(r.Bare.ServersCPUUsPerRequest))
		}
		if r.Mesh != nil {
			fmt.Fprintf(sb, ", bare mesh servers %s", fmtDur(r.Mesh.ServersCPUUsPerRequest))
		}
		fmt.Fprintln(sb)
	}
}

func printLoad(sb *strings.Builder, r *benchReport) {
	type line struct {
		name  string
		cells []string
	}
	var lines []line
	row := func(name string, s *latencyStats) {
		lines = append(lines, line{name, []string{strconv.FormatInt(s.Requests, 10), fmt.Sprintf("%.0f", s.Throughput),
			fmtDur(s.MeanUs), fmtDur(s.P50Us), fmtDur(s.P90Us), fmtDur(s.P99Us), fmtDur(s.P999Us), fmtDur(s.MaxUs),
			strconv.FormatInt(s.Errors, 10)}})
	}
	lines = append(lines, line{"", []string{"requests", "rewards/s", "mean", "p50", "p90", "p99", "p99.9", "max", "errors"}})
	row("appnode", r.latencyStats)
	if r.Owner.Requests+r.Owner.Errors > 0 && r.Forwarded.Requests+r.Forwarded.Errors > 0 {
		row("  sent to the owner", r.Owner)
		row("  forwarded", r.Forwarded)
	}
	if r.Floor != nil {
		row("floor (forward+ack)", &r.Floor.latencyStats)
		if r.Floor.Hop != nil {
			row("one hop", r.Floor.Hop)
		}
		lines = append(lines, line{"appnode / floor", r.Ratio.cells()})
	}
	if r.Bare != nil {
		row("bare wire (forward+ack)", &r.Bare.latencyStats)
	}
	if r.Mesh != nil {
		row("bare mesh (owner+keeper)", &r.Mesh.latencyStats)
		lines = append(lines, line{"appnode / bare mesh", r.MeshRatio.cells()})
	}
	table := make([][]string, len(lines))
	for i, l := range lines {
		table[i] = append([]string{l.name}, l.cells...)
	}
	writeTable(sb, table)
	if r.Ratio != nil && r.Ratio.P50MinusHop != nil {
		fmt.Fprintf(sb, "\np50 minus one hop, over the floor's p50: %.2fx\n", *r.Ratio.P50MinusHop)
	}
	printCPU(sb, r)

	if k := r.Kill; k != nil {
		fmt.Fprintf(sb, "\nkill -9 of %s at %.2fs:\n", k.Node, k.AtS)
		fmt.Fprintf(sb, "  longest stall of any player: %s (of a player it owned: %s); %d rewards took over 1s\n",
			fmtDur(k.LongestStallMs*1e3), fmtDur(k.ItsPlayersMs*1e3), k.SlowRequests)
		fmt.Fprintf(sb, "  errors after the kill: %d (each retried until it succeeded)\n", k.ErrorsAfter)
		if k.RecoveryMs != nil {
			fmt.Fprintf(sb, "  throughput back to 80%% of the pre-kill %.0f rewards/s after %s\n", k.PreKillRate, fmtDur(*k.RecoveryMs*1e3))
		} else {
			fmt.Fprintf(sb, "  throughput NOT back to 80%% of the pre-kill %.0f rewards/s by the end of the run\n", k.PreKillRate)
		}
	}
	for _, l := range r.Lost {
		fmt.Fprintf(sb, "\nconnection to %s lost at %.2fs: %s\n", l.Node, l.AtS, l.Why)
	}
	printErrors(sb, r.ErrorKinds)
}

func printErrors(sb *strings.Builder, kinds []errorOut) {
	if len(kinds) == 0 {
		sb.WriteString("\nerrors: none\n")
		return
	}
	sb.WriteString("\nerrors (every failed attempt; the reward was retried):\n")
	tw := tabwriter.NewWriter(sb, 0, 0, 2, ' ', 0)
	for _, e := range kinds {
		ex := e.Example
		if len(ex) > 160 {
			ex = ex[:160] + "..."
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\te.g. %s\n", e.Count, e.Class, e.Kind, ex)
	}
	tw.Flush()
}

func printPopulate(sb *strings.Builder, r *benchReport) {
	p := r.Populate
	fmt.Fprintf(sb, "created %d players in %.1fs: %.0f rewards/s, p50 %s, p99 %s, max %s, %d failed attempts (retried)\n\n",
		p.Players, p.Seconds, r.Throughput, fmtDur(r.P50Us), fmtDur(r.P99Us), fmtDur(r.MaxUs), r.Errors)
	table := [][]string{{"node", "RSS before", "RSS after", "growth"}}
	var before, after int64
	for _, n := range p.Nodes {
		table = append(table, []string{n.Name, fmtBytes(n.RSSBefore), fmtBytes(n.RSSAfter), fmtBytes(n.RSSAfter - n.RSSBefore)})
		before += n.RSSBefore
		after += n.RSSAfter
	}
	table = append(table, []string{"total", fmtBytes(before), fmtBytes(after), fmtBytes(after - before)})
	writeTable(sb, table)
	fmt.Fprintf(sb, "\nbytes per player copy: %.0f (growth summed over the nodes / (2 copies x %d players))\n", p.BytesPerCopy, p.Players)
}

// writeTable writes rows of cells in columns: the first left-aligned, the
// others (figures) right-aligned.
func writeTable(sb *strings.Builder, rows [][]string) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		for i, c := range r {
			if i == 0 {
				fmt.Fprintf(sb, "%-*s", widths[0], c) // fmt counts runes, as widths do
			} else {
				fmt.Fprintf(sb, "  %*s", widths[i], c)
			}
		}
		sb.WriteString("\n")
	}
}

// fmtCores lists CPU use by process, the load generator first, and only
// the processes that used some.
func fmtCores(m map[string]float64) string {
	var names []string
	for n, v := range m {
		if n != benchProcName && n != restProcName && v >= 0.005 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	parts := []string{fmt.Sprintf("%s %.2f", benchProcName, m[benchProcName])}
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.2f", n, m[n]))
	}
	if v, ok := m[restProcName]; ok {
		parts = append(parts, fmt.Sprintf("%s %.2f", restProcName, v))
	}
	return strings.Join(parts, ", ")
}

func machineInfo() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}
