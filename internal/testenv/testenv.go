// Package testenv holds what the packages' tests share: waiting for a
// condition with a deadline (never a bare sleep), and ports for listeners
// whose number must be known before they bind.
package testenv

import (
	"testing"
	"time"

	"github.com/appnode/appnode/internal/ports"
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
