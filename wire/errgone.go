package wire

import "errors"

// ErrGone means the incarnation a call was addressed to no longer exists:
// a process with a new boot id answered under its name. Unlike a timeout
// or a refusal this is proof: the old process cannot still be acting. The
// request was not delivered to it.
var ErrGone = errors.New("node incarnation is gone")

// ErrRefused means the connection was refused (a TCP reset, or ICMP port
// unreachable): the request was not delivered. It is not proof that the
// node is dead: a live process behind a firewall REJECT rule, or a
// middlebox that resets unknown flows, looks the same. It is a hint that
// starts the agreed path (package quorum): the node leaves the roster only
// when most of the roster cannot reach it either.
var ErrRefused = errors.New("connection refused")

// ErrNotSent means the request was never written to a connection (no
// connection could be made: refused, timed out, failed handshake): it
// certainly was not applied. It wraps the reason, which may itself be
// ErrGone or ErrRefused.
var ErrNotSent = errors.New("request not sent")

// ErrLinkLost means the connection broke while a call was outstanding: the
// request may or may not have been applied. Rewards carry a ReqID so that
// re-sending one after this error cannot apply it twice.
var ErrLinkLost = errors.New("connection lost during the call")
