package replica

const (
	Info    Level = "INFO"
	Warning Level = "WARNING"
	Error   Level = "ERROR"
)

// Event is something a person watching the node should see.
type Event struct {
	Level Level
	Text  string
}
