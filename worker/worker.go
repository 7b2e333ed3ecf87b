package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/xygroup/xygroup/worker/jsconfig"
	"github.com/xygroup/xygroup/worker/ratelimit"
	"github.com/xygroup/xygroup/xylink"
)

// Tenants tells the worker which enterprises it has credentials for;
// *xylink.Client is one.
type Tenants interface {
	HasTenant(enterpriseID string) bool
}

// Worker is one replica.
type Worker struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	opts options
	p    *pipeline
	log  zerolog.Logger

	// set up by Run
	parked    jetstream.Stream
	meetings  jetstream.KeyValue
	parker    *parker
	view      *meetingView
	slots     *slots          // commands, probes and released commands in flight on this replica
	prober    *prober         // probes waiting meetings and held tenants
	releaser  *releaser       // lets out released meetings' and holds' commands
	work      context.Context // outlives Run's context by the drain timeout
	served    *servedLanes    // lanes this replica serves
	id        string          // this replica, as a lane's owner
	tenantIDs []string        // the tenants known at the start, for their metric series
	handling  atomic.Int64    // commands being handled (xygroup_in_flight), for the heartbeat
	lanes     *lanes
	laneRun   tracker // lane commands in flight
	// laneServers: lanes being served, each given up before Run returns.
	laneServers tracker
	replicaN    atomic.Int64 // replicas alive, as last counted
	limiter     *ratelimit.Cluster
	audited     audited // the dispenser's 429 counts already exported (background loop only)
	tracing     bool    // a tracer provider was given: commands have spans of their own
	// replicasKV holds the heartbeats (opened by setup).
	replicasKV jetstream.KeyValue

	ready    atomic.Bool
	setupErr atomic.Value // string
	// cluster is limiter, for the readiness check (which runs on another goroutine).
	cluster atomic.Pointer[ratelimit.Cluster]
	// eventsMaxMsgSize is the events stream's MaxMsgSize (int32, -1 for none), once read.
	eventsMaxMsgSize atomic.Value
	// refused: when a refused park was last logged, per tenant and reason.
	refused refusals
	// full: the stores that refused writes for lack of room lately.
	full *fullStores
}

// New makes a worker that takes commands from nc's JetStream and calls caller.
// tenants may be nil when caller knows every enterprise.
func New(nc *nats.Conn, caller Caller, tenants Tenants, opts ...Option) (*Worker, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.concurrency < 1 {
		return nil, fmt.Errorf("worker: concurrency must be at least 1")
	}
	if o.rate <= 0 {
		return nil, fmt.Errorf("worker: rate must be positive")
	}
	if o.maxLanes < 1 || o.maxLaneHandlers < 1 {
		return nil, fmt.Errorf("worker: lanes and lane handlers per replica must be at least 1")
	}
	if o.metrics == nil {
		o.metrics = NewMetrics()
	}
	// Series for every known tenant from the start, so that dashboards show them
	// before anything happens.
	var tenantIDs []string
	if lister, ok := tenants.(interface{ Tenants() []string }); ok {
		tenantIDs = lister.Tenants()
		for _, ent := range tenantIDs {
			o.metrics.APICalls.WithLabelValues(ent, "ok")
			o.metrics.LimiterBudget.WithLabelValues(ent).Set(o.rateOf(ent))
			o.metrics.BreakerState.WithLabelValues(ent).Set(0)
			o.metrics.LaneCommands.WithLabelValues(ent).Set(0)
			o.metrics.LaneMoves.WithLabelValues(ent).Add(0)
			o.metrics.LimiterThrottled.WithLabelValues(ent).Add(0)
			for _, reason := range []string{"over_quota", "stream_full"} {
				o.metrics.ParkedRefused.WithLabelValues(ent, reason).Add(0)
			}
			for _, p := range priorities {
				o.metrics.LimiterGrants.WithLabelValues(ent, p.String()).Add(0)
			}
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("worker: jetstream: %w", err)
	}
	if o.metrics == nil {
		o.metrics = NewMetrics()
	}
	dec := &decoder{defaultEnterprise: o.defaultEnterprise, maxHorizon: o.maxHorizon}
	if tenants != nil {
		dec.hasTenant = tenants.HasTenant
	}
	background := max(1, o.concurrency-max(1, o.concurrency/4))
	w := &Worker{nc: nc, js: js, opts: o, log: o.log, tenantIDs: tenantIDs, slots: newSlots(o.concurrency, background),
		view: &meetingView{meetings: map[string]meetingEntry{}}, full: newFullStores(o.metrics, o.now)}
	w.parker = &parker{js: js, view: w.view, backoff: o.probeBackoff, now: o.now}
	w.id = replicaID(o.source)
	var known func(string) bool
	if tenants != nil {
		known = tenants.HasTenant
	}
	w.lanes = newLanes(o.rateOf, w.view, func() int { return int(w.replicaN.Load()) }, known, o.maxLaneHandlers)
	w.served = newServedLanes(o.maxLanes)
	tp := o.tracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	w.tracing = o.tracerProvider != nil
	w.p = &pipeline{tracer: tp.Tracer(tracerName), decoder: dec, caller: caller, limiter: o.limiter, backoff: o.backoff,
		maxWait: o.maxWait, metrics: o.metrics, now: o.now, stopped: map[string]string{}, parker: w.parker, gate: newMeetingGate(),
		idem: &idempotency{lease: o.callLease, grantWait: o.callLease, now: o.now}, full: w.full}
	if !o.noLanes {
		w.p.lanes = w.lanes
	}
	w.releaser = &releaser{js: js, view: w.view, slots: w.slots, log: w.log, handle: w.handleReleased}
	w.prober = &prober{opts: &w.opts, log: w.log, p: w.p, parker: w.parker, releaser: w.releaser,
		apply: w.apply, startCommand: w.startCommand, work: func() context.Context { return w.work }}
	return w, nil
}

func (o *options) rateOf(enterpriseID string) float64 {
	if r, ok := o.tenantRates[enterpriseID]; ok && r > 0 {
		return r
	}
	return o.rate
}

// ClusterLimiter is the cluster-wide limiter in use (nil before Run set it up, or
// when another limiter was given).
func (w *Worker) ClusterLimiter() *ratelimit.Cluster { return w.limiter }

func (w *Worker) metrics() *Metrics { return w.opts.metrics }

// Metrics returns the worker's metrics.
func (w *Worker) Metrics() *Metrics { return w.opts.metrics }

// JetStream is the worker's JetStream context (for the status page).
func (w *Worker) JetStream() jetstream.JetStream { return w.js }

// Checks are the readiness conditions for /readyz. "limiter" fails while no
// rate-limit dispenser has been seen for longer than an election takes (NATS
// away, or its bucket lost and not yet created again): no call can be made.
func (w *Worker) Checks() map[string]Check {
	return map[string]Check{
		"nats": func() error {
			if s := w.nc.Status(); s != nats.CONNECTED {
				return fmt.Errorf("NATS connection is %s", s)
			}
			return nil
		},
		"streams": func() error {
			if !w.ready.Load() {
				if msg, ok := w.setupErr.Load().(string); ok {
					return errors.New(msg)
				}
				return errors.New("streams and consumer not ready yet")
			}
			return nil
		},
		"breakers": func() error {
			sb := w.p.breaker
			if sb == nil {
				return nil // not started yet
			}
			var open []string
			for ent, r := range sb.States() {
				if r.State == breakerOpen {
					why := "its API is failing"
					if r.Reason == "credentials" {
						why = "XYLink refused its credentials"
					}
					open = append(open, ent+" ("+why+")")
				}
			}
			if len(open) > 0 {
				return fmt.Errorf("commands held for %v", open)
			}
			return nil
		},
		"limiter": func() error {
			if lim := w.cluster.Load(); lim != nil {
				return lim.Ready()
			}
			return nil
		},
		// A full store holds back every command that needs it.
		"stores": w.full.check,
		"credentials": func() error {
			if s := w.p.stoppedTenants(); len(s) > 0 {
				ids := make([]string, 0, len(s))
				for id := range s {
					ids = append(ids, id)
				}
				return fmt.Errorf("credentials refused for %v", ids)
			}
			return nil
		},
	}
}

// Run consumes until ctx ends, then drains: it stops pulling, lets commands in
// flight finish within the drain timeout, gives the rest back to other replicas
// at once (calls cut short are not counted against the tenant's breaker), and
// returns nil once the releases reached NATS.
func (w *Worker) Run(ctx context.Context) error {
	// Handlers run on a context that outlives ctx by the drain timeout.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	w.work = work
	cons, err := w.setup(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if w.limiter != nil {
		// Commands taken before every shard has a dispenser (a cluster's
		// cold start) would ask for grants that no one answers, and ask
		// again in no particular order: a tenant's lane would lose its order.
		// Past an election's time they wait for their grants as usual.
		wctx, cancel := context.WithTimeout(ctx, w.limiter.ElectionTime())
		_ = w.limiter.AwaitDispensers(wctx)
		cancel()
	}
	w.log.Info().Int("concurrency", w.opts.concurrency).Msg("worker consuming")
	go w.runBackground(ctx)
	go (&historyTrimmer{js: w.js, lag: w.opts.streams.withDefaults().HistoryTrimLag, now: w.opts.now, log: w.log}).run(ctx)
	go w.watchEventsRisk(ctx)
	go w.watchStores(ctx)
	go w.heartbeat(ctx, w.replicasKV, w.opts.streams.withDefaults().Replicas)

	// The drain timeout counts from the stop, not from the end of the pull
	// request in progress then (up to pullWait and a second more).
	drainOver := make(chan struct{})
	context.AfterFunc(ctx, func() { time.AfterFunc(w.opts.drainTimeout, func() { close(drainOver) }) })

	var inFlight sync.WaitGroup
	w.pull(ctx, cons, func(msg jetstream.Msg) {
		inFlight.Add(1)
		w.opts.metrics.InFlight.Inc()
		w.handling.Add(1)
		var turn *laneTurn
		if w.p.lanes != nil {
			turn = w.lanes.intakeTurn(peekEnterprise(msg.Data(), w.opts.defaultEnterprise))
		}
		go func() {
			defer func() {
				if turn != nil {
					turn.done()
				}
				w.slots.put()
				w.opts.metrics.InFlight.Dec()
				w.handling.Add(-1)
				inFlight.Done()
			}()
			w.handle(work, msg, turn)
		}()
	})
	// Probes and letting out hold slots too: wait until every slot is free.
	drained := make(chan struct{})
	go func() {
		inFlight.Wait()
		w.laneRun.closeAndWait()
		w.laneServers.closeAndWait()
		w.slots.waitAllFree()
		close(drained)
	}()
	select {
	case <-drained:
	case <-drainOver:
		w.log.Warn().Dur("drainTimeout", w.opts.drainTimeout).Msg("commands still in flight; giving them back")
		// Calls cut short by our own shutdown are no failure of the API (the
		// breaker does not count them); their commands are given back at once.
		cancelWork()
		<-drained
	}
	// What was given back (naks) is on the server before Run returns, so another
	// replica takes it now, not after AckWait, however the process exits.
	if err := w.nc.FlushTimeout(5 * time.Second); err != nil {
		w.log.Warn().Err(err).Msg("flush at shutdown")
	}
	w.log.Info().Msg("worker stopped")
	return nil
}

// pullWait bounds one pull request: how long a replica with free slots waits
// for commands before it asks again, and how long a stop may wait for it.
const pullWait = time.Second

// pull takes commands from the shared consumer until ctx ends, handing each to
// handle with a slot taken for it. Each pull request asks for exactly the slots
// that are free, so nothing is delivered that no slot can take: a client-side
// buffer (the Messages iterator's) overflows when it asks again after a
// reconnect with every slot busy, and the dropped deliveries return only after
// AckWait.
func (w *Worker) pull(ctx context.Context, cons jetstream.Consumer, handle func(jetstream.Msg)) {
	for delay := 100 * time.Millisecond; ctx.Err() == nil; {
		if !w.slots.take(ctx) {
			return
		}
		n := 1 + w.slots.takeFree(w.slots.size()-1)
		w.slots.reserved.Store(int64(n))
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(pullWait))
		got := 0
		if err == nil {
			for msg := range batch.Messages() {
				got++
				w.slots.reserved.Add(-1)
				if ctx.Err() != nil {
					_ = msg.Nak() // arrived while stopping: another replica takes it at once
					w.slots.put()
					continue
				}
				handle(msg)
			}
			err = batch.Error()
		}
		for range n - got {
			w.slots.put()
		}
		w.slots.reserved.Store(0)
		if err == nil || errors.Is(err, nats.ErrTimeout) {
			delay = 100 * time.Millisecond
			continue
		}
		// The consumer's leader is away (election, partition, NATS restart):
		// ask again, a little later each time.
		w.log.Warn().Err(err).Dur("retryIn", delay).Msg("pull")
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// setup creates or checks the streams and consumer, retrying until ctx ends:
// replicas may start before NATS or before its JetStream leader is elected.
func (w *Worker) setup(ctx context.Context) (jetstream.Consumer, error) {
	for delay := 200 * time.Millisecond; ; delay = min(delay*2, 5*time.Second) {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := Setup(sctx, w.js, w.opts.streams, w.log)
		if err == nil {
			err = w.setupParking(sctx, ctx)
		}
		cancel()
		if err == nil {
			w.ready.Store(true)
			return cons, nil
		}
		w.setupErr.Store(err.Error())
		if jsconfig.IsMisconfigured(err) {
			// An operator has to change the stream or bucket: retrying cannot help.
			w.log.Error().Err(err).Msg("refusing to start")
			return nil, fmt.Errorf("worker: %w", err)
		}
		w.log.Warn().Err(err).Dur("retryIn", delay).Msg("streams not ready")
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// setupParking opens (creating when missing) the parked stream and the buckets,
// and starts watching the meetings.
func (w *Worker) setupParking(ctx, runCtx context.Context) error {
	settings := w.opts.streams.withDefaults()
	// Parked commands are acknowledged in the shared consumer: the parked
	// stream alone keeps them, so it must be as replicated as asked.
	diffs, err := ensureStream(ctx, w.js, settings.ParkedStream(), true, w.log)
	if err != nil {
		return err
	}
	for _, d := range diffs {
		w.log.Warn().Str("stream", StreamParked).Str("difference", d).Msg("existing stream differs from the default; left as configured")
	}
	parked, err := w.js.Stream(ctx, StreamParked)
	if err != nil {
		return err
	}
	commands, err := ensureBucket(ctx, w.js, settings.commandsBucket(w.opts.recordTTL), w.log)
	if err != nil {
		return err
	}
	legacy, err := legacyKeysPresent(ctx, w.js)
	if err != nil {
		return fmt.Errorf("commands bucket: %w", err)
	}
	if legacy {
		w.log.Info().Str("bucket", BucketCommands).Msg("records of an earlier version found: commands without a record look there too")
	}
	meetings, err := ensureBucket(ctx, w.js, settings.meetingsBucket(), w.log)
	if err != nil {
		return err
	}
	if w.replicasKV, err = ensureBucket(ctx, w.js, replicasBucket(settings.Replicas), w.log); err != nil {
		return err
	}
	if w.p.limiter == nil {
		lim, err := ratelimit.NewCluster(runCtx, w.nc, ratelimit.Options{Rate: w.opts.rateOf, Replicas: settings.Replicas,
			Name: w.opts.source, Log: w.log, Guard: w.opts.rateGuard, ProbeShare: w.opts.probeShare,
			Shards: w.opts.rateShards})
		if err != nil {
			return err
		}
		w.p.limiter = lim
		w.limiter = lim
		w.cluster.Store(lim)
		_ = w.opts.metrics.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xygroup_limiter_dispenser",
			Help: "1 while this replica hands out the cluster's rate-limit grants."}, func() float64 {
			if lim.Stats().Dispensing {
				return 1
			}
			return 0
		}))
	}
	if w.p.breaker == nil {
		m := w.metrics()
		s := w.opts.breakerSettings
		s.OnChange = func(ent, _, to string) { m.BreakerState.WithLabelValues(ent).Set(breakerStateValue(to)) }
		sb, err := NewSharedBreaker(runCtx, w.js, settings.Replicas, s, w.log)
		if err != nil {
			return err
		}
		sb.now = w.opts.now
		w.p.breaker = sb
	}
	shares, err := ensureBucket(ctx, w.js, parkedSharesBucket(settings.Replicas), w.log)
	if err != nil {
		return err
	}
	maxBytes := parked.CachedInfo().Config.MaxBytes
	w.parker.shares = &parkedShares{kv: shares, log: w.log, seen: map[string]uint64{}, limit: func() int64 {
		if maxBytes <= 0 || w.opts.parkedShare <= 0 || w.opts.parkedShare >= 1 {
			return 0 // the stream's own limit is the tenant's
		}
		return int64(float64(maxBytes) * w.opts.parkedShare)
	}}
	w.parked, w.meetings = parked, meetings
	w.releaser.parked, w.releaser.meetings = parked, meetings
	w.parker.parked, w.parker.meetings = parked, meetings
	w.p.idem.kv, w.p.idem.legacy = commands, legacy
	return w.view.watch(runCtx, meetings, w.log)
}

// settler acknowledges or returns a delivery, whatever its source.
type settler interface {
	ack(ctx context.Context) error
	nak(delay time.Duration) error
}

type msgSettler struct{ msg jetstream.Msg }

func (s *msgSettler) ack(ctx context.Context) error { return s.msg.DoubleAck(ctx) }
func (s *msgSettler) nak(delay time.Duration) error {
	if delay <= 0 {
		return s.msg.Nak()
	}
	return s.msg.NakWithDelay(delay)
}

// handle processes one delivery of the shared consumer.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg, turn *laneTurn) {
	log := w.log
	defer func() {
		if r := recover(); r != nil {
			log.Error().Interface("panic", r).Msg("command handler panicked; the command will be retried")
			_ = msg.NakWithDelay(5 * time.Second)
		}
	}()
	meta, err := msg.Metadata()
	if err != nil {
		log.Error().Err(err).Msg("message without JetStream metadata")
		_ = msg.Term()
		return
	}
	if meta.NumDelivered > 1 {
		w.opts.metrics.Redeliveries.Inc()
	}
	// Kept alive until settled: publishing the event, parking or acknowledging
	// may take long too, and a redelivery would hand the command to another slot.
	stop := keepAlive(msg, w.opts.streams.withDefaults().AckWait/3)
	defer stop()
	if msg.Subject() == SubjectCancel {
		if turn != nil {
			turn.done() // a cancel holds no place among its tenant's commands
		}
		w.handleCancel(ctx, msg, meta, log)
		return
	}
	del := sharedDelivery(msg, meta)
	del.intakeTurn = turn
	ctx, span := w.startCommand(ctx, del)
	defer span.End()
	v, d := w.p.process(ctx, del, &log)
	w.apply(ctx, v, d, del, &msgSettler{msg: msg}, log)
}

// apply carries out a verdict: an event is stored and recorded before the
// delivery is acknowledged; a parked command is stored before it is.
//
// ctx carries the delivery's command span (startCommand), which the events name.
func (w *Worker) apply(ctx context.Context, v verdict, d *Decoded, del *delivery, s settler, log zerolog.Logger) {
	noteVerdict(trace.SpanFromContext(ctx), v, d)
	switch v.kind {
	case doGiveBack:
		_ = s.nak(0)
	case doLeave:
		w.ackCopy(ctx, s, d, del, log)
	case doEnd:
		body, seq, err := w.publishSeq(ctx, v.event, w.eventTraceparent(ctx, del))
		if err != nil {
			log.Error().Err(err).Msg("could not store the event; the command stays queued")
			delay := time.Second
			if errors.Is(err, errEventTooLarge) {
				delay = time.Minute // the events stream refuses even the smallest form: an operator's limit
			}
			_ = s.nak(delay)
			return
		}
		if !v.repeat {
			// This replica holds the answer: it keeps it until it is recorded,
			// through a leader election or a partition, rather than let a
			// redelivery call the API again for a command that is done.
			err := retrySettle(ctx, log, "idempotency record not written", func(ctx context.Context) error {
				err := w.p.idem.finish(ctx, d.ref(), v.event, body, seq, v.record)
				w.full.refused(err, log, "commands whose event is published keep it, unacknowledged and not sent again, and try to record it every 30 s")
				return err
			})
			if err != nil {
				// Stopping: the event is stored; a redelivery meets 66684 after an
				// unknown outcome and is reconciled under the same Nats-Msg-Id.
				log.Warn().Err(err).Msg("idempotency record not written before the stop")
			}
			w.count(v.event, d, log)
		}
		w.ackCopy(ctx, s, d, del, log) // unconfirmed, a redelivery republishes the recorded event under the same Nats-Msg-Id
	case doLane:
		if _, err := w.parker.store(ctx, laneToken(d.EnterpriseID), kindLane, d, del, v.deadline, time.Time{}); err != nil {
			w.notParked(ctx, err, "could not move the command to its tenant's lane; it stays queued", v, d, del, s, log)
			return
		}
		w.opts.metrics.LaneMoves.WithLabelValues(d.EnterpriseID).Inc()
		w.ackCopy(ctx, s, d, del, log)
	case doHold:
		at, err := w.parker.hold(ctx, d, del, v.deadline, v.parkFirst)
		if err != nil {
			w.notParked(ctx, err, "could not hold the command; it stays queued", v, d, del, s, log)
			return
		}
		if _, ended := w.recordParked(ctx, at, false, d, del, s, log); ended {
			return
		}
		w.ackCopy(ctx, s, d, del, log)
	case doPark, doParkAhead:
		park := w.parker.park
		if v.kind == doParkAhead {
			park = w.parker.parkAhead
		}
		at, err := park(ctx, d, del, v.deadline, v.parkFirst)
		if err != nil {
			w.notParked(ctx, err, "could not park the command; it stays queued", v, d, del, s, log)
			return
		}
		next := at.next
		if nb := d.Cmd.NotBefore; nb != nil && nb.After(next) {
			next = *nb // the meeting's probe comes earlier, but this command waits for its notBefore
		}
		already, ended := w.recordParked(ctx, at, true, d, del, s, log)
		if ended {
			return
		}
		if !already {
			if _, err := w.publish(ctx, waitingEvent(d, v.deadline, next, v.attempts, w.opts.now()), w.eventTraceparent(ctx, del)); err != nil {
				log.Warn().Err(err).Msg("waiting event not published")
			}
		}
		w.ackCopy(ctx, s, d, del, log)
		log.Debug().Time("nextProbeAt", next).Msg("parked until the meeting starts")
	case doRetry:
		if err := s.nak(v.retry); err != nil {
			log.Warn().Err(err).Msg("nak")
		}
	}
}

// parkedFullRetry is how long a copy that could not be moved within the full
// parked stream waits before it is tried again (it stays where it is), and how
// long a full stream sends crowded tenants' commands straight on rather than
// to their lanes, unless a store succeeds first.
const parkedFullRetry = 30 * time.Second

// notParked settles a command that could not be parked, held or moved to its
// lane.
//
// A command taken from the commands stream that would wait ends
// failed.over_quota when its tenant's share is full, and also when the parked
// stream is: returned to the commands stream it would hold one of the shared
// consumer's ack-pending slots, which every tenant shares (a nak, even with a
// delay, keeps it pending), until its tenant took them all. One bound for its
// lane is given back at once and comes in again straight (stepLane). A copy
// moving within the parked stream keeps its old copy and is tried again after
// parkedFullRetry. Any other error: the command is tried again in a second.
// Refusals are counted; each kind is logged once a minute per tenant. Before
// a refusal, a command whose copy waits in the parked stream already (the
// same command published again) is left to that copy, never refused: it was
// accepted.
func (w *Worker) notParked(ctx context.Context, err error, what string, v verdict, d *Decoded, del *delivery, s settler, log zerolog.Logger) {
	now := w.opts.now()
	if refusal := errors.Is(err, errOverQuota) || parkedFull(err); refusal && del.kind == fromShared && d.ReplayID == "" {
		// A repeat of a command whose copy waits already (published again,
		// or delivered again after its park): the copy ends it.
		held, herr := w.p.parkedCopyHeld(ctx, d)
		if herr != nil {
			log.Warn().Err(herr).Msg("parked copy unreadable; retrying")
			_ = s.nak(time.Second)
			return
		}
		if held {
			log.Info().Msg("the command waits in the parked stream already; this copy is left to it")
			w.apply(ctx, leaveToParkedCopy(), d, del, s, log)
			return
		}
	}
	switch {
	case errors.Is(err, errOverQuota):
		w.opts.metrics.ParkedRefused.WithLabelValues(d.EnterpriseID, "over_quota").Inc()
		if w.refused.due(d.EnterpriseID+"\x00over_quota", now) {
			log.Warn().Err(err).Msg("the tenant's share of the parked stream is full; its commands that would wait fail as over_quota")
		}
		share := w.opts.parkedShare
		w.apply(ctx, endWith(failedEvent(d, failure{class: xylink.ClassOverQuota,
			userMessage: "the enterprise's share of waiting commands is full: it has too many commands waiting for their meetings or their notBefore",
			developerMessage: fmt.Sprintf("%v; a tenant may hold %.0f%% of the parked stream %s (--parked-tenant-share, XYGROUP_PARKED_TENANT_SHARE)",
				err, share*100, StreamParked)}, v.attempts, now)), d, del, s, log)
	case parkedFull(err) && del.kind == fromShared && v.kind == doLane:
		if w.refused.due(d.EnterpriseID+"\x00full-lane", now) {
			log.Warn().Err(err).Msg("the parked stream is full; the tenant's commands go on without its lane")
		}
		_ = s.nak(0)
	case parkedFull(err) && del.kind == fromShared:
		w.opts.metrics.ParkedRefused.WithLabelValues(d.EnterpriseID, "stream_full").Inc()
		w.full.refused(err, log, "commands that would wait fail as over_quota")
		if w.refused.due(d.EnterpriseID+"\x00full", now) {
			log.Error().Err(err).Msg(w.fullStoreLabel(err) + " is full; the tenant's commands that would wait fail as over_quota")
		}
		w.apply(ctx, endWith(failedEvent(d, failure{class: xylink.ClassOverQuota,
			userMessage:      "the store of waiting commands is full: the command cannot wait for its meeting or its notBefore",
			developerMessage: w.parkedFullMessage(err)}, v.attempts, now)), d, del, s, log)
	case parkedFull(err):
		w.full.refused(err, log, "waiting commands stay where they are and are moved later")
		if w.refused.due(d.EnterpriseID+"\x00full-move", now) {
			log.Error().Err(err).Dur("retryIn", parkedFullRetry).Msg(w.fullStoreLabel(err) + " is full; a waiting command stays where it is and is moved later")
		}
		_ = s.nak(parkedFullRetry)
	default:
		log.Error().Err(err).Msg(what)
		_ = s.nak(time.Second)
	}
}

// fullStoreLabel names the store a refusal for lack of room came from.
func (w *Worker) fullStoreLabel(err error) string {
	if store := fullStoreName(err); store != "" {
		return store
	}
	return "JetStream storage"
}

// parkedFullMessage says which store refused a command that would wait, how
// big it is and how to raise it.
func (w *Worker) parkedFullMessage(err error) string {
	if store := fullStoreName(err); store != "" && store != StreamParked {
		return fmt.Sprintf("%v: %s, which schedules waiting commands, is full (see the README's table of stores for how to raise its MaxBytes)", err, store)
	}
	if !strings.Contains(err.Error(), "maximum bytes exceeded") {
		return fmt.Sprintf("%v: the NATS server's JetStream storage is full (raise its jetstream max_file_store, or free it)", err)
	}
	var size int64
	if w.parked != nil {
		size = w.parked.CachedInfo().Config.MaxBytes
	}
	return fmt.Sprintf("%v: the parked stream %s holds its MaxBytes (%d bytes) of waiting commands; raise it with "+
		"nats stream edit %s --max-bytes <bytes> (each enterprise may hold --parked-tenant-share of it)", err, StreamParked, size, StreamParked)
}

// recordParked writes in the command's record where it was parked (under a
// waiting meeting, or its tenant's hold), so that a cancel by its id finds the
// copy, and reports whether its waiting event was published already. A cancel
// written first may have looked for the copy before it was stored: the
// command then ends here, cancelled (ended; its copy ends when taken, on its
// terminal event).
func (w *Worker) recordParked(ctx context.Context, at parkedAt, waiting bool, d *Decoded, del *delivery, s settler, log zerolog.Logger) (already, ended bool) {
	already, rec, err := w.p.idem.markParked(ctx, d.ref(), at.token, at.seq, waiting)
	switch {
	case errors.Is(err, errCancelled):
		w.apply(ctx, endWith(cancelledEvent(d, rec.Cancelled, rec.Attempts, w.opts.now())), d, del, s, log)
		return true, true
	case err != nil:
		// Unrecorded, a cancel by id ends this copy when it is taken, not
		// at once; and the waiting event is not published twice.
		if !w.full.refused(err, log, "where commands are parked is not recorded (a cancel by id ends them when they are taken)") {
			log.Warn().Err(err).Msg("idempotency record: where the command is parked not recorded")
		}
		return true, false
	}
	return already, false
}

// ackCopy acknowledges a settled delivery; a parked copy's bytes are given
// back to its tenant's share once it is removed, by whoever removed it.
func (w *Worker) ackCopy(ctx context.Context, s settler, d *Decoded, del *delivery, log zerolog.Logger) {
	if !w.ack(ctx, s, log) || !del.parkedCopy() || d == nil {
		return
	}
	if r, ok := s.(interface{ removedBefore() bool }); ok && r.removedBefore() {
		return
	}
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	w.parker.shares.giveBack(gctx, d.EnterpriseID, parkedBytes(del.data))
}

// ack acknowledges a settled delivery (true: confirmed), asking again while the consumer's
// leader is away (an election, a partition healing) for up to AckWait: a
// delivery whose ack is lost comes back after AckWait and takes a slot again.
func (w *Worker) ack(ctx context.Context, s settler, log zerolog.Logger) bool {
	// What the ack confirms is stored: it is sent also when the drain timeout
	// ended ctx meanwhile (otherwise the command would come back after the
	// ack wait only to repeat its event), for a few seconds then.
	bound := w.opts.streams.withDefaults().AckWait
	if ctx.Err() != nil {
		bound = 5 * time.Second
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bound)
	defer cancel()
	if err := retrySettle(actx, log, "ack not confirmed", s.ack); err != nil {
		log.Warn().Err(err).Msg("ack not confirmed; the command comes back after the ack wait and is settled from its record")
		return false
	}
	return true
}

// retrySettle runs a step of settling a command until it succeeds or ctx ends,
// each try bounded, logging the first failure only.
func retrySettle(ctx context.Context, log zerolog.Logger, what string, step func(context.Context) error) error {
	for delay, try := 100*time.Millisecond, 1; ; try++ {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := step(sctx)
		cancel()
		if err == nil {
			if try > 1 {
				log.Info().Int("tries", try).Msg(what + " at first; done now")
			}
			return nil
		}
		wait := delay
		if storeFull(err) {
			wait = storeFullRetry // room comes back slowly; the store's own log line says so
		} else if try == 1 {
			log.Warn().Err(err).Msg(what + "; retrying")
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func (w *Worker) count(ev *outEvent, d *Decoded, log zerolog.Logger) {
	m := w.opts.metrics
	switch body := ev.body.(type) {
	case *CreatedEvent:
		m.Commands.WithLabelValues("created", "").Inc()
		m.Attempts.Observe(float64(body.Attempts))
		log.Info().Int("attempts", body.Attempts).Int("groups", len(body.Groups)).Msg("groups created")
	case *FailedEvent:
		m.Commands.WithLabelValues("failed", string(body.Class)).Inc()
		m.Attempts.Observe(float64(body.Attempts))
		log.Info().Str("class", string(body.Class)).Str("reason", body.DeveloperMessage).Msg("command failed")
	}
}

// publish stores an event, retrying while the stream has no leader or NATS is
// briefly away, until ctx ends. The event is shaped to fit the server's payload
// limit and the events stream's message size; a size error is not retried as it
// is: the event is shaped again to the limit the stream states, then to its
// smallest form, and errEventTooLarge ends the attempt if even that is refused.
func (w *Worker) publish(ctx context.Context, ev *outEvent, traceparent string) ([]byte, error) {
	body, _, err := w.publishSeq(ctx, ev, traceparent)
	return body, err
}

// publishSeq is publish that also returns the event's sequence in the events
// stream (a duplicate's: the copy stored first).
func (w *Worker) publishSeq(ctx context.Context, ev *outEvent, traceparent string) (_ []byte, _ uint64, err error) {
	ctx, span := w.p.tracer.Start(ctx, spanPublish, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attrMessagingSys.String("nats"), attrMessagingDest.String(ev.subject), attribute.String("xygroup.event_type", ev.ceType)))
	defer func() { endSpan(span, err != nil, "event not stored") }()
	limit := w.eventLimit(ctx, false)
	m, err := ev.natsMsg(w.opts.source, traceparent, w.opts.now(), limit)
	if err != nil {
		return nil, 0, err
	}
	for delay := 100 * time.Millisecond; ; delay = min(delay*2, 2*time.Second) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var ack *jetstream.PubAck
		ack, err = w.js.PublishMsg(pctx, m)
		cancel()
		if err == nil {
			return m.Data, ack.Sequence, nil
		}
		if tooLarge(err) {
			if limit <= 0 {
				return nil, 0, fmt.Errorf("%w: %d bytes with headers: %w", errEventTooLarge, len(m.Data)+headerLen(m.Header), err)
			}
			next := w.eventLimit(ctx, true)
			if next >= limit {
				next = 0
			}
			w.log.Warn().Err(err).Int("bytes", len(m.Data)).Int("limit", next).Str("subject", ev.subject).Msg("event too large; shaping it smaller")
			limit = next
			if m, err = ev.natsMsg(w.opts.source, traceparent, w.opts.now(), limit); err != nil {
				return nil, 0, err
			}
			continue
		}
		if ctx.Err() != nil {
			return nil, 0, err
		}
		w.log.Warn().Err(err).Str("subject", ev.subject).Msg("publish event; retrying")
		select {
		case <-ctx.Done():
			return nil, 0, err
		case <-time.After(delay):
		}
	}
}

// errEventTooLarge: not even the event's smallest form is accepted.
var errEventTooLarge = errors.New("event too large for NATS")

func tooLarge(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum)
}

// eventLimit is the largest message (headers included) an event may be: the
// server's payload limit, the events stream's message size limit when it is
// smaller (read once, and again when fresh is set), and at most
// RecordMaxValueBytes, since the command's record keeps the event (a created
// one whole), even where an events stream of an earlier version has no limit.
func (w *Worker) eventLimit(ctx context.Context, fresh bool) int {
	limit := int(w.nc.MaxPayload())
	if limit <= 0 {
		limit = 1 << 20 // not connected yet: the server's default
	}
	limit = min(limit, RecordMaxValueBytes)
	streamMax, ok := w.eventsMaxMsgSize.Load().(int32)
	if !ok || fresh {
		streamMax = -1
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if s, err := w.js.Stream(sctx, StreamEvents); err == nil {
			streamMax = s.CachedInfo().Config.MaxMsgSize
		}
		cancel()
		w.eventsMaxMsgSize.Store(streamMax)
	}
	if streamMax > 0 && int(streamMax) < limit {
		limit = int(streamMax)
	}
	return limit
}

// keepAlive tells the server every interval that the message is still being
// worked on, so a long limiter wait or API call does not cause a redelivery.
func keepAlive(msg jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}
