package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/appnode/appnode/wire"
)

// Network is how a Store reaches its peers.
type Network interface {
	// Call sends m to the incarnation `to` and waits for the reply. An error
	// wrapping wire.ErrGone is proof that `to` no longer exists and that m
	// was not delivered; a *wire.Error is the peer's answer; any other error
	// leaves the outcome unknown.
	Call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error)
}

func (s *Store) callPeer(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error) {
	ctx, cancel := withTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	self := s.Self()
	rep, err := s.cfg.Net.Call(ctx, to, m)
	if code, ok := wire.CodeOf(err); ok && code == wire.CodeDeclaredDead {
		s.fencedByCluster(self)
	}
	return rep, err
}

// withTimeout bounds ctx by d, without a new timer when ctx already ends
// sooner: on the reward path every call would otherwise allocate one.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

func (s *Store) fencedByCluster(dead wire.NodeID) {
	if s.cfg.OnDeclaredDead != nil {
		s.cfg.OnDeclaredDead(dead)
	}
}

// noticeZombies tells incarnations that are tombstoned here but still
// gossiped as alive (they were paused or cut off and came back) that they
// must rejoin clean. Without it such a node could sit on stale copies until
// it happens to call someone.
func (s *Store) noticeZombies(zombies []wire.NodeID) {
	for _, z := range zombies {
		s.spawn(func() {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
			defer cancel()
			_, _ = s.cfg.Net.Call(ctx, z, &wire.DeclaredDead{Target: z})
		})
	}
}

// LinkDown is a hint that the connection to peer broke: check at once
// whether it still answers, and if not, ask the cluster whether it is down
// (suspectPeer), instead of waiting seconds for the failure detector. A
// refused connection is a hint too, never proof: a live process behind a
// firewall refuses just the same.
func (s *Store) LinkDown(peer wire.NodeID) {
	s.spawn(func() {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
		defer cancel()
		if _, err := s.cfg.Net.Call(ctx, peer, &wire.Ping{}); unreachable(err) {
			s.suspectPeer(peer, "its connection closed and it does not answer")
		}
	})
}

// unreachable says whether err shows the peer could not be reached at all
// (the request never got there): a refusal, or a new incarnation in its
// place.
func unreachable(err error) bool {
	return errors.Is(err, wire.ErrRefused) || errors.Is(err, wire.ErrGone) || errors.Is(err, wire.ErrNotSent)
}

// whereAll asks every peer what it holds for player. Any peer that cannot
// answer makes the whole question fail: it might hold the only copy, and
// concluding "new player" without it would lose its total.
func (s *Store) whereAll(ctx context.Context, player string, peers []wire.NodeID) ([]whereResult, error) {
	out := make([]whereResult, len(peers))
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wr, err := s.askWhere(ctx, peer, player)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = whereResult{from: peer, reply: wr}
		}()
	}
	wg.Wait()
	res := out[:0]
	for i, err := range errs {
		if err == nil {
			res = append(res, out[i])
			continue
		}
		if unreachable(err) {
			// It may hold the only copy: only the roster removing it
			// lets the question be settled without it.
			s.suspectPeer(peers[i], "it refused the connection")
			return nil, wire.Errorf(wire.CodeBusy, "%s: %s does not answer; waiting for the cluster to agree whether it is down", player, peers[i].Name)
		}
		if code, ok := wire.CodeOf(err); ok && code == wire.CodeBusy {
			return nil, err
		}
		if s.suspected(peers[i]) {
			// The failure detector lost it too: the roster will say.
			return nil, wire.Errorf(wire.CodeBusy, "%s: %s does not answer; waiting for the cluster to agree whether it is down", player, peers[i].Name)
		}
		if errors.Is(err, wire.ErrLinkLost) {
			// The peer was just disconnected (declared down, most often):
			// asking again is harmless and will likely get an answer.
			return nil, wire.Errorf(wire.CodeBusy, "%s: lost the link to %s while asking about this player; retrying", player, peers[i].Name)
		}
		return nil, wire.Errorf(wire.CodeUnavailable, "%s: cannot tell whether %s holds this player (%v); retry when it answers or is declared down", player, peers[i].Name, err)
	}
	return res, nil
}

// askWhere asks peer what it holds for player.
func (s *Store) askWhere(ctx context.Context, peer wire.NodeID, player string) (*wire.WhereReply, error) {
	rep, err := s.callPeer(ctx, peer, &wire.Where{Player: player})
	if err != nil {
		return nil, err
	}
	wr, ok := rep.(*wire.WhereReply)
	if !ok {
		return nil, fmt.Errorf("%s answered where with %s", peer.Name, rep.Kind())
	}
	return wr, nil
}

type whereResult struct {
	from  wire.NodeID
	reply *wire.WhereReply
}

func (s *Store) peersLocked() []wire.NodeID { return s.view.Peers() }

// suspected says whether member id is suspected down: the failure
// detector lost it, or it refused a connection.
func (s *Store) suspected(id wire.NodeID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.suspects[id] || !s.view.Reaches(id)
}
