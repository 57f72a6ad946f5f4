package replica

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/appnode/appnode/wire"
)

// BenchmarkRepairPass is one repair pass over a node holding a third of a
// million-player cluster's copies (333k primaries, 333k keeper copies),
// all healthy. Besides the pass's time it reports the longest a reward on
// the node would have waited for the Store's lock meanwhile (stall-ms),
// measured by a goroutine taking the lock over and over.
func BenchmarkRepairPass(b *testing.B) {
	const players = 333_000
	self := wire.NodeID{Name: "a", Boot: 1}
	peer := wire.NodeID{Name: "b", Boot: 2}
	s, err := New(DefaultConfig(self, NewMemNetwork().Attach("a", func() wire.NodeID { return self }, nil, nil, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.AdmitForTest(peer, wire.NodeID{Name: "c", Boot: 3})
	s.SetMembers([]wire.NodeID{self, peer, {Name: "c", Boot: 3}})
	s.mu.Lock()
	for i := range players {
		p := fmt.Sprintf("p%07d", i)
		s.startPrimaryLocked(p, state{epoch: 1, keeper: peer}, record{})
		s.putCopyLocked(fmt.Sprintf("c%07d", i), &keeperCopy{owner: peer, epoch: 1})
	}
	clear(s.unconfirmed) // settled copies, as the pass meets them at rest
	s.mu.Unlock()

	var worst time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			s.mu.Lock()
			waited := time.Since(t0) // what a reward arriving now would wait
			s.mu.Unlock()
			worst = max(worst, waited)
			runtime.Gosched()
		}
	}()
	for b.Loop() {
		if s.repair() {
			b.Fatal("a healthy node's repair pass found work")
		}
	}
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(worst)/float64(time.Millisecond), "stall-ms")
}
