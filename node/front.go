package node

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/appnode/appnode/wire"
)

// What the HTTP front door (package front) asks a node, beside the
// console's questions.

// maxGone bounds the lost members /cluster remembers.
const maxGone = 64

// goneMember is a member that left the live view, for /cluster.
type goneMember struct {
	id    wire.NodeID
	addr  string
	since time.Time
}

// noteGoneLocked records members lost between two views and forgets those
// that came back. Called with n.mu held.
func (n *Node) noteGoneLocked(old, next map[string]wire.NodeID) {
	for name := range next {
		delete(n.gone, name)
	}
	for name, id := range old {
		if _, ok := next[name]; ok || name == n.name {
			continue
		}
		n.gone[name] = goneMember{id: id, addr: n.addrs[name], since: time.Now()}
	}
	for len(n.gone) > maxGone {
		oldest := ""
		for name, g := range n.gone {
			if oldest == "" || g.since.Before(n.gone[oldest].since) {
				oldest = name
			}
		}
		delete(n.gone, oldest)
	}
}

// Health is what a load balancer's readiness check needs to know.
type Health struct {
	Members   int    // live members this node sees, itself included
	Quorate   bool   // it sees a majority of the membership it last agreed on
	Resetting bool   // it was declared failed and is dropping its state to rejoin
	Leaving   bool   // a graceful exit is under way
	Fencings  uint64 // times it was declared failed (paused, cut off) and rejoined
}

// Health reports the node's serving state now.
func (n *Node) Health() Health {
	st := n.store.Stats()
	return Health{
		Members:   st.Members,
		Quorate:   st.Quorate,
		Resetting: n.resetting.Load(),
		Leaving:   n.leaving.Load(),
		Fencings:  n.fencings.Load(),
	}
}

// HTTPURL is this node's front door, "" if it has none.
func (n *Node) HTTPURL() string { return n.cfg.HTTPURL }

// Links reports, for each peer this node has called, whether its link is
// up now.
func (n *Node) Links() map[string]bool { return n.tr.Links() }

// MemberInfo is one node of the cluster as /cluster shows it.
type MemberInfo struct {
	Name      string    `json:"name"`
	Boot      uint64    `json:"boot"`  // its incarnation
	Addr      string    `json:"addr"`  // its transport address
	State     string    `json:"state"` // alive, unreachable (alive but did not answer), down
	Self      bool      `json:"self,omitempty"`
	Primaries int       `json:"primaries"`
	Keepers   int       `json:"keepers"` // keeper copies it holds
	Members   int       `json:"members,omitempty"`
	Quorate   bool      `json:"quorate"`
	HTTP      string    `json:"http,omitempty"`
	Since     time.Time `json:"since,omitzero"` // when it went down
	Error     string    `json:"error,omitempty"`
}

// Cluster describes every live member, asking each over the link what it
// holds (at most timeout per member, all at once), and the members lost
// recently, sorted by name.
func (n *Node) Cluster(ctx context.Context, timeout time.Duration) []MemberInfo {
	self := n.Self()
	n.mu.Lock()
	members := make([]wire.NodeID, 0, len(n.members))
	for _, id := range n.members {
		members = append(members, id)
	}
	out := make([]MemberInfo, len(members), len(members)+len(n.gone))
	for i, id := range members {
		out[i] = MemberInfo{Name: id.Name, Boot: id.Boot, Addr: n.addrs[id.Name], State: "alive"}
	}
	n.mu.Unlock()
	// A member still gossiped as alive that the store holds proof of
	// death for (a refused connection) is down already.
	for i, id := range members {
		if id.Name != self.Name && n.store.Fenced(id) {
			out[i].State = "down"
		}
	}
	n.mu.Lock()
	for name, g := range n.gone {
		out = append(out, MemberInfo{Name: name, Boot: g.id.Boot, Addr: g.addr, State: "down", Since: g.since})
	}
	n.mu.Unlock()
	if len(members) == 0 { // before Start's first view
		members = append(members, self)
		out = append([]MemberInfo{{Name: self.Name, Boot: self.Boot, Addr: n.tr.Addr(), State: "alive"}}, out...)
	}
	var wg sync.WaitGroup
	for i, id := range members {
		if out[i].State == "down" {
			continue
		}
		if id.Name == self.Name {
			info := n.info()
			out[i].Self, out[i].Boot = true, info.Node.Boot
			out[i].Primaries, out[i].Keepers, out[i].Members, out[i].Quorate, out[i].HTTP = info.Primaries, info.Copies, info.Members, info.Quorate, info.HTTP
			if out[i].Addr == "" {
				out[i].Addr = n.tr.Addr()
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			rep, err := n.tr.Call(cctx, id, &wire.NodeInfo{})
			info, ok := rep.(*wire.NodeInfoReply)
			if err != nil || !ok {
				out[i].State = "unreachable"
				if err != nil {
					out[i].Error = err.Error()
				}
				return
			}
			out[i].Primaries, out[i].Keepers, out[i].Members, out[i].Quorate, out[i].HTTP = info.Primaries, info.Copies, info.Members, info.Quorate, info.HTTP
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (n *Node) info() *wire.NodeInfoReply {
	st := n.store.Stats()
	return &wire.NodeInfoReply{Node: n.Self(), Primaries: st.Primaries, Copies: st.Copies, Members: st.Members, Quorate: st.Quorate, HTTP: n.cfg.HTTPURL}
}

// PlayersPage lists the players whose primary runs on node (this one if
// ""), sorted, limit (at most wire.MaxPage) after cursor; next is the
// cursor of the following page, "" after the last. Another node is asked
// over the link.
func (n *Node) PlayersPage(ctx context.Context, node, cursor string, limit int) (page []wire.PageEntry, next string, err error) {
	limit = min(max(limit, 0), wire.MaxPage)
	if node == "" || node == n.name {
		page, next = n.store.PrimariesPage(cursor, limit)
		return page, next, nil
	}
	n.mu.Lock()
	id, ok := n.members[node]
	n.mu.Unlock()
	if !ok {
		return nil, "", wire.Errorf(wire.CodeNotFound, "no live member is named %s", node)
	}
	rep, err := n.tr.Call(ctx, id, &wire.PlayersPage{Cursor: cursor, Limit: limit})
	if err != nil {
		return nil, "", err
	}
	pr, ok := rep.(*wire.PlayersPageReply)
	if !ok {
		return nil, "", wire.Errorf(wire.CodeInternal, "%s answered a page of players with %s", node, rep.Kind())
	}
	return pr.Players, pr.Next, nil
}

// Read returns player's total, owner and keeper linearizably (see
// replica.Store.Read); CodeNotFound if no node holds it.
func (n *Node) Read(ctx context.Context, player string) (total int64, owner, keeper string, err error) {
	t, o, k, err := n.store.Read(ctx, player)
	return t, o.Name, k.Name, err
}

// RewardWhere adds points (as typed) to player and says where it lives.
// A non-empty key names the request (an HTTP Idempotency-Key): a retry
// with the same key, through any node, is answered, not applied twice.
func (n *Node) RewardWhere(ctx context.Context, player, points, key string) (total int64, owner, keeper string, err error) {
	var id wire.ReqID
	if key != "" {
		id = wire.ClientReqID(key)
	}
	r, err := n.store.RewardWhere(ctx, player, points, id)
	return r.Total, r.Owner.Name, r.Keeper.Name, err
}

// handlePeer serves a member's request: the front door's questions here,
// the rest in the replica store.
func (n *Node) handlePeer(ctx context.Context, from wire.NodeID, m wire.Msg) (wire.Msg, error) {
	switch m := m.(type) {
	case *wire.NodeInfo:
		return n.info(), nil
	case *wire.PlayersPage:
		if err := n.refuseFenced(from); err != nil {
			return nil, err
		}
		page, next := n.store.PrimariesPage(m.Cursor, m.Limit)
		return &wire.PlayersPageReply{Players: page, Next: next}, nil
	}
	return n.store.Handle(ctx, from, m)
}

func (n *Node) refuseFenced(from wire.NodeID) error {
	if n.store.Fenced(from) {
		return wire.Errorf(wire.CodeDeclaredDead, "%s (boot %x) was declared failed by the cluster; it must rejoin as a new incarnation", from.Name, from.Boot)
	}
	return nil
}
