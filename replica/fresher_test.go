package replica

import (
	"testing"

	"github.com/appnode/appnode/wire"
)

// The order in which survey picks the copy to restore must agree with the
// owner's current copy, which its keeper promotes without asking anyone:
// a copy an Adopt with a lost reply left behind loses to the owner's later
// placement even when it holds an update more.
func TestFresherOrder(t *testing.T) {
	owner := wire.NodeID{Name: "o", Boot: 1}
	copyAt := func(node string, epoch, placement, seq uint64) *whereResult {
		return &whereResult{from: wire.NodeID{Name: node, Boot: 1}, reply: &wire.WhereReply{Role: wire.RoleKeeper, Owner: owner, Epoch: epoch, Placement: placement, Seq: seq}}
	}
	cases := []struct {
		name        string
		want, other *whereResult
	}{
		{"a later epoch", copyAt("b", 3, 0, 1), copyAt("a", 2, 5, 9)},
		{"a later placement over an update more", copyAt("b", 2, 2, 4), copyAt("a", 2, 1, 5)},
		{"a later placement, same update", copyAt("b", 2, 2, 4), copyAt("a", 2, 1, 4)},
		{"a later update, same placement", copyAt("b", 2, 1, 5), copyAt("a", 2, 1, 4)},
		{"the owner's own copy on a tie", &whereResult{from: owner, reply: &wire.WhereReply{Role: wire.RoleKeeper, Owner: owner, Epoch: 2, Placement: 1, Seq: 4}}, copyAt("a", 2, 1, 4)},
		{"the lower name on a tie", copyAt("a", 2, 1, 4), copyAt("b", 2, 1, 4)},
	}
	for _, c := range cases {
		if !fresher(c.want, c.other) || fresher(c.other, c.want) {
			t.Errorf("%s: fresher(%+v, %+v) = %v, fresher the other way = %v; want the first only", c.name, *c.want.reply, *c.other.reply, fresher(c.want, c.other), fresher(c.other, c.want))
		}
	}
}
