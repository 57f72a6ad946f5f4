package wire

import "errors"

// ErrGone means the incarnation a call was addressed to no longer exists:
// its port refused the connection, or a process with a new boot id answered
// under its name. Unlike a timeout this is proof: the old process cannot
// still be acting, so its players may be taken over at once.
var ErrGone = errors.New("node incarnation is gone")

// ErrLinkLost means the connection broke while a call was outstanding: the
// request may or may not have been applied. Rewards carry a ReqID so that
// re-sending one after this error cannot apply it twice.
var ErrLinkLost = errors.New("connection lost during the call")
