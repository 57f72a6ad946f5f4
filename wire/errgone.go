package wire

import "errors"

// ErrGone means the incarnation a call was addressed to no longer exists:
// its port refused the connection, or a process with a new boot id answered
// under its name. Unlike a timeout this is proof: the old process cannot
// still be acting, so its players may be taken over at once.
var ErrGone = errors.New("node incarnation is gone")
