package main

import (
	"os"
	"strings"
	"syscall"
)

// sysmonAwake is the GODEBUG setting a node and the bench run with: Go's
// scheduler trace, at an interval of 24.8 days (the most it takes).
//
// Why: when every P of a Go process is idle, its sysmon thread goes into a
// deep sleep, and the next goroutine to enter a system call wakes it
// (runtime.entersyscallWakeSysmon), after which sysmon polls every 20 µs
// until it finds every P idle again and sleeps again. A node serving one
// request at a time is idle between requests, so each request paid a
// futex wake on its own path and about four context switches of sysmon's:
// with two nodes and one caller (scripts/node-ab.sh), 7.3 context switches
// and 2.8 futex calls per reward, against 3.4 and 0.4 with this setting;
// the p50s, and 64 callers on three nodes, beside the bare wire and the
// peers in the same runs, are in BENCHMARKS.md, "Go's sysmon". The
// scheduler trace is the runtime's only switch that keeps sysmon out of
// that sleep: with it set, sysmon polls at most every 10 ms instead,
// which an idle node pays in about 0.2% of a core (0.7% against 0.5%).
// It prints a line of scheduler state to standard error once every 24.8
// days of the machine's uptime (once at start on a machine up for
// longer), and the scheduler's state when the runtime dies of a fatal
// error.
//
// An operator who wants Go's default sets GODEBUG=schedtrace=0 (any
// schedtrace setting is left alone).
const sysmonAwake = "schedtrace=2147483647"

// withSysmonAwake returns env with sysmonAwake added to its GODEBUG, or
// nil if env's GODEBUG already says what schedtrace should be.
func withSysmonAwake(env []string) []string {
	out := make([]string, 0, len(env)+1)
	debug := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			debug = v
			continue
		}
		out = append(out, kv)
	}
	for _, setting := range strings.Split(debug, ",") {
		if strings.HasPrefix(setting, "schedtrace=") {
			return nil
		}
	}
	if debug != "" {
		debug += ","
	}
	return append(out, "GODEBUG="+debug+sysmonAwake)
}

// keepSysmonAwake starts this program again in this process with
// sysmonAwake in its GODEBUG, which the runtime reads only at start (see
// sysmonAwake). If it cannot, the program goes on as it is, slower.
func keepSysmonAwake() {
	env := withSysmonAwake(os.Environ())
	if env == nil {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, env) // returns only if it failed
}
