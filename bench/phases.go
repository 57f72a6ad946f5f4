package bench

// The phases of a run: creating the players, the timed load (with the
// floor after it), and --populate's memory reading.

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appnode/appnode/wire"
)

// playerPrefix names the players. A spawned cluster is empty; on a running
// one, the bench must not touch anyone's real players.
func (b *bench) playerPrefix() string {
	if b.cfg.spawn > 0 {
		return "player"
	}
	return fmt.Sprintf("bench-%d-%x-player", os.Getpid(), time.Now().UnixNano()&0xffffff)
}

func (b *bench) progressOut() io.Writer {
	if b.cfg.progress {
		return b.stderr
	}
	return nil
}

// creators is how many targets, the first ones, create the players.
func (b *bench) creators() int {
	if b.cfg.owners > 0 {
		return b.cfg.owners
	}
	return len(b.targets)
}

// createPlayers gives every player its first reward, sending player i to
// target i mod N (N the creators), which becomes its owner. It keeps
// inflight rewards going and records their latencies and how many
// attempts failed (and were retried).
func (b *bench) createPlayers(ctx context.Context, pt *playerTable, inflight int) (*histogram, int64, time.Duration, error) {
	var next, created, attemptsFailed atomic.Int64
	var mu sync.Mutex
	lat := &histogram{}
	var failed int64
	var lastErr error
	start := time.Now()
	stopProgress := func() {}
	if w := b.progressOut(); w != nil {
		stopProgress = ticker(w, func() string {
			return fmt.Sprintf("creating players %5.1fs  %d/%d", time.Since(start).Seconds(), created.Load(), len(pt.names))
		})
	}
	var wg sync.WaitGroup
	for w := range min(inflight, len(pt.names)) {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			var mine histogram
			defer func() {
				mu.Lock()
				lat.merge(&mine)
				mu.Unlock()
			}()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(pt.names) || ctx.Err() != nil {
					return
				}
				t := i % b.creators()
				began := time.Now()
				var err error
				for attempt := range 10 {
					cctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout)
					_, err = b.targets[t].cl.Reward(cctx, pt.names[i], 1)
					cancel()
					if err == nil || ctx.Err() != nil {
						break
					}
					attemptsFailed.Add(1)
					if !sleepCtx(ctx, retryDelay(attempt, rng)) {
						break
					}
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					mu.Lock()
					failed++
					lastErr = err
					mu.Unlock()
					continue
				}
				mine.record(time.Since(began))
				pt.owner[i].Store(int32(t))
				created.Add(1)
			}
		})
	}
	wg.Wait()
	stopProgress()
	took := time.Since(start)
	if ctx.Err() != nil {
		return nil, 0, took, ctx.Err()
	}
	if failed > 0 {
		return nil, 0, took, fmt.Errorf("%d of %d players could not be created (10 attempts each); last error: %v", failed, len(pt.names), lastErr)
	}
	return lat, attemptsFailed.Load(), took, nil
}

// checkOwners asks every player's believed owner whether it is, and
// corrects the beliefs that are wrong: a reward sent to a wrong owner is
// forwarded without error, so the bench would never learn otherwise.
func (b *bench) checkOwners(ctx context.Context, pt *playerTable) error {
	var next, wrong atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range min(64, len(pt.names)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(pt.names) || ctx.Err() != nil {
					return
				}
				o := pt.owner[i].Load()
				if o < 0 {
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout)
				wr, err := b.targets[o].cl.Where(cctx, pt.names[i])
				cancel()
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				if wr.Role != wire.RolePrimary {
					wrong.Add(1)
					pt.owner[i].Store(int32(slices.IndexFunc(b.targets, func(t *target) bool { return t.name == wr.Owner.Name })))
				}
			}
		})
	}
	wg.Wait()
	if err := cmp.Or(ctx.Err(), firstErr); err != nil {
		return err
	}
	if n := wrong.Load(); n > 0 {
		b.say("%d of %d players were not owned by the node that created them (moved since? see the nodes' logs); the bench follows where they are", n, len(pt.names))
	}
	return nil
}

func (b *bench) runLoad(ctx context.Context, rep *benchReport) error {
	pt := newPlayerTable(b.playerPrefix(), b.cfg.players)
	b.say("creating %d players", b.cfg.players)
	if _, _, took, err := b.createPlayers(ctx, pt, max(b.cfg.clients, 64)); err != nil {
		return err
	} else {
		b.say("created %d players in %v", b.cfg.players, took.Round(time.Millisecond))
	}
	if err := b.checkOwners(ctx, pt); err != nil {
		return err
	}
	rep.countOwners(pt)

	l := &load{
		label:       "appnode",
		targets:     b.targets,
		players:     pt,
		entry:       b.cfg.entry,
		clients:     b.cfg.clients,
		duration:    b.cfg.duration,
		callTimeout: b.cfg.callTimeout,
		progress:    b.progressOut(),
	}
	if b.cfg.http {
		if err := b.frontDoors(ctx); err != nil {
			return err
		}
		l.label, l.http = "appnode over HTTP", b.httpClient
	}
	if b.cfg.killAfter > 0 {
		victim := len(b.nodes) - 1
		l.kill = &killPlan{after: b.cfg.killAfter, target: victim, do: func() error {
			_, err := b.nodes[victim].Kill9()
			return err
		}}
	}
	b.say("load: %d clients, entry %s, %v", b.cfg.clients, b.cfg.entry, b.cfg.duration)
	stopProfiles := b.startProfiles(ctx)
	res := b.measure(ctx, l)
	if err := stopProfiles(); err != nil {
		b.say("%v", err)
	}
	rep.setLoad(res)
	if res.kill != nil && res.kill.err != nil {
		return fmt.Errorf("the kill did not happen as planned: %w", res.kill.err)
	}
	if res.interrupted || !b.cfg.floor {
		return nil
	}
	return b.runFloor(ctx, rep)
}

// runFloor measures, with the same clients, players and duration as
// appnode's load, the baselines its numbers are read against: the floor
// (every request goes to floor-a, which forwards it to floor-b), then one
// hop and the bare wire.
func (b *bench) runFloor(ctx context.Context, rep *benchReport) error {
	floorPlayers := newPlayerTable("player", b.cfg.players)
	for i := range floorPlayers.owner {
		floorPlayers.owner[i].Store(0)
	}
	fl := &load{
		label: "floor", targets: []*target{b.floorA}, players: floorPlayers, entry: entryAny,
		clients: b.cfg.clients, duration: b.cfg.duration, callTimeout: b.cfg.callTimeout, progress: b.progressOut(),
	}
	b.say("floor: %d clients, forward + ack, %v", b.cfg.clients, b.cfg.duration)
	floorRes := b.measure(ctx, fl)
	rep.setFloor(floorRes, nil)
	if floorRes.interrupted {
		return nil
	}
	if b.cfg.entry == entryOwner {
		return b.runBare(ctx, rep, floorPlayers)
	}
	// One hop: floor-b answers at once. A forwarded reward pays one more.
	hop := &load{
		label: "one hop", targets: []*target{b.floorB}, players: floorPlayers, entry: entryAny,
		clients: b.cfg.clients, duration: b.cfg.duration, callTimeout: b.cfg.callTimeout, progress: b.progressOut(),
	}
	b.say("one hop: %d clients, direct answer, %v", b.cfg.clients, b.cfg.duration)
	hopRes := b.measure(ctx, hop)
	rep.setFloor(floorRes, hopRes)
	if hopRes.interrupted {
		return nil
	}
	return b.runBare(ctx, rep, floorPlayers)
}

// runBare measures the bare wire with the same clients, players and
// duration as the floor.
func (b *bench) runBare(ctx context.Context, rep *benchReport, players *playerTable) error {
	bl := &load{
		label: "bare wire", targets: []*target{b.bareA}, players: players, entry: entryAny,
		clients: b.cfg.clients, duration: b.cfg.duration, callTimeout: b.cfg.callTimeout, progress: b.progressOut(),
	}
	b.say("bare wire: %d clients, forward + ack over plain msgpack on TCP, %v", b.cfg.clients, b.cfg.duration)
	res := b.measure(ctx, bl)
	rep.setBare(res)
	if res.interrupted || len(b.mesh) == 0 {
		return nil
	}
	mesh := newPlayerTable("player", b.cfg.players)
	for i, name := range mesh.names {
		mesh.owner[i].Store(int32(bareHash(name) % uint32(len(b.mesh))))
	}
	ml := &load{
		label: "bare mesh", targets: b.mesh, players: mesh, entry: b.cfg.entry,
		clients: b.cfg.clients, duration: b.cfg.duration, callTimeout: b.cfg.callTimeout, progress: b.progressOut(),
	}
	b.say("bare mesh: %d clients, entry %s of %d servers, each reward passed to its player's owner, forward + ack to one of the others, %v", b.cfg.clients, b.cfg.entry, len(b.mesh), b.cfg.duration)
	rep.setMesh(b.measure(ctx, ml), len(b.mesh))
	return nil
}

// measure runs a load phase and records the CPU each process used in it.
func (b *bench) measure(ctx context.Context, l *load) *phaseResult {
	all := append(slices.Clone(b.nodes), b.floors...)
	before, start := sampleCPU(all), time.Now()
	res := l.run(ctx)
	res.cpu = coresUsed(before, sampleCPU(all), time.Since(start))
	return res
}

func (b *bench) runPopulate(ctx context.Context, rep *benchReport) error {
	b.say("reading the nodes' resident memory before (waiting up to %v for it to settle)", b.cfg.settle)
	before, err := b.settledRSS(ctx)
	if err != nil {
		return err
	}
	pt := newPlayerTable(b.playerPrefix(), b.cfg.populate)
	b.say("creating %d players, %d in flight", b.cfg.populate, populateFlight)
	lat, errs, took, err := b.createPlayers(ctx, pt, populateFlight)
	if err != nil {
		return err
	}
	b.say("created %d players in %v; reading memory after (waiting up to %v for it to settle)", b.cfg.populate, took.Round(time.Millisecond), b.cfg.settle)
	after, err := b.settledRSS(ctx)
	if err != nil {
		return err
	}
	if b.cfg.profileDir != "" {
		if err := b.saveHeapProfiles(ctx); err != nil {
			b.say("%v", err)
		}
	}
	rep.setPopulate(b.cfg.populate, took, lat, errs, b.nodes, before, after)
	return nil
}

// settledRSS reads every node's resident memory until it has not moved
// by more than 1% (or 256 KB) for 5 s, or settle has passed. The window
// is longer than a node takes to notice a burst is over and return its
// headroom to the OS (node.compactWhenIdle, 2-4 s): "at rest" means after
// that.
func (b *bench) settledRSS(ctx context.Context) ([]int64, error) {
	const every, window = 250 * time.Millisecond, 20
	deadline := time.Now().Add(b.cfg.settle)
	var samples [][]int64
	for {
		cur := make([]int64, len(b.nodes))
		for i, c := range b.nodes {
			if c.Exited() {
				return nil, fmt.Errorf("node %s", c.DescribeExit())
			}
			v, err := rssBytes(c.PID())
			if err != nil {
				return nil, err
			}
			cur[i] = v
		}
		samples = append(samples, cur)
		if len(samples) > window {
			samples = samples[1:]
		}
		if len(samples) == window && steady(samples) || time.Now().After(deadline) {
			return cur, nil
		}
		if !sleepCtx(ctx, every) {
			return nil, ctx.Err()
		}
	}
}

func steady(samples [][]int64) bool {
	for i := range samples[0] {
		lo, hi := samples[0][i], samples[0][i]
		for _, s := range samples {
			lo, hi = min(lo, s[i]), max(hi, s[i])
		}
		if hi-lo > max(hi/100, 256<<10) {
			return false
		}
	}
	return true
}
