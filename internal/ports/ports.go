// Package ports picks TCP ports on 127.0.0.1 whose number must be known
// before anything binds them: the name service port handed to spawned
// nodes, a profiler's address.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
)

// The kernel hands out ports for port-0 listeners and outbound connections
// from its ephemeral range (32768-60999 on Linux, 49152-65535 on macOS).
// A port picked from that range and released can be taken by any of them
// before it is used, and then answer as something else; one picked below
// it can only be taken by a program that asks for that very number.
const (
	low  = 20000
	high = 32000
)

// Free returns a port on 127.0.0.1 that was free a moment ago, below the
// kernel's ephemeral range.
func Free() (int, error) {
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
