// Package testenv holds what the packages' tests share: waiting for a
// condition with a deadline (never a bare sleep), and ports for listeners
// whose number must be known before they bind.
package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing the test if timeout passes
// first; what names the condition in the failure.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// It picks below the kernel's ephemeral range (32768-60999 on Linux):
// every other listener of the tests binds port 0 and gets a port from that
// range, so a port picked here cannot be taken by one of them between the
// pick and its use, and then answer as something else.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port found below the ephemeral range")
	return 0
}
