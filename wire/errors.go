package wire

import (
	"errors"
	"fmt"
)

// Code classifies a failed request so the caller can act on it without
// parsing words.
type Code uint8

const (
	CodeInternal    Code = 0
	CodeBadRequest  Code = 1  // the request itself is wrong; retrying will not help
	CodeNotOwner    Code = 2  // the receiver is not the player's owner; Owner says who is, if known
	CodeFenced      Code = 3  // the sender's incarnation or epoch was superseded
	CodeNoQuorum    Code = 4  // the receiver is on the minority side of a split
	CodeTooFewNodes Code = 5  // fewer than two live nodes: no keeper can be placed
	CodeCrashed     Code = 6  // the primary crashed on this request and was restarted
	CodeUnavailable Code = 7  // a peer could not be reached or did not answer in time; retry
	CodeOverflow    Code = 8  // the total would overflow int64; state unchanged
	CodeBusy        Code = 9  // the player is being moved or activated; retry
	CodeNoCopy      Code = 10 // the receiver holds no keeper copy of the player
	// CodeDeclaredDead: the sender's incarnation was declared failed by the
	// cluster (it was paused or cut off). It must drop what it holds and
	// rejoin under a new boot id. Unlike CodeFenced, which supersedes one
	// player's owner, this is about the whole node.
	CodeDeclaredDead Code = 11
	// CodeUnknown: the request may or may not have been applied (a keeper
	// did not confirm, a link broke and the re-sends did not settle it).
	// Re-send it with the same request id to learn which.
	CodeUnknown Code = 12
	// CodeNotFound: no node holds the player (a read of a player never
	// rewarded). Nothing was changed.
	CodeNotFound Code = 13
)

var codeNames = map[Code]string{
	CodeInternal: "internal", CodeBadRequest: "bad request", CodeNotOwner: "not owner",
	CodeFenced: "fenced", CodeNoQuorum: "no quorum", CodeTooFewNodes: "too few nodes",
	CodeCrashed: "crash", CodeUnavailable: "unavailable", CodeOverflow: "overflow",
	CodeBusy: "busy", CodeNoCopy: "no copy", CodeDeclaredDead: "declared dead",
	CodeUnknown: "outcome unknown", CodeNotFound: "not found",
}

func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// Error is a failed request, as it travels on the wire. It is an ordinary Go
// error on both sides, so errors.As finds it through any wrapping.
type Error struct {
	Code  Code   `msgpack:"c"`
	Msg   string `msgpack:"m"`
	Owner NodeID `msgpack:"o,omitempty"` // with CodeNotOwner: where to go instead
}

func (e *Error) Error() string { return e.Msg }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of the first *Error in err's chain, and false if
// there is none.
func CodeOf(err error) (Code, bool) {
	var we *Error
	if errors.As(err, &we) {
		return we.Code, true
	}
	return 0, false
}
