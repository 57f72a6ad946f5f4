package replica_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/appnode/appnode/replica"
	"github.com/appnode/appnode/wire"
	"go.uber.org/goleak"
)

// lateNet is a Network that counts the calls made after it was told that
// the Store using it has returned from Close by the Store's own goroutines
// (the pings of LinkDown and of the repair loop, the notices to zombies;
// a caller's reward makes other calls on its own goroutine): one still
// running then is one that Close did not wait for.
type lateNet struct {
	closed atomic.Bool
	late   atomic.Int64
}

func (n *lateNet) Call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error) {
	switch m.(type) {
	case *wire.Ping, *wire.DeclaredDead:
		if n.closed.Load() {
			n.late.Add(1)
		}
	}
	return nil, wire.Errorf(wire.CodeUnavailable, "lateNet reaches no one")
}

// Close waits for every goroutine of the Store, including those that the
// hints racing it start (LinkDown, a membership change that tombstones or
// meets a zombie, a reward scheduled on a worker): none starts after Close
// has begun. Run it under -race, which also reports a WaitGroup's Add
// racing its Wait.
func TestCloseWaitsForEveryGoroutine(t *testing.T) {
	self := wire.NodeID{Name: "a", Boot: 1}
	var late int64
	for i := range 30 {
		net := &lateNet{}
		s, err := replica.New(replica.DefaultConfig(self, net))
		if err != nil {
			t.Fatal(err)
		}
		peer := wire.NodeID{Name: "b", Boot: uint64(10 + i)}
		var hints sync.WaitGroup
		stop := make(chan struct{})
		for g := range 3 {
			hints.Add(1)
			go func() {
				defer hints.Done()
				for n := uint64(0); ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					switch g {
					case 0:
						s.LinkDown(peer)
					case 1:
						// b joins, then leaves under a new boot:
						// tombstones b's old incarnation.
						s.SetMembers([]wire.NodeID{self, peer})
						s.SetMembers([]wire.NodeID{self, {Name: "b", Boot: peer.Boot + 1000 + n}})
					case 2:
						_, _ = s.RewardInt(context.Background(), "p", 1)
					}
				}
			}()
		}
		s.Close()
		net.closed.Store(true)
		close(stop)
		hints.Wait()
		late += net.late.Load()
	}
	if late > 0 {
		t.Fatalf("%d calls were made by the Store's goroutines after Close returned", late)
	}
}

// blockingNet is a Network whose calls fail at once until closed is set
// (the Store returned from Close); then they block until release is
// closed, so that a goroutine of the Store that outlived Close shows as
// leaked.
type blockingNet struct {
	closed  atomic.Bool
	release chan struct{}
}

func (n *blockingNet) Call(ctx context.Context, to wire.NodeID, m wire.Msg) (wire.Msg, error) {
	if n.closed.Load() {
		<-n.release
	}
	return nil, wire.Errorf(wire.CodeUnavailable, "blockingNet reaches no one")
}

// A hint that races Close (LinkDown, a zombie in the gossip) starts no
// goroutine once Close has begun: Close interleaves exactly where the hint
// decides to start one, and no goroutine of the Store may outlive it.
func TestHintRacingCloseStartsNothing(t *testing.T) {
	self := wire.NodeID{Name: "a", Boot: 1}
	peer := wire.NodeID{Name: "b", Boot: 2}
	reborn := wire.NodeID{Name: "b", Boot: 3}
	for _, tc := range []struct {
		name        string
		setup, hint func(s *replica.Store)
	}{
		{"LinkDown", func(*replica.Store) {}, func(s *replica.Store) { s.LinkDown(peer) }},
		{"zombie", func(s *replica.Store) {
			s.AdmitForTest(peer)
			s.AdmitForTest(reborn) // the roster replaced b's old incarnation: it is fenced
			s.SetMembers([]wire.NodeID{self, reborn})
		}, func(s *replica.Store) {
			s.SetMembers([]wire.NodeID{self, reborn, peer}) // and gossiped as alive
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			net := &blockingNet{release: make(chan struct{})}
			defer close(net.release)
			s, err := replica.New(replica.DefaultConfig(self, net))
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(s)
			var once sync.Once
			closeStore := func() {
				s.Close()
				net.closed.Store(true)
			}
			s.SetSpawnHook(func() { once.Do(closeStore) })
			tc.hint(s)
			if !net.closed.Load() {
				t.Fatal("the hint never started a goroutine: this test tests nothing")
			}
			if err := goleak.Find(before); err != nil {
				t.Fatalf("a goroutine of the Store outlived Close: %v", err)
			}
		})
	}
}
