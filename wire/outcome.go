package wire

import "errors"

// Outcome is what a request that changes state (a reward) did, as far as
// its caller can know. It is decided in one place, OutcomeOf, so that the
// console, `appnode rpc`, the HTTP front door, the bench and the tests all
// read an error the same way.
type Outcome uint8

const (
	// OutcomeApplied: the request succeeded (err == nil).
	OutcomeApplied Outcome = 0
	// OutcomeNotApplied: the request certainly changed nothing; sending it again,
	// with any id, cannot apply it twice.
	OutcomeNotApplied Outcome = 1
	// OutcomeUnknown: the request may or may not have been applied. Only a
	// re-send with the same request id (wire.ReqID, the HTTP
	// Idempotency-Key) is safe; the answer to it says which.
	OutcomeUnknown Outcome = 2
)

func (o Outcome) String() string {
	switch o {
	case OutcomeApplied:
		return "applied"
	case OutcomeNotApplied:
		return "not applied"
	case OutcomeUnknown:
		return "unknown"
	}
	return "outcome(?)"
}

// OutcomeOf classifies err, the error a reward failed with. Only what
// proves that nothing changed counts as OutcomeNotApplied: a refusal by the node
// that would have applied it (a code other than CodeUnknown, CodeInternal
// and CodeUnavailable), ErrGone (the addressed process no longer exists,
// so it cannot apply anything), ErrRefused or ErrNotSent (the request
// never left). Everything else, timeouts and broken links
// among them, is OutcomeUnknown.
func OutcomeOf(err error) Outcome {
	if err == nil {
		return OutcomeApplied
	}
	if errors.Is(err, ErrGone) || errors.Is(err, ErrRefused) || errors.Is(err, ErrNotSent) {
		return OutcomeNotApplied
	}
	code, ok := CodeOf(err)
	if !ok {
		return OutcomeUnknown
	}
	switch code {
	case CodeUnknown, CodeInternal, CodeUnavailable:
		return OutcomeUnknown
	}
	return OutcomeNotApplied
}

// ShouldResend reports whether the node that took a reward in should send
// it again at once, with the same request id: the owner moved or is being
// activated (the next attempt finds the new one), the addressed process is
// gone, or the link broke mid-call (the id makes the re-send safe; its
// answer settles the outcome).
func ShouldResend(err error) bool {
	if errors.Is(err, ErrGone) || errors.Is(err, ErrRefused) || errors.Is(err, ErrLinkLost) {
		return true
	}
	code, ok := CodeOf(err)
	return ok && (code == CodeNotOwner || code == CodeBusy || code == CodeNoCopy)
}

// CodeFor is the code err travels with in a reply to a client (a
// CommandReply, an HTTP error body): its own code if it has one, else the
// one its outcome implies.
func CodeFor(err error) Code {
	if code, ok := CodeOf(err); ok {
		return code
	}
	if errors.Is(err, ErrGone) || errors.Is(err, ErrRefused) || errors.Is(err, ErrNotSent) {
		return CodeUnavailable
	}
	return CodeUnknown
}
