// Package ports picks TCP ports on 127.0.0.1 whose number must be known
// before anything binds them: the name service port handed to spawned
// nodes, a profiler's address.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// The kernel hands out ports for port-0 listeners and outbound connections
// from its ephemeral range (32768-60999 on Linux by default, 49152-65535 on
// macOS). A port picked from that range and released can be taken by any
// of them before it is used, and then answer as something else; one picked
// below it can only be taken by a program that asks for that very number.
const (
	span        = 12000
	defaultHigh = 32000 // below every default ephemeral range
	lowest      = 1024  // above the ports only root may bind
)

// Free returns a port on 127.0.0.1 that was free a moment ago, below the
// kernel's ephemeral range.
func Free() (int, error) {
	high := defaultHigh
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var ephemeralLow int
		if _, err := fmt.Sscan(string(b), &ephemeralLow); err == nil && ephemeralLow < high {
			high = ephemeralLow
		}
	}
	low := max(high-span, lowest)
	if low >= high {
		return 0, fmt.Errorf("no room for a port below the ephemeral range, which starts at %d", high)
	}
	var err error
	for range 100 {
		port := low + rand.IntN(high-low)
		var l net.Listener
		if l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on 127.0.0.1 between %d and %d: %w", low, high, err)
}
