package test

import (
	"encoding/json"
	"testing"

	"github.com/appnode/appnode/internal/testenv"
	"github.com/appnode/appnode/wire"
)

// rpcJSON is what `appnode rpc --json` prints.
type rpcJSON struct {
	Output  string  `json:"output"`
	Failed  bool    `json:"failed"`
	Code    *string `json:"code"`
	Outcome string  `json:"outcome"`
}

// TestRPCJSONAndID: `appnode rpc --json` gives a failure's code and
// outcome without words to parse, and `--id KEY` makes a retried reward,
// at any node, answered rather than applied twice.
func TestRPCJSONAndID(t *testing.T) {
	h := newHarness(t)
	h.startCluster("app_node1", "app_node2")

	decode := func(r rpcResult) rpcJSON {
		t.Helper()
		var j rpcJSON
		if err := json.Unmarshal([]byte(r.out), &j); err != nil {
			t.Fatalf("rpc --json printed %v, not one JSON object: %v", r, err)
		}
		return j
	}
	r := h.rpc("app_node1", "reward rj 5", "--json")
	if j := decode(r); r.code != 0 || j.Output != "5" || j.Failed || j.Code != nil || j.Outcome != wire.OutcomeApplied.String() {
		t.Errorf("rpc --json reward rj 5: exit %d, %+v; want exit 0 and output 5, applied", r.code, j)
	}
	r = h.rpc("app_node1", "rewrd rj 5", "--json")
	if j := decode(r); r.code != 1 || !j.Failed || j.Code == nil || *j.Code != wire.CodeBadRequest.String() || j.Outcome != wire.OutcomeNotApplied.String() {
		t.Errorf("rpc --json rewrd rj 5: exit %d, %+v; want exit 1, failed, %q, not applied", r.code, j, wire.CodeBadRequest)
	}

	// The same key twice, at two nodes: applied once, answered twice.
	h.mustRPC("app_node1", "reward rj 3", "8", "--id", "key-1")
	h.mustRPC("app_node2", "reward rj 3", "8", "--id", "key-1")
	h.mustRPC("app_node2", "reward rj 0", "8")
	h.mustRPC("app_node2", "reward rj 3", "11", "--id", "key-2")
	r = h.rpc("app_node2", "reward rj a", "--id", "key-3", "--json")
	if j := decode(r); r.code != 1 || j.Code == nil || *j.Code != wire.CodeCrashed.String() || j.Outcome != wire.OutcomeNotApplied.String() {
		t.Errorf("rpc --id --json reward rj a: exit %d, %+v; want a crash, not applied", r.code, j)
	}
	h.mustRPC("app_node1", "reward rj 0", "11")
	if r := h.rpc("app_node1", "local_players", "--id", "key-4"); r.code != 2 {
		t.Errorf("rpc --id with a command other than reward: %v, want exit 2", r)
	}
}

// TestRPCNodeBoundElsewhere: a node started with --bind on one of this
// host's addresses, not loopback, is found by `appnode rpc NAME` on this
// host: its host's name service listens on that address.
func TestRPCNodeBoundElsewhere(t *testing.T) {
	bind := testenv.InterfaceIPv4(t)
	h := newHarness(t)
	p := h.start("app_node1", "--bind", bind) // the last --bind wins
	p.waitUp()
	h.mustRPC("app_node1", "node", "'"+p.name+"'")
	h.mustRPC(p.name, "nodes", "[]")
}
