// Package testenv holds what the packages' tests share: waiting for a
// condition with a deadline (never a bare sleep), and ports for listeners
// whose number must be known before they bind.
package testenv

import (
	"net"
	"testing"
	"time"

	"github.com/appnode/appnode/internal/ports"
)

// Eventually polls cond every 20 ms until it reports true, and returns how
// long that took. If limit passes first it fails the test with what and
// cond's last explanation (its second result).
func Eventually(t testing.TB, limit time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	return poll(t, limit, 20*time.Millisecond, what, cond)
}

// WaitFor polls cond until it holds, failing the test if timeout passes
// first; what names the condition in the failure. It polls more often than
// Eventually, for in-process conditions that are cheap to check.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	poll(t, timeout, 5*time.Millisecond, what, func() (bool, string) { return cond(), "" })
}

func poll(t testing.TB, limit, every time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(limit)
	for {
		ok, detail := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			if detail == "" {
				t.Fatalf("timed out after %v waiting for %s", limit, what)
			}
			t.Fatalf("timed out after %v waiting for %s; last: %s", limit, what, detail)
		}
		time.Sleep(every) // polling interval, not synchronisation
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// below the kernel's ephemeral range (see package ports): every other
// listener of the tests binds port 0, so none of them can take it between
// the pick and its use.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// InterfaceIPv4 returns one of this host's IPv4 addresses other than
// loopback and link-local, for a test of a node bound off loopback; the
// test is skipped on a host that has none (nothing to install fixes that).
func InterfaceIPv4(t testing.TB) string {
	t.Helper()
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("this host has no IPv4 address other than loopback")
	return ""
}
