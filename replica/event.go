package replica

import "time"

// Level says how loudly an event should be shown, as Erlang's
// error_logger does (INFO, WARNING, ERROR reports).
type Level string

const (
	Info    Level = "INFO"
	Warning Level = "WARNING"
	Error   Level = "ERROR"
)

// Event is something a person watching the node should see as it happens:
// a node up or down, a keeper created or moved, a primary restarted. The
// node's own reports (membership, fencing) are Events too, so the console,
// the log and any other watcher read one type.
type Event struct {
	// Seq numbers the node's events from 1, in the order it published
	// them (the node sets it; a store's own events carry 0 until then); a
	// subscriber that missed some sees the gap.
	Seq   uint64
	Time  time.Time
	Level Level
	Text  string
}
