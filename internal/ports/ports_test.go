package ports

import (
	"fmt"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The port must be one no port-0 listener can be handed: below the
// kernel's ephemeral range, as the kernel reports it.
func TestFreeIsBelowTheEphemeralRange(t *testing.T) {
	var ephemeralLow int
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if _, err := fmt.Sscan(string(b), &ephemeralLow); err != nil {
			t.Fatalf("ip_local_port_range %q: %v", b, err)
		}
	} else {
		ephemeralLow = 32768 // the lowest default of the systems appnode runs on
	}
	for range 20 {
		port, err := Free()
		if err != nil {
			t.Fatal(err)
		}
		if port >= ephemeralLow {
			t.Fatalf("Free() = %d, inside the ephemeral range that starts at %d", port, ephemeralLow)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("Free() = %d, but it cannot be bound: %v", port, err)
		}
		l.Close()
	}
}
