package shell

import (
	"os"
	"strings"

	"github.com/appnode/appnode/replica"
)

// reportTime is the time format of Erlang's reports: 27-Nov-2026::13:20:01.123456.
const reportTime = "2-Jan-2006::15:04:05.000000"

func reportHeader(ev replica.Event) string {
	level := ev.Level
	if level == "" {
		level = replica.Info
	}
	return "=" + string(level) + " REPORT==== " + ev.Time.Format(reportTime) + " ==="
}

// report formats an event as the Erlang shell prints a report:
//
//	=INFO REPORT==== 27-Nov-2026::13:20:01.123456 ===
//	    node app_node2@host up
func report(ev replica.Event) string {
	var b strings.Builder
	b.WriteString(reportHeader(ev) + "\n")
	for _, line := range strings.Split(ev.Text, "\n") {
		b.WriteString("    " + line + "\n")
	}
	return b.String()
}

// reportLine formats an event on one line, for scripted mode.
func reportLine(ev replica.Event) string {
	return reportHeader(ev) + " " + ev.Text
}

// watch prints events as they arrive, and tells readline when the terminal
// was resized, until stop is closed. It is the console's only background
// goroutine; Run starts it and waits for it.
func watch(stop <-chan struct{}, events <-chan replica.Event, print func(replica.Event), resized <-chan os.Signal, onResize func()) {
	for {
		select {
		case <-stop:
			return
		case ev, ok := <-events:
			if !ok {
				events = nil // the node is shutting down; nothing more to print
				continue
			}
			print(ev)
		case <-resized:
			if onResize != nil {
				onResize()
			}
		}
	}
}
