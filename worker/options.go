package worker

import (
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
)

// Option configures a Worker.
type Option func(*options)

type options struct {
	concurrency       int
	streams           StreamSettings
	limiter           Limiter
	rate              float64
	tenantRates       map[string]float64
	maxWait           time.Duration
	backoff           Backoff
	defaultEnterprise string
	log               zerolog.Logger
	metrics           *Metrics
	drainTimeout      time.Duration
	source            string
	now               func() time.Time
	probeBackoff      Backoff
	probeShare        float64
	callLease         time.Duration
	recordTTL         time.Duration
	breakerSettings   BreakerSettings
	rateGuard         time.Duration
	rateShards        int
	noLanes           bool
	maxLanes          int
	maxLaneHandlers   int
	tracerProvider    trace.TracerProvider
	maxHorizon        time.Duration
	parkedShare       float64
}

func defaultOptions() options {
	return options{concurrency: 32, rate: 20, maxWait: 2 * time.Hour, drainTimeout: 20 * time.Second,
		source: "xygroup", log: zerolog.Nop(), now: time.Now,
		probeBackoff: Backoff{Initial: 5 * time.Second, Max: 15 * time.Second},
		probeShare:   0.5,
		callLease:    30 * time.Second, recordTTL: 30 * 24 * time.Hour,
		maxLanes: defaultMaxLanes, maxLaneHandlers: defaultLaneHandlers,
		maxHorizon: DefaultMaxHorizon, parkedShare: DefaultParkedTenantShare}
}

// WithConcurrency bounds the commands in flight on this replica (default 32).
func WithConcurrency(n int) Option { return func(o *options) { o.concurrency = n } }

// WithStreams sizes the streams and the consumer created when missing.
func WithStreams(s StreamSettings) Option { return func(o *options) { o.streams = s } }

// WithLimiter replaces the cluster-wide limiter (ratelimit.Cluster).
func WithLimiter(l Limiter) Option { return func(o *options) { o.limiter = l } }

// WithRate sets API calls per second per enterprise (default 20), and per-tenant
// exceptions.
func WithRate(perSecond float64, perTenant map[string]float64) Option {
	return func(o *options) { o.rate, o.tenantRates = perSecond, perTenant }
}

// WithMaxWait sets how long a command without a deadline may wait (default 2 h).
func WithMaxWait(d time.Duration) Option { return func(o *options) { o.maxWait = d } }

// WithBackoff sets the retry backoff.
func WithBackoff(b Backoff) Option { return func(o *options) { o.backoff = b } }

// WithDefaultEnterprise is the tenant of commands that name none.
func WithDefaultEnterprise(id string) Option { return func(o *options) { o.defaultEnterprise = id } }

// WithLogger sets the logger; lines carry commandId and meetingRoomNumber.
func WithLogger(l zerolog.Logger) Option { return func(o *options) { o.log = l } }

// WithMetrics shares a metrics set (default: a new one per worker).
func WithMetrics(m *Metrics) Option { return func(o *options) { o.metrics = m } }

// WithDrainTimeout bounds how long shutdown waits for commands in flight (default 20 s).
func WithDrainTimeout(d time.Duration) Option { return func(o *options) { o.drainTimeout = d } }

// WithSource sets the CloudEvents ce-source of events (default "xygroup").
func WithSource(s string) Option { return func(o *options) { o.source = s } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithProbeBackoff sets the interval between probes of a waiting meeting
// (default 1 s doubling to 15 s, with jitter).
func WithProbeBackoff(b Backoff) Option { return func(o *options) { o.probeBackoff = b } }

// WithProbeShare sets the share of each enterprise's rate that probes of
// waiting meetings may take (default 0.5): while replays wait, probes get at
// most that share of the grants, and each meeting's probes are spaced so that
// all of an enterprise's waiting meetings together need no more.
func WithProbeShare(f float64) Option {
	return func(o *options) {
		if f > 0 && f <= 1 {
			o.probeShare = f
		}
	}
}

// WithCallLease is how long another worker waits for a call in flight before it
// treats the call's outcome as unknown (default 30 s; longer than the client's
// timeout). A call is begun before it waits for its rate-limit grant, which may
// take as long again: the record holds it for twice the lease, and a grant that
// comes later is not used.
func WithCallLease(d time.Duration) Option { return func(o *options) { o.callLease = d } }

// WithRecordTTL is how long a command's idempotency record is kept (default 30 days).
func WithRecordTTL(d time.Duration) Option { return func(o *options) { o.recordTTL = d } }

// WithBreakerSettings tunes the cluster-wide breaker (5 consecutive failures
// open it for 10 s by default).
func WithBreakerSettings(s BreakerSettings) Option { return func(o *options) { o.breakerSettings = s } }

// WithRateGuard widens the window over which the cluster limiter spaces grants
// (default 25 ms): the allowance for varying delay between a grant and the call's
// arrival at XYLink. See package ratelimit.
func WithRateGuard(d time.Duration) Option { return func(o *options) { o.rateGuard = d } }

// WithRateShards sets the cluster limiter's number of shards (default 16):
// enterprises are spread over that many dispensers. Every replica of a
// cluster must use the same number. See package ratelimit.
func WithRateShards(n int) Option { return func(o *options) { o.rateShards = n } }

// WithoutLanes makes every command wait for its grant in the replica's
// pipeline, however crowded its tenant (tests, comparisons). By default a
// crowded tenant's commands wait in its lane; see lanes.go.
func WithoutLanes() Option { return func(o *options) { o.noLanes = true } }

// WithLaneLimits bounds what one replica takes of the tenants' lanes: the
// lanes it serves at once (default 64; each is a consumer of the parked
// stream) and their commands in flight on it (default 512), shared among
// them. Replicas spread the lanes: each takes at most its share of the open
// lanes among the replicas alive. When every replica is at its cap, the lanes
// are served in turn.
func WithLaneLimits(lanes, handlers int) Option {
	return func(o *options) { o.maxLanes, o.maxLaneHandlers = lanes, handlers }
}

// WithTracerProvider traces each delivery of a command (default: no tracing).
// Its span continues the trace named by the command's traceparent header, has
// a child span for reading the command's record, the rate-limit grant wait,
// the API call and each event's publish, and the events then name it in
// their traceparent. Without it, events carry the command's traceparent.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// WithMaxHorizon bounds how far ahead of its arrival a command's notBefore and
// deadline may be (default DefaultMaxHorizon); beyond it the command fails as
// invalid_command, never parked. A replay's deadline is cut to it too.
func WithMaxHorizon(d time.Duration) Option { return func(o *options) { o.maxHorizon = d } }

// WithParkedTenantShare bounds the part of the parked stream's MaxBytes one
// tenant's parked commands may hold (default DefaultParkedTenantShare, a
// fraction in (0, 1]); a command of a tenant at its share that would be
// parked fails as over_quota.
func WithParkedTenantShare(f float64) Option { return func(o *options) { o.parkedShare = f } }
