// Package replicatest checks what clients of an appnode cluster saw: it
// records their rewards as a history and checks it with porcupine against a
// counter per player whose reward returns the new total. Tests of every
// package use it, with in-memory clusters or real processes.
package replicatest

import (
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/appnode/appnode/wire"
)

// Input is one reward as a client sent it.
type Input struct {
	Player string
	Delta  int64
}

// Output is its answer; Unknown means the client cannot tell whether it was
// applied (a timeout, a broken link), so any effect is allowed.
type Output struct {
	Total   int64
	Unknown bool
}

// CounterModel is the specification: one integer per player, starting at
// 0; a reward adds its delta and returns the new total.
var CounterModel = porcupine.Model{
	Partition: ByPlayer(func(in any) string { return in.(Input).Player }),
	Init:      func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		next := state.(int64) + input.(Input).Delta
		out := output.(Output)
		return out.Unknown || out.Total == next, next
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		if out.Unknown {
			return fmt.Sprintf("reward(%s, %d) -> ?", in.Player, in.Delta)
		}
		return fmt.Sprintf("reward(%s, %d) -> %d", in.Player, in.Delta, out.Total)
	},
}

// ByPlayer is a porcupine Partition for histories of rewards: players are
// independent, so each player's operations are checked alone, which keeps
// the search small. player reads an operation's input's player.
func ByPlayer(player func(input any) string) func([]porcupine.Operation) [][]porcupine.Operation {
	return func(history []porcupine.Operation) [][]porcupine.Operation {
		byPlayer := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			p := player(op.Input)
			if _, ok := byPlayer[p]; !ok {
				order = append(order, p)
			}
			byPlayer[p] = append(byPlayer[p], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, p := range order {
			out = append(out, byPlayer[p])
		}
		return out
	}
}

// NotApplied reports whether err proves that the reward did not happen.
func NotApplied(err error) bool { return wire.OutcomeOf(err) == wire.OutcomeNotApplied }

// History records rewards from concurrent clients.
type History struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
	// Counts of outcomes.
	OK, Failed, Unknown int
}

func NewHistory() *History { return &History{start: time.Now()} }

// Now is the timestamp to pass as call to Record.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// neverReturned is the return time of a call with an unknown outcome: it
// may take effect at any point after its call.
const neverReturned = 1 << 62

// Record adds one call: err nil means acknowledged with total; an error
// that proves nothing happened leaves the call out; any other error makes
// its outcome unknown.
func (h *History) Record(client int, in Input, call int64, total int64, err error) {
	h.RecordOutcome(client, in, call, total, err == nil, err != nil && NotApplied(err))
}

// RecordOutcome is Record for callers that classify outcomes themselves
// (a console's text answers, say).
func (h *History) RecordOutcome(client int, in Input, call int64, total int64, ok, notApplied bool) {
	ret := h.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case ok:
		h.OK++
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: Output{Total: total}, Return: ret})
	case notApplied:
		h.Failed++
	default:
		h.Unknown++
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: Output{Unknown: true}, Return: neverReturned})
	}
}

// Acked is the number of acknowledged rewards so far.
func (h *History) Acked() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.OK
}

// Len is the number of operations that the check will consider.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Check fails t if the history is not linearizable, logging where the
// longest linearization stopped and writing the whole history to a file.
// It returns porcupine's verdict (Unknown when it ran out of time).
func (h *History) Check(t testing.TB, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(CounterModel, ops, timeout)
	if res == porcupine.Illegal {
		explain(t, ops, info)
		t.Errorf("history of %d operations is not linearizable (written to %s)", len(ops), dump(ops))
	}
	return res
}

func dump(ops []porcupine.Operation) string {
	sorted := append([]porcupine.Operation(nil), ops...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	f, err := os.CreateTemp("", "appnode-history-*.txt")
	if err != nil {
		return "(not written: " + err.Error() + ")"
	}
	defer f.Close()
	for _, op := range sorted {
		fmt.Fprintf(f, "%12d %12d c%-3d %s\n", op.Call, op.Return, op.ClientId, CounterModel.DescribeOperation(op.Input, op.Output))
	}
	return f.Name()
}

// explain logs, for each player whose history failed, the end of the
// longest linearization porcupine found and the operations it could not
// place after it.
func explain(t testing.TB, ops []porcupine.Operation, info porcupine.LinearizationInfo) {
	for _, part := range info.PartialLinearizationsOperations() {
		var longest []porcupine.Operation
		for _, lin := range part {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
		if len(longest) == 0 {
			continue
		}
		player := longest[0].Input.(Input).Player
		placed := map[[2]int64]bool{}
		for _, op := range longest {
			placed[[2]int64{op.Call, int64(op.ClientId)}] = true
		}
		var rest []porcupine.Operation
		for _, op := range ops {
			if op.Input.(Input).Player == player && !placed[[2]int64{op.Call, int64(op.ClientId)}] {
				rest = append(rest, op)
			}
		}
		if len(rest) == 0 {
			continue
		}
		sort.Slice(rest, func(i, j int) bool { return rest[i].Call < rest[j].Call })
		for _, op := range longest[max(0, len(longest)-8):] {
			t.Logf("  %s linearized: [%d..%d] c%d %s", player, op.Call, op.Return, op.ClientId, CounterModel.DescribeOperation(op.Input, op.Output))
		}
		for _, op := range rest[:min(8, len(rest))] {
			t.Logf("  %s not placed: [%d..%d] c%d %s", player, op.Call, op.Return, op.ClientId, CounterModel.DescribeOperation(op.Input, op.Output))
		}
	}
}
