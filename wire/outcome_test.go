package wire

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// The one rule for what an error says about a reward: only what proves
// nothing changed is "not applied".
func TestOutcomeOf(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Outcome
	}{
		{nil, OutcomeApplied},
		{fmt.Errorf("dial: %w", ErrRefused), OutcomeNotApplied},
		{fmt.Errorf("%w: %w", ErrNotSent, context.DeadlineExceeded), OutcomeNotApplied},
		{fmt.Errorf("x: %w", ErrGone), OutcomeNotApplied},
		{Errorf(CodeNoQuorum, "minority"), OutcomeNotApplied},
		{Errorf(CodeCrashed, "a is not an integer"), OutcomeNotApplied},
		{fmt.Errorf("wrapped: %w", Errorf(CodeBusy, "moving")), OutcomeNotApplied},
		{Errorf(CodeUnknown, "keeper did not confirm"), OutcomeUnknown},
		{Errorf(CodeUnavailable, "no answer"), OutcomeUnknown},
		{Errorf(CodeInternal, "bug"), OutcomeUnknown},
		{fmt.Errorf("call: %w", ErrLinkLost), OutcomeUnknown},
		{context.DeadlineExceeded, OutcomeUnknown},
		{errors.New("anything else"), OutcomeUnknown},
	} {
		if got := OutcomeOf(c.err); got != c.want {
			t.Errorf("OutcomeOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if CodeFor(fmt.Errorf("%w: %w", ErrNotSent, ErrRefused)) != CodeUnavailable || CodeFor(context.Canceled) != CodeUnknown {
		t.Errorf("CodeFor gives the wrong code to an error without one")
	}
}
