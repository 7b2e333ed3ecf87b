package worker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/xygroup/xygroup/xylink"
)

// Metrics are the worker's Prometheus metrics, on a registry of their own so that
// several workers can live in one process (tests) without clashing.
type Metrics struct {
	Registry *prometheus.Registry

	Commands     *prometheus.CounterVec   // outcome: created|failed, class
	APICalls     *prometheus.HistogramVec // API latency by answer
	Attempts     prometheus.Histogram     // API calls per finished command
	LimiterWait  *prometheus.HistogramVec // by priority
	BreakerState *prometheus.GaugeVec     // 0 closed, 1 half-open, 2 open, by enterprise
	InFlight     prometheus.Gauge
	Parked       prometheus.Gauge
	LaneCommands *prometheus.GaugeVec
	LaneMoves    *prometheus.CounterVec
	// ParkedRefused: commands that could not be parked, by enterprise and
	// reason: over_quota (the tenant's share is full) or stream_full.
	ParkedRefused *prometheus.CounterVec
	Retries       *prometheus.CounterVec // by disposition
	Redeliveries  prometheus.Counter
	// ServerMoves: forced reconnects away from a NATS server that could not
	// write to JetStream while another could (servermove.go).
	ServerMoves prometheus.Counter
	// LimiterGrants: grants this replica received, by enterprise and priority.
	LimiterGrants *prometheus.CounterVec
	// LimiterBudget: each enterprise's configured calls per second (cluster-wide).
	LimiterBudget *prometheus.GaugeVec
	// LimiterGuard: the guard each enterprise's grants are spaced with now, as
	// learned from rate-limit answers (reported by the replica that dispenses).
	LimiterGuard *prometheus.GaugeVec
	// LimiterMaxWindow: the most requests the dispenser let leave in any
	// sliding second of the last minute, and LimiterThrottled the rate-limit
	// answers reported to it, per enterprise; reported by the dispensing replica.
	LimiterMaxWindow *prometheus.GaugeVec
	LimiterThrottled *prometheus.CounterVec
	// Probes of waiting meetings, by result (not_started, answered, ended, no_news).
	Probes *prometheus.CounterVec
	// ReleaseLatency: from a meeting's release to each parked command's end.
	ReleaseLatency prometheus.Histogram
	// Cancels: commands a cancel named, by result (cancelled, rejected).
	Cancels *prometheus.CounterVec
	// StoreFull: 1 while a stream or bucket refused a write for lack of room
	// within the last minute (storefull.go); StoreBytes and StoreMaxBytes
	// how full each one is.
	StoreFull     *prometheus.GaugeVec
	StoreBytes    *prometheus.GaugeVec
	StoreMaxBytes *prometheus.GaugeVec
}

// NewMetrics registers the metrics on a new registry (with Go and process collectors).
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: r,
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xygroup_commands_total",
			Help: "Commands that ended, by outcome (created, failed) and failure class."}, []string{"outcome", "class"}),
		APICalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "xygroup_api_request_duration_seconds",
			Help:    "XYLink API call latency, by answer (ok, an errorCode, an HTTP status, or transport).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"enterprise", "answer"}),
		Attempts: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "xygroup_command_attempts",
			Help: "API calls made per ended command.", Buckets: []float64{0, 1, 2, 3, 5, 10, 20, 50}}),
		LimiterWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "xygroup_limiter_wait_seconds",
			Help:    "Time spent waiting for a rate-limiter grant, by priority.",
			Buckets: []float64{.001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"priority"}),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xygroup_breaker_state",
			Help: "Circuit breaker state per enterprise: 0 closed, 1 half-open, 2 open."}, []string{"enterprise"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xygroup_in_flight",
			Help: "Commands being processed by this replica."}),
		LaneCommands: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xygroup_lane_commands",
			Help: "Commands waiting in the enterprise's lane (its commands crowd the replicas: they are taken at its pace)."}, []string{"enterprise"}),
		LaneMoves: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xygroup_lane_moves_total",
			Help: "Commands this replica moved to their enterprise's lane."}, []string{"enterprise"}),
		ParkedRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xygroup_parked_refused_total",
			Help: "Commands refused rather than parked (failed as over_quota), by enterprise and reason: over_quota (the enterprise's share of the parked stream is full) or stream_full (the parked stream, or the server's storage, is full)."}, []string{"enterprise", "reason"}),
		Parked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xygroup_parked",
			Help: "Commands waiting for their meeting to start (as seen by this replica)."}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xygroup_retries_total",
			Help: "Commands put back for a later try, by reason."}, []string{"reason"}),
		Redeliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "xygroup_redeliveries_total",
			Help: "Command deliveries after the first."}),
		ServerMoves: prometheus.NewCounter(prometheus.CounterOpts{Name: "xygroup_nats_server_moves_total",
			Help: "Reconnects to another NATS server because this replica's could not write to JetStream while another could."}),
		LimiterGrants: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xygroup_limiter_grants_total",
			Help: "Rate-limiter grants received by this replica, by enterprise and priority; summed over replicas, the API calls."},
			[]string{"enterprise", "priority"}),
		LimiterBudget: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xygroup_limiter_budget",
			Help: "API calls per second allowed per enterprise across the cluster."}, []string{"enterprise"}),
		LimiterGuard: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xygroup_limiter_guard_seconds",
			Help: "The guard each enterprise's grants are spaced with, learned from rate-limit answers; reported by the dispensing replica."},
			[]string{"enterprise"}),
		LimiterMaxWindow: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xygroup_limiter_max_window_requests",
			Help: "The most requests the rate-limit dispenser let leave in any sliding second of the last minute, per enterprise (at most its budget while the limit holds); reported by the dispensing replica."},
			[]string{"enterprise"}),
		LimiterThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xygroup_limiter_throttled_total",
			Help: "Rate-limit answers (HTTP 429) reported to the rate-limit dispenser, per enterprise, counted by the replica that dispensed; summed over replicas, the cluster's."},
			[]string{"enterprise"}),
		Probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xygroup_probes_total",
			Help: "Probes of waiting meetings, by result."}, []string{"result"}),
		Cancels: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xygroup_cancels_total",
			Help: "Commands named by cancels, by result: cancelled (it ends as failed.cancelled) or rejected (answered on xylink.groups.cancel_rejected)."}, []string{"result"}),
		StoreFull: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xygroup_store_full",
			Help: "1 while the stream or bucket refused a write for lack of room within the last minute (its MaxBytes, or JetStream storage, is full): commands that need it wait."}, []string{"store"}),
		StoreBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xygroup_store_bytes",
			Help: "Bytes the stream or bucket holds, read every 30 s."}, []string{"store"}),
		StoreMaxBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xygroup_store_max_bytes",
			Help: "The stream's or bucket's MaxBytes (-1: none), read every 30 s."}, []string{"store"}),
		ReleaseLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "xygroup_release_completion_seconds",
			Help:    "Time from a meeting answering its probe to each of its parked commands ending.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}}),
	}
	// Every series whose labels are known before anything happens exists
	// from the start, at zero: a dashboard or an alert on a rate sees it.
	m.Commands.WithLabelValues("created", "").Add(0)
	for _, c := range xylink.Classes {
		m.Commands.WithLabelValues("failed", string(c)).Add(0)
	}
	for _, reason := range retryReasons {
		m.Retries.WithLabelValues(reason).Add(0)
	}
	m.Cancels.WithLabelValues("cancelled").Add(0)
	m.Cancels.WithLabelValues("rejected").Add(0)
	for _, result := range []string{"not_started", "answered", "ended", "no_news"} {
		m.Probes.WithLabelValues(result).Add(0)
	}
	for _, p := range priorities {
		m.LimiterWait.WithLabelValues(p.String())
	}
	for _, store := range storeNames {
		m.StoreFull.WithLabelValues(store).Set(0)
	}
	r.MustRegister(m.StoreFull, m.StoreBytes, m.StoreMaxBytes, m.LimiterGrants, m.LimiterBudget, m.LimiterGuard, m.LimiterMaxWindow, m.LimiterThrottled, m.Probes, m.ReleaseLatency, m.Cancels, m.Commands, m.APICalls, m.Attempts, m.LimiterWait, m.BreakerState, m.InFlight, m.Parked, m.LaneCommands, m.LaneMoves, m.ParkedRefused, m.Retries, m.Redeliveries, m.ServerMoves)
	return m
}

// priorities are the limiter's priorities, for their metric series.
var priorities = []Priority{PriorityLive, PriorityRetry, PriorityReplay, PriorityProbe}

// retryReasons label xygroup_retries_total: a command put back before its
// call (breaker_open, limiter_wait, meeting_waiting, stale_grant), or after
// its call by the answer's disposition.
var retryReasons = []string{"breaker_open", "limiter_wait", "meeting_waiting", "stale_grant",
	xylink.Retry.String(), xylink.RateLimited.String(), xylink.Park.String(), xylink.StopTenant.String()}

func breakerStateValue(s string) float64 {
	switch s {
	case "half-open":
		return 1
	case "open":
		return 2
	}
	return 0
}
