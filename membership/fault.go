package membership

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// FaultTransport is memberlist's own UDP+TCP transport with a switch that
// makes some peers unreachable from this member, for tests of this and
// other packages: packets to them are
// dropped silently, as a lossy network would, and connections to them fail.
// Blocking both directions between two members (each one's transport
// blocking the other) is a network partition between them.
//
// Only outgoing traffic is filtered: an incoming TCP stream comes from an
// ephemeral port and cannot be attributed to a gossip address.
type FaultTransport struct {
	*memberlist.NetTransport

	mu      sync.Mutex
	blocked map[string]bool // gossip addresses "ip:port"
}

var _ memberlist.NodeAwareTransport = (*FaultTransport)(nil)

func NewFaultTransport(bindAddr string) (*FaultTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{bindAddr},
		BindPort:  0,
		Logger:    log.New(io.Discard, "", 0),
	})
	if err != nil {
		return nil, fmt.Errorf("fault transport: %w", err)
	}
	return &FaultTransport{NetTransport: nt, blocked: make(map[string]bool)}, nil
}

func (t *FaultTransport) Block(addrs ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range addrs {
		t.blocked[a] = true
	}
}

func (t *FaultTransport) UnblockAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.blocked)
}

func (t *FaultTransport) isBlocked(addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.blocked[addr]
}

var errBlocked = errors.New("blocked by fault injection")

func (t *FaultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.isBlocked(addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *FaultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.isBlocked(a.Addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *FaultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.isBlocked(addr) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errBlocked}
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *FaultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.isBlocked(a.Addr) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errBlocked}
	}
	return t.NetTransport.DialAddressTimeout(a, timeout)
}
