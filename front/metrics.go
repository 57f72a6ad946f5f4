package front

import (
	"time"

	"github.com/appnode/appnode/node"
	"github.com/appnode/appnode/replica"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Source is what the metrics read from the node at scrape time.
type Source interface {
	Stats() replica.Stats
	// Unprotected counts the players held here without a live second
	// copy: the number to alert on.
	Unprotected() int
	Links() map[string]bool
	Health() node.Health
}

// latencyBuckets resolve 100 µs to 1 s (and a little past it): a local
// reward takes a few hundred µs, a forwarded one about a millisecond, a
// failover hundreds of ms.
var latencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
}

// Metrics is the node's Prometheus registry: its own, not the global one,
// so that several nodes in one process (tests) do not collide. It is a
// replica.Observer: give it to node.Config before the node starts, then
// Attach the node.
type Metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	inFlight   prometheus.Gauge
	streams    prometheus.Gauge
	rejected   *prometheus.CounterVec
	forwarded  *prometheus.HistogramVec
	replicated *prometheus.HistogramVec
	draining   prometheus.Gauge
}

// NewMetrics makes a registry with the front door's metrics and the
// standard Go and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "appnode_http_requests_total",
			Help: "HTTP requests answered, by route and outcome (ok, or the error code).",
		}, []string{"route", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "appnode_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route and outcome.",
			Buckets: latencyBuckets,
		}, []string{"route", "outcome"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "appnode_http_requests_in_flight",
			Help: "HTTP requests being served now (event streams not included).",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "appnode_http_event_streams",
			Help: "Clients following /cluster/events now.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "appnode_http_rejected_requests_total",
			Help: "HTTP requests refused before reaching the node, by reason.",
		}, []string{"reason"}),
		forwarded: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "appnode_forward_duration_seconds",
			Help:    "Round trip of a reward forwarded to its owner on another node, by result (ok or error).",
			Buckets: latencyBuckets,
		}, []string{"result"}),
		replicated: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "appnode_replication_duration_seconds",
			Help:    "Round trip of an update to a player's keeper, by result (ok or error).",
			Buckets: latencyBuckets,
		}, []string{"result"}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "appnode_draining",
			Help: "1 while the node drains (POST /admin/drain) before it leaves.",
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.inFlight, m.streams, m.rejected, m.forwarded, m.replicated, m.draining,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Attach adds the metrics read from src at every scrape. Call it once.
func (m *Metrics) Attach(src Source) { m.reg.MustRegister(&nodeCollector{src: src}) }

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// Replicated implements replica.Observer.
func (m *Metrics) Replicated(d time.Duration, err error) {
	m.replicated.WithLabelValues(result(err)).Observe(d.Seconds())
}

// Forwarded implements replica.Observer.
func (m *Metrics) Forwarded(d time.Duration, err error) {
	m.forwarded.WithLabelValues(result(err)).Observe(d.Seconds())
}

func (m *Metrics) observe(route, outcome string, d time.Duration) {
	m.requests.WithLabelValues(route, outcome).Inc()
	m.latency.WithLabelValues(route, outcome).Observe(d.Seconds())
}

var _ replica.Observer = (*Metrics)(nil)

// nodeCollector reads the node's counters and state when scraped, so the
// reward path pays nothing for them.
type nodeCollector struct{ src Source }

var (
	descForwards    = prometheus.NewDesc("appnode_forwards_total", "Rewards this node sent on to the player's owner on another node.", nil, nil)
	descCreates     = prometheus.NewDesc("appnode_players_created_total", "Players created with this node as their owner.", nil, nil)
	descFailovers   = prometheus.NewDesc("appnode_failovers_total", "Players this node took over from another owner (claimed from a keeper or promoted).", nil, nil)
	descRestarts    = prometheus.NewDesc("appnode_primary_restarts_total", "Primaries restarted by the supervisor after a crash.", nil, nil)
	descStepDowns   = prometheus.NewDesc("appnode_primary_step_downs_total", "Primaries that stepped down, superseded by a newer owner.", nil, nil)
	descFencings    = prometheus.NewDesc("appnode_fencings_total", "Times the cluster declared this node failed (paused or cut off) and it rejoined as a new incarnation.", nil, nil)
	descPrimaries   = prometheus.NewDesc("appnode_primaries", "Players whose primary runs on this node.", nil, nil)
	descCopies      = prometheus.NewDesc("appnode_keeper_copies", "Keeper copies (backups) this node holds for players owned elsewhere.", nil, nil)
	descUnprotected = prometheus.NewDesc("appnode_unprotected_players", "Players held here without a live second copy on another node; alert if it stays above 0.", nil, nil)
	descMembers     = prometheus.NewDesc("appnode_members", "Live cluster members this node sees, itself included.", nil, nil)
	descCluster     = prometheus.NewDesc("appnode_quorum_members", "Members of the membership this node counts its majority against.", nil, nil)
	descQuorate     = prometheus.NewDesc("appnode_quorate", "1 if this node sees a majority of the cluster and may serve.", nil, nil)
	descFenced      = prometheus.NewDesc("appnode_fenced", "1 while this node drops its state after being declared failed.", nil, nil)
	descDirectory   = prometheus.NewDesc("appnode_directory_players", "Players this node lists as their creation arbiter.", nil, nil)
	descDirComplete = prometheus.NewDesc("appnode_directory_complete", "1 once every member has listed its players here for the current roster: creations of the players this node arbitrates then ask no one else.", nil, nil)
	descLink        = prometheus.NewDesc("appnode_peer_link_up", "1 if this node's outbound link to the peer is open.", []string{"peer"}, nil)
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descForwards, descCreates, descFailovers, descRestarts, descStepDowns, descFencings,
		descPrimaries, descCopies, descUnprotected, descMembers, descCluster, descQuorate, descFenced, descDirectory, descDirComplete, descLink} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	h := c.src.Health()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descForwards, st.Forwards)
	counter(descCreates, st.Creates)
	counter(descFailovers, st.Failovers)
	counter(descRestarts, st.Restarts)
	counter(descStepDowns, st.StepDowns)
	counter(descFencings, h.Fencings)
	gauge(descPrimaries, float64(st.Primaries))
	gauge(descCopies, float64(st.Copies))
	gauge(descUnprotected, float64(c.src.Unprotected()))
	gauge(descMembers, float64(st.Members))
	gauge(descCluster, float64(st.Cluster))
	gauge(descQuorate, boolFloat(st.Quorate))
	gauge(descFenced, boolFloat(h.Resetting))
	gauge(descDirectory, float64(st.Directory))
	gauge(descDirComplete, boolFloat(st.DirectoryComplete))
	for peer, up := range c.src.Links() {
		gauge(descLink, boolFloat(up), peer)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
