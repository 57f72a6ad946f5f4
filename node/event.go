// Package node is one appnode process as the cluster sees it: its name and
// incarnation, the per-host name service, Serf membership, and the
// msgpack-over-TCP transport that carries replica messages between nodes.
package node

import "time"

// EventLevel says how loudly the console shows an event, as Erlang's
// error_logger does (INFO, WARNING, ERROR reports).
type EventLevel string

const (
	LevelInfo    EventLevel = "INFO"
	LevelWarning EventLevel = "WARNING"
	LevelError   EventLevel = "ERROR"
)

// Event is something a person at the console should see as it happens:
// a node up or down, a keeper created or moved, a primary restarted.
type Event struct {
	// Seq numbers the node's events from 1, in the order they happened;
	// a subscriber that missed some (Subscribe) sees the gap.
	Seq   uint64
	Time  time.Time
	Level EventLevel
	Text  string
}
