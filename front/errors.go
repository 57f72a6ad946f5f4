package front

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/appnode/appnode/wire"
)

// Error bodies are {"error":{"code":"no_quorum","message":"...","outcome":"not_applied"}}.
// code is stable and machine-readable: one per wire.Code (codeSlugs), plus
// the front door's own (below). outcome is given for requests that change
// state (a reward), as wire.OutcomeOf decides it: "not_applied" (sending it
// again cannot apply it twice), or "unknown" (only a retry with the same
// Idempotency-Key is safe; its answer says which).

// The front door's own codes, for what never reaches the node.
const (
	codeUnauthorized     = "unauthorized"        // 401: no or wrong bearer token
	codeForbidden        = "admin_loopback_only" // 403: an admin endpoint asked from another host
	codeOverloaded       = "overloaded"          // 503: too many requests at once
	codeDraining         = "draining"            // 503: the node is draining
	codeBodyTooLarge     = "body_too_large"      // 413
	codeNoRoute          = "no_such_endpoint"    // 404: no endpoint at this path
	codeMethodNotAllowed = "method_not_allowed"  // 405
)

// codeSlugs names every wire.Code in snake case. The names are part of the
// HTTP API: never change one.
var codeSlugs = map[wire.Code]string{
	wire.CodeInternal:     "internal",
	wire.CodeBadRequest:   "bad_request",
	wire.CodeNotOwner:     "not_owner",
	wire.CodeFenced:       "fenced",
	wire.CodeNoQuorum:     "no_quorum",
	wire.CodeTooFewNodes:  "too_few_nodes",
	wire.CodeCrashed:      "crashed",
	wire.CodeUnavailable:  "unavailable",
	wire.CodeOverflow:     "overflow",
	wire.CodeBusy:         "busy",
	wire.CodeNoCopy:       "no_copy",
	wire.CodeDeclaredDead: "declared_dead",
	wire.CodeUnknown:      "outcome_unknown",
	wire.CodeNotFound:     "not_found",
}

// Slug is the HTTP API's name of code.
func Slug(code wire.Code) string {
	if s, ok := codeSlugs[code]; ok {
		return s
	}
	return "internal"
}

// statusFor maps a code to its HTTP status, and says whether a retry
// after a moment may succeed (then the answer carries Retry-After).
func statusFor(code wire.Code) (status int, retry bool) {
	switch code {
	case wire.CodeBadRequest:
		return http.StatusBadRequest, false
	case wire.CodeCrashed, wire.CodeOverflow:
		return http.StatusUnprocessableEntity, false
	case wire.CodeNotFound:
		return http.StatusNotFound, false
	case wire.CodeNoQuorum, wire.CodeTooFewNodes, wire.CodeFenced, wire.CodeDeclaredDead,
		wire.CodeBusy, wire.CodeNotOwner, wire.CodeNoCopy, wire.CodeUnavailable:
		return http.StatusServiceUnavailable, true
	case wire.CodeUnknown:
		return http.StatusGatewayTimeout, true
	}
	return http.StatusInternalServerError, false
}

// retryAfterSeconds is the Retry-After of a 503: membership settles and a
// failover completes within a second or two.
const retryAfterSeconds = 1

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Outcome string `json:"outcome,omitempty"`
}

// outcomeSlug is the HTTP API's name of an outcome.
func outcomeSlug(o wire.Outcome) string {
	switch o {
	case wire.OutcomeApplied:
		return "applied"
	case wire.OutcomeNotApplied:
		return "not_applied"
	}
	return "unknown"
}

// writeNodeError answers err, an error from the node. withOutcome says
// the request would change state, so its outcome is part of the answer.
// It returns the code, for metrics.
func writeNodeError(w http.ResponseWriter, err error, withOutcome bool) string {
	code := wire.CodeFor(err)
	status, retry := statusFor(code)
	outcome := ""
	if withOutcome {
		outcome = outcomeSlug(wire.OutcomeOf(err))
	}
	if retry {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	slug := Slug(code)
	writeJSON(w, status, errorBody{errorDetail{Code: slug, Message: err.Error(), Outcome: outcome}})
	return slug
}

// writeError answers a failure of the front door itself.
func writeError(w http.ResponseWriter, status int, code, message, outcome string) string {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	writeJSON(w, status, errorBody{errorDetail{Code: code, Message: message, Outcome: outcome}})
	return code
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"could not encode the answer"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// errBodyTooLarge is how a body over the limit shows after MaxBytesReader.
func isTooLarge(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}
