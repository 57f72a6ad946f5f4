package names

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"
)

// ErrServing is returned by Serve when another name service already
// listens on the port: the process that was started to serve can go.
var ErrServing = errors.New("a name service already listens there")

// Serve runs the host's name service as a process of its own, the way
// Erlang runs epmd, until ctx ends or no node has been registered for
// idleExit. Nodes start it through Config.Spawn.
func Serve(ctx context.Context, bindAddr string, port int, idleExit time.Duration, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	addr := net.JoinHostPort(bindAddr, strconv.Itoa(port))
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return ErrServing
		}
		return fmt.Errorf("name service: listen on %s: %w", addr, err)
	}
	srv := newServer(ln, Entry{}, &defaultTiming, logf)
	defer srv.close()
	logf("name service: serving on %s", addr)
	tick := time.NewTicker(idleExit / 4)
	defer tick.Stop()
	lastBusy := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-srv.failed:
			return fmt.Errorf("name service: listener on %s failed", addr)
		case <-tick.C:
		}
		srv.mu.Lock()
		n := len(srv.entries)
		srv.mu.Unlock()
		if n > 0 {
			lastBusy = time.Now()
		} else if time.Since(lastBusy) >= idleExit {
			logf("name service: no node registered for %v; exiting", idleExit)
			return nil
		}
	}
}
