package wire

import (
	"errors"
	"fmt"
)

// ErrGone means the incarnation a call was addressed to no longer exists:
// its port refused the connection, or a process with a new boot id answered
// under its name. Unlike a timeout this is proof: the old process cannot
// still be acting, so its players may be taken over at once.
var ErrGone = errors.New("node incarnation is gone")

// ErrLinkLost means the connection broke while a call was outstanding: the
// request may or may not have been applied. Rewards carry a ReqID so that
// re-sending one after this error cannot apply it twice.
var ErrLinkLost = errors.New("connection lost during the call")

// Refused is the error of a call whose connection to node was refused
// (ECONNREFUSED: nothing listens on its port, or a firewall REJECT rule).
// The TCP transport and the in-memory network both build it here, so that
// what a refusal proves is decided in one place. Today it wraps ErrGone:
// a refusal is taken as proof that the incarnation is gone. A live peer
// behind a REJECT rule refuses too, so this is to become an error that
// proves nothing (issue 11, item 1); only this function changes then.
func Refused(node string, cause error) error {
	return fmt.Errorf("dial %s: %w: %w", node, ErrGone, cause)
}
