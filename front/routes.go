package front

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/appnode/appnode/node"
	"github.com/appnode/appnode/wire"
)

// access says who may call an endpoint and how it is counted.
type access struct {
	open    bool // no token needed (the balancer's probes)
	admin   bool // loopback clients only, unless AdminFromAnywhere
	limited bool // counts against MaxInFlight
	stream  bool // long-lived: counted, not timed
}

var (
	probe  = access{open: true}
	api    = access{limited: true}
	admin  = access{admin: true, limited: true}
	stream = access{admin: true, stream: true}
)

func (f *Front) routes() http.Handler {
	mux := http.NewServeMux()
	f.handle(mux, "POST /players/{id}/reward", api, f.reward)
	f.handle(mux, "GET /players/{id}", api, f.player)
	f.handle(mux, "GET /players", admin, f.players)
	f.handle(mux, "GET /livez", probe, f.livez)
	f.handle(mux, "GET /readyz", probe, f.readyz)
	f.handle(mux, "GET /metrics", api, f.metricsHandler())
	f.handle(mux, "GET /cluster", admin, f.cluster)
	f.handle(mux, "GET /cluster/events", stream, f.events)
	f.handle(mux, "POST /admin/drain", admin, f.drainHandler)
	f.handle(mux, "GET /{$}", admin, f.page)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			// The mux's own 404 and 405, in the API's JSON.
			w = &jsonMuxErrors{ResponseWriter: w}
			f.metrics.observe("other", "no_route", 0)
		}
		mux.ServeHTTP(w, r)
	})
}

// handle registers h under pattern with its access rules and metrics. h
// returns the outcome label: "ok" or the error code it answered.
func (f *Front) handle(mux *http.ServeMux, pattern string, a access, h func(http.ResponseWriter, *http.Request) string) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		outcome := f.serve(w, r, a, h)
		if a.stream {
			f.metrics.requests.WithLabelValues(pattern, outcome).Inc()
			return
		}
		f.metrics.observe(pattern, outcome, time.Since(began))
	})
}

func (f *Front) serve(w http.ResponseWriter, r *http.Request, a access, h func(http.ResponseWriter, *http.Request) string) string {
	if a.admin && !f.cfg.AdminFromAnywhere && !loopback(r) {
		f.metrics.rejected.WithLabelValues("admin_remote").Inc()
		return writeError(w, http.StatusForbidden, codeForbidden, "admin endpoints and the page answer only on this host; start the node with --http-admin-remote (and a token) to serve them to others", "")
	}
	if !a.open && !f.authorized(r) {
		if r.URL.Path == "/" && r.URL.Query().Get("token") != "" {
			return f.login(w, r)
		}
		f.metrics.rejected.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="appnode"`)
		return writeError(w, http.StatusUnauthorized, codeUnauthorized, "this node requires a bearer token: send Authorization: Bearer TOKEN (in a browser, open /?token=TOKEN once)", "")
	}
	if a.limited {
		select {
		case f.sem <- struct{}{}:
			defer func() { <-f.sem }()
		default:
			f.metrics.rejected.WithLabelValues("overloaded").Inc()
			return writeError(w, http.StatusServiceUnavailable, codeOverloaded, fmt.Sprintf("this node is serving %d HTTP requests already; retry", cap(f.sem)), "not_applied")
		}
		f.metrics.inFlight.Inc()
		defer f.metrics.inFlight.Dec()
	}
	return h(w, r)
}

// login takes a browser's token from /?token=..., keeps it in a cookie for
// the page's own requests, and sends the browser on to / without it in the
// address bar.
func (f *Front) login(w http.ResponseWriter, r *http.Request) string {
	given := r.URL.Query().Get("token")
	sum := sha256.Sum256([]byte(given))
	if subtle.ConstantTimeCompare(sum[:], f.tokenSum[:]) != 1 {
		f.metrics.rejected.WithLabelValues("unauthorized").Inc()
		return writeError(w, http.StatusUnauthorized, codeUnauthorized, "wrong token", "")
	}
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: given, Path: "/", HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return "ok"
}

func (f *Front) deadline(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), f.cfg.RequestTimeout)
}

type playerBody struct {
	Player   string `json:"player"`
	Total    int64  `json:"total"`
	Owner    string `json:"owner"`
	Keeper   string `json:"keeper"`
	ServedBy string `json:"served_by"`
}

// reward serves POST /players/{id}/reward.
func (f *Front) reward(w http.ResponseWriter, r *http.Request) string {
	player := r.PathValue("id")
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxKeyLen || strings.IndexFunc(key, func(c rune) bool { return c < 0x20 || c > 0x7e }) >= 0 {
		return writeError(w, http.StatusBadRequest, Slug(wire.CodeBadRequest), fmt.Sprintf("Idempotency-Key must be at most %d printable ASCII characters", maxKeyLen), "not_applied")
	}
	points, status, msg := readPoints(w, r, f.cfg.MaxBody)
	if status != 0 {
		code := Slug(wire.CodeBadRequest)
		if status == http.StatusRequestEntityTooLarge {
			code = codeBodyTooLarge
		}
		return writeError(w, status, code, msg, "not_applied")
	}
	ctx, cancel := f.deadline(r)
	defer cancel()
	total, owner, keeper, err := f.b.RewardWhere(ctx, player, points, key)
	if err != nil {
		return writeNodeError(w, err, true)
	}
	writeJSON(w, http.StatusOK, playerBody{Player: player, Total: total, Owner: owner, Keeper: keeper, ServedBy: f.b.Name()})
	return "ok"
}

// readPoints finds the points of a reward: ?points=N, else the body's
// {"points": N}. A JSON integer or string is taken as typed; any other
// JSON value (1.5, true, [1]) is passed on as its text, and the primary
// crashes on it as on `reward player1 a` at the console. A non-zero
// status is the client's error.
func readPoints(w http.ResponseWriter, r *http.Request, maxBody int64) (points string, status int, msg string) {
	if q := r.URL.Query(); q.Has("points") {
		return q.Get("points"), 0, ""
	}
	var body struct {
		Points json.RawMessage `json:"points"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		if isTooLarge(err) {
			return "", http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over %d bytes; a reward is {\"points\": 5}", maxBody)
		}
		if errors.Is(err, io.EOF) {
			return "", http.StatusBadRequest, `give the points as {"points": 5} or ?points=5`
		}
		return "", http.StatusBadRequest, fmt.Sprintf(`the body is not {"points": N}: %v`, err)
	}
	if dec.More() {
		return "", http.StatusBadRequest, "the body holds more than one JSON value"
	}
	raw := strings.TrimSpace(string(body.Points))
	switch {
	case raw == "" || raw == "null":
		return "", http.StatusBadRequest, `points are missing: give {"points": 5} or ?points=5`
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(body.Points, &s); err != nil {
			return "", http.StatusBadRequest, fmt.Sprintf("points: %v", err)
		}
		return s, 0, ""
	}
	return raw, 0, ""
}

// player serves GET /players/{id}.
func (f *Front) player(w http.ResponseWriter, r *http.Request) string {
	player := r.PathValue("id")
	ctx, cancel := f.deadline(r)
	defer cancel()
	total, owner, keeper, err := f.b.Read(ctx, player)
	if err != nil {
		return writeNodeError(w, err, false)
	}
	writeJSON(w, http.StatusOK, playerBody{Player: player, Total: total, Owner: owner, Keeper: keeper, ServedBy: f.b.Name()})
	return "ok"
}

type pageBody struct {
	Node    string      `json:"node"`
	Players []pageEntry `json:"players"`
	Next    string      `json:"next"`
}

type pageEntry struct {
	Player string `json:"player"`
	Total  int64  `json:"total"`
	Keeper string `json:"keeper"`
}

// players serves GET /players?node=NAME&cursor=C&limit=N.
func (f *Front) players(w http.ResponseWriter, r *http.Request) string {
	q := r.URL.Query()
	nodeName := q.Get("node")
	if nodeName == "" {
		nodeName = f.b.Name()
	}
	limit := defaultPage
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPage {
			return writeError(w, http.StatusBadRequest, Slug(wire.CodeBadRequest), fmt.Sprintf("limit must be 1 to %d", maxPage), "")
		}
		limit = n
	}
	cursor := q.Get("cursor")
	if len(cursor) > wire.MaxPlayer {
		return writeError(w, http.StatusBadRequest, Slug(wire.CodeBadRequest), "cursor is too long", "")
	}
	ctx, cancel := f.deadline(r)
	defer cancel()
	page, next, err := f.b.PlayersPage(ctx, nodeName, cursor, limit)
	if err != nil {
		return writeNodeError(w, err, false)
	}
	out := make([]pageEntry, len(page))
	for i, e := range page {
		out[i] = pageEntry{Player: e.Player, Total: e.Total, Keeper: e.Keeper}
	}
	writeJSON(w, http.StatusOK, pageBody{Node: nodeName, Players: out, Next: next})
	return "ok"
}

func (f *Front) livez(w http.ResponseWriter, r *http.Request) string {
	writeJSON(w, http.StatusOK, map[string]any{"live": true, "node": f.b.Name()})
	return "ok"
}

func (f *Front) readyz(w http.ResponseWriter, r *http.Request) string {
	ready, code, why := f.readiness()
	if !ready {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "node": f.b.Name(), "code": code, "reason": why})
		return code
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true, "node": f.b.Name()})
	return "ok"
}

func (f *Front) drainHandler(w http.ResponseWriter, r *http.Request) string {
	if f.cfg.Drain == nil {
		return writeError(w, http.StatusNotImplemented, "drain_unsupported", "this node was started without a way to drain", "")
	}
	first := f.drain()
	writeJSON(w, http.StatusAccepted, map[string]any{"draining": true, "node": f.b.Name(), "already": !first,
		"message": fmt.Sprintf("readiness is false; in %v the node hands its players over and exits, as after q", f.cfg.DrainDelay)})
	return "ok"
}

type clusterBody struct {
	Self     string            `json:"self"`
	Ready    bool              `json:"ready"`
	Draining bool              `json:"draining"`
	Members  []node.MemberInfo `json:"members"`
}

func (f *Front) cluster(w http.ResponseWriter, r *http.Request) string {
	ctx, cancel := f.deadline(r)
	defer cancel()
	ready, _, _ := f.readiness()
	writeJSON(w, http.StatusOK, clusterBody{Self: f.b.Name(), Ready: ready, Draining: f.draining.Load(), Members: f.b.Cluster(ctx, f.cfg.ClusterTimeout)})
	return "ok"
}

// jsonMuxErrors turns the mux's plain-text 404 and 405 into the API's
// JSON errors.
type jsonMuxErrors struct {
	http.ResponseWriter
	wrote bool
}

func (w *jsonMuxErrors) WriteHeader(status int) {
	if w.wrote {
		return
	}
	w.wrote = true
	switch status {
	case http.StatusNotFound:
		writeError(w.ResponseWriter, status, codeNoRoute, "no such endpoint; see GET / for the page, POST /players/{id}/reward, GET /players/{id}", "")
	case http.StatusMethodNotAllowed:
		writeError(w.ResponseWriter, status, codeMethodNotAllowed, "this endpoint does not take that method (see the Allow header)", "")
	default:
		w.ResponseWriter.WriteHeader(status)
		w.wrote = false
	}
}

func (w *jsonMuxErrors) Write(b []byte) (int, error) {
	if w.wrote {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// newLogger sends net/http's own complaints (TLS handshakes, bad
// requests) to the node's log.
func newLogger(logf func(string, ...any)) *log.Logger {
	return log.New(logWriter(logf), "front: ", 0)
}

type logWriter func(string, ...any)

func (l logWriter) Write(p []byte) (int, error) {
	l("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
