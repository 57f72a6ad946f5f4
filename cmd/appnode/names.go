package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/appnode/appnode/names"
)

// namesIdleExit is how long the host's name service process stays up with
// no node registered.
const namesIdleExit = 10 * time.Second

// spawnNames returns how a node starts this host's name service: this
// binary, `names-serve`, detached into a session of its own so that it
// outlives the node that started it (a killed node must not take the
// names of the others with it), as `erl` starts `epmd -daemon`.
func spawnNames(bind string, port int) func() error {
	return func() error {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this program to start the name service: %w", err)
		}
		cmd := exec.Command(self, "names-serve", "--bind", bind, "--port", strconv.Itoa(port))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start the name service: %w", err)
		}
		// Reap it if it exits while this node runs; otherwise init does.
		go func() { _ = cmd.Wait() }()
		return nil
	}
}

// namesServe is the name service process (the hidden `appnode
// names-serve`): it exits when another already serves the port, when
// no node has been registered for namesIdleExit, or on SIGTERM.
func namesServe(args []string) int {
	fs := flag.NewFlagSet("appnode names-serve", flag.ContinueOnError)
	bind := fs.String("bind", "127.0.0.1", "address to listen on")
	port := fs.Int("port", names.DefaultPort, "port to listen on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	err := names.Serve(ctx, *bind, *port, namesIdleExit, nil)
	if err != nil && !errors.Is(err, names.ErrServing) {
		fmt.Fprintf(os.Stderr, "appnode names-serve: %v\n", err)
		return 1
	}
	return 0
}
