package front

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/appnode/appnode/replica"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// streamBuffer is each event stream's own buffer in the node's broadcast:
// a client that falls further behind loses events from it, and gets them
// again from the node's ring if they are still there.
const streamBuffer = 256

type eventBody struct {
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Text  string    `json:"text"`
}

// events serves GET /cluster/events: the console's reports as Server-Sent
// Events, each with its number as id. A client that reconnects with
// Last-Event-ID (browsers do it by themselves) gets what it missed from
// the node's ring of recent events; a first connection gets the whole
// ring. If the ring no longer holds some of what was missed, a "gap" event
// says so.
func (f *Front) events(w http.ResponseWriter, r *http.Request) string {
	select {
	case f.streams <- struct{}{}:
		defer func() { <-f.streams }()
	default:
		f.metrics.rejected.WithLabelValues("overloaded").Inc()
		return writeError(w, http.StatusServiceUnavailable, codeOverloaded, fmt.Sprintf("%d clients follow the events already; retry", cap(f.streams)), "")
	}
	// Subscribe before replaying, so that nothing falls between the two.
	ch, cancel := f.b.Subscribe(streamBuffer)
	defer cancel()
	f.metrics.streams.Inc()
	defer f.metrics.streams.Dec()

	es := &eventStream{w: w, rc: http.NewResponseController(w), b: f.b, sent: lastEventID(r)}
	// The server's read deadline would end a stream that outlives it.
	_ = es.rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events on at once
	w.WriteHeader(http.StatusOK)

	if !es.catchUp() || !es.write(": following %s\n\n", f.b.Name()) {
		return "ok"
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return "ok"
		case <-f.done:
			return "ok"
		case e, ok := <-ch:
			if !ok {
				return "ok" // the node stopped
			}
			if e.Seq > es.sent+1 && !es.catchUp() { // this stream's buffer overflowed
				return "ok"
			}
			if !es.send(e) {
				return "ok"
			}
		case <-tick.C:
			if !es.write(": keepalive\n\n") {
				return "ok"
			}
		}
	}
}

// lastEventID is the number of the last event a client has seen: from the
// header a browser sends when it reconnects, or from the query for a
// client that cannot set headers; 0 for a first connection.
func lastEventID(r *http.Request) uint64 {
	var last uint64
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		last, _ = strconv.ParseUint(s, 10, 64)
	} else if s := r.URL.Query().Get("last_event_id"); s != "" {
		last, _ = strconv.ParseUint(s, 10, 64)
	}
	return last
}

// eventStream writes one client's events. It remembers the last one sent,
// so that the ring's replay and the subscription, which overlap, send no
// event twice.
type eventStream struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	b    Backend
	sent uint64
}

// write writes and flushes one piece of the stream, and reports whether
// the client is still there to take more.
func (es *eventStream) write(format string, args ...any) bool {
	_ = es.rc.SetWriteDeadline(time.Now().Add(streamWrite))
	if _, err := fmt.Fprintf(es.w, format, args...); err != nil {
		return false
	}
	return es.rc.Flush() == nil
}

func (es *eventStream) send(e replica.Event) bool {
	if e.Seq <= es.sent {
		return true
	}
	b, _ := json.Marshal(eventBody{Seq: e.Seq, Time: e.Time, Level: string(e.Level), Text: e.Text})
	es.sent = e.Seq
	return es.write("id: %d\nevent: report\ndata: %s\n\n", e.Seq, b)
}

// catchUp sends what the ring holds after sent, and a gap event first if
// the ring no longer holds all of it.
func (es *eventStream) catchUp() bool {
	kept, complete := es.b.EventsSince(es.sent)
	if !complete && es.sent > 0 {
		if !es.write("event: gap\ndata: {\"after\":%d}\n\n", es.sent) {
			return false
		}
	}
	for _, e := range kept {
		if !es.send(e) {
			return false
		}
	}
	return true
}

func (f *Front) metricsHandler() func(http.ResponseWriter, *http.Request) string {
	h := promhttp.HandlerFor(f.metrics.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 2,
		Timeout:             5 * time.Second,
	})
	return func(w http.ResponseWriter, r *http.Request) string {
		h.ServeHTTP(w, r)
		return "ok"
	}
}
