package names

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// A connection that holds no registration is closed after clientLife even
// if it keeps asking, so lookups cannot pin the service's slots.
func TestLookupConnectionsHaveALifetime(t *testing.T) {
	h := newHarness(t)
	h.tm.clientLife = 500 * time.Millisecond
	r := h.mustRegister("app_node1@host", 1)
	c := rawDial(t, h.addr)
	opened := time.Now()
	for {
		req := request{V: protoVersion, Op: opLookup, Name: "app_node1@host"}
		if err := writeFrame(c, time.Second, req); err != nil {
			break
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var rep reply
		if err := readFrame(c, &rep); err != nil {
			break // closed by the service
		}
		if time.Since(opened) > 5*time.Second {
			t.Fatal("a lookup connection outlived clientLife by seconds")
		}
		time.Sleep(100 * time.Millisecond) // pacing of the lookups, not synchronisation
	}
	eventually(t, "service answers", resolves(h, "app_node1@host", 1))
	if r.server() == nil {
		t.Fatal("the registering node stopped serving")
	}
}

// Malformed and unknown requests close their connection only, and are
// counted.
func TestBadRequestsAreCounted(t *testing.T) {
	h := newHarness(t)
	r := h.mustRegister("app_node1@host", 1)
	srv := r.server()
	for _, raw := range [][]byte{
		{0, 0, 0x10, 0x01},                  // longer than maxFrame
		{0, 0, 0, 0},                        // empty frame
		{0, 0, 0, 2, 0xc1, 0xc1},            // not msgpack
		{0, 0, 0, 5, 0x82, 0xa1, 'v', 0x01}, // truncated body
		{0, 0, 0, 7, 0x82, 0xa1, 'v', 0x01, 0xa2, 'o', 'p'},
	} {
		c := rawDial(t, h.addr)
		if _, err := c.Write(raw); err != nil {
			t.Fatal(err)
		}
		// Half-close: a frame cut short ends in EOF, not in the idle
		// timeout.
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		closedByPeer(t, c)
	}
	// An unknown op.
	c := rawDial(t, h.addr)
	if err := writeFrame(c, time.Second, request{V: protoVersion, Op: 99}); err != nil {
		t.Fatal(err)
	}
	closedByPeer(t, c)
	eventually(t, "every bad connection counted", func() error {
		if n := srv.dropped.Load(); n != 6 {
			return fmt.Errorf("%d counted, want 6", n)
		}
		return nil
	})
	eventually(t, "service answers", resolves(h, "app_node1@host", 1))
}
