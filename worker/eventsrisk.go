package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The events stream drops its oldest events when it is full (DiscardOld) and
// those older than its MaxAge, read or not: a reader that stops must not stop
// every tenant's commands, as a stream that refused new events would. What a
// durable reader has not acknowledged can so be lost; every replica measures,
// per durable consumer of the stream, how far its oldest unacknowledged event
// is from either eviction, exports it, and warns when it is near.
const (
	eventsRiskEvery = time.Minute
	// eventsRiskNear: a reader is warned about when its oldest unread event
	// is within this share of MaxAge, or of MaxBytes, of its eviction.
	eventsRiskNear = 0.10
	// eventsRiskLogEvery: one warning per reader in this time at most.
	eventsRiskLogEvery = 10 * time.Minute
)

// readerRisk is how far a durable reader's oldest unacknowledged event is from
// its eviction.
type readerRisk struct {
	consumer string
	unread   uint64
	// lost: its first unacknowledged events were evicted already.
	lost bool
	// ageLeft: time until the oldest unread is older than MaxAge (no age
	// limit: -1). bytesLeft: bytes that may be stored before it is dropped
	// to make room (no byte limit: -1), estimated from the mean event size.
	ageLeft   time.Duration
	bytesLeft int64
}

// near reports whether the reader's oldest unread event is near eviction.
func (r readerRisk) near(cfg jetstream.StreamConfig) bool {
	if r.unread == 0 {
		return false
	}
	return r.lost ||
		(cfg.MaxAge > 0 && r.ageLeft < time.Duration(float64(cfg.MaxAge)*eventsRiskNear)) ||
		(cfg.MaxBytes > 0 && r.bytesLeft < int64(float64(cfg.MaxBytes)*eventsRiskNear))
}

// readersAtRisk measures every durable consumer of the events stream.
func readersAtRisk(ctx context.Context, js jetstream.JetStream, now time.Time) (jetstream.StreamConfig, []readerRisk, error) {
	s, err := js.Stream(ctx, StreamEvents)
	if err != nil {
		return jetstream.StreamConfig{}, nil, err
	}
	info := s.CachedInfo()
	cfg, st := info.Config, info.State
	var out []readerRisk
	lister := s.ListConsumers(ctx)
	for c := range lister.Info() {
		if c.Config.Durable == "" {
			continue // an ephemeral reader (status, events --follow) goes with its client
		}
		r := readerRisk{consumer: c.Name, unread: c.NumPending + uint64(c.NumAckPending), ageLeft: -1, bytesLeft: -1}
		if r.unread == 0 {
			out = append(out, r)
			continue
		}
		first := c.AckFloor.Stream + 1
		if first < st.FirstSeq {
			r.lost, first = true, st.FirstSeq
		}
		if cfg.MaxBytes > 0 {
			// Bytes stored before its first unread go first, then the free room.
			before := int64(0)
			if st.Msgs > 0 && first > st.FirstSeq {
				before = int64(float64(st.Bytes) * float64(first-st.FirstSeq) / float64(st.Msgs))
			}
			r.bytesLeft = max(cfg.MaxBytes-int64(st.Bytes), 0) + before
		}
		if cfg.MaxAge > 0 {
			if m, err := s.GetMsg(ctx, first); err == nil {
				r.ageLeft = cfg.MaxAge - now.Sub(m.Time)
			} else {
				r.ageLeft = cfg.MaxAge - now.Sub(st.FirstTime) // it is not older than the stream's first
			}
		}
		out = append(out, r)
	}
	return cfg, out, lister.Err()
}

// eventsRiskMetrics are the gauges of watchEventsRisk: the reader nearest
// to losing unread events, as alerts want it (the warning names the reader).
type eventsRiskMetrics struct {
	atRisk, ageLeft, bytesLeft prometheus.Gauge
}

func newEventsRiskMetrics(r prometheus.Registerer, cfg jetstream.StreamConfig) eventsRiskMetrics {
	m := eventsRiskMetrics{
		atRisk: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xygroup_events_readers_at_risk",
			Help: "Durable consumers of the events stream whose oldest unacknowledged event is within 10% of MaxAge or MaxBytes of being dropped, or was dropped."}),
		ageLeft: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xygroup_events_unread_age_left_seconds",
			Help: "Least time until a durable consumer's oldest unacknowledged event passes the events stream's MaxAge and is dropped (MaxAge when none has unread events; 0 or less: dropped)."}),
		bytesLeft: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xygroup_events_unread_bytes_left",
			Help: "Least bytes of new events the events stream can take before it drops a durable consumer's oldest unacknowledged event to make room (estimated; MaxBytes when none has unread events)."}),
	}
	for _, c := range []prometheus.Collector{m.atRisk, m.ageLeft, m.bytesLeft} {
		_ = r.Register(c)
	}
	m.set(cfg, nil)
	return m
}

// set shows the readers' risks.
func (m eventsRiskMetrics) set(cfg jetstream.StreamConfig, risks []readerRisk) {
	atRisk, age, bytes := 0, cfg.MaxAge, cfg.MaxBytes
	for _, r := range risks {
		if r.unread == 0 {
			continue
		}
		if r.near(cfg) {
			atRisk++
		}
		if cfg.MaxAge > 0 {
			age = min(age, r.ageLeft)
		}
		if cfg.MaxBytes > 0 {
			bytes = min(bytes, r.bytesLeft)
		}
	}
	m.atRisk.Set(float64(atRisk))
	m.ageLeft.Set(age.Seconds())
	m.bytesLeft.Set(float64(bytes))
}

// watchEventsRisk measures the events stream's durable readers now and every
// eventsRiskEvery until ctx ends (readersAtRisk).
func (w *Worker) watchEventsRisk(ctx context.Context) {
	m := newEventsRiskMetrics(w.opts.metrics.Registry, w.opts.streams.EventsStream())
	warned := map[string]time.Time{}
	failedAt := time.Time{}
	tick := time.NewTicker(eventsRiskEvery)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cfg, risks, err := readersAtRisk(cctx, w.js, w.opts.now())
		cancel()
		switch {
		case err == nil:
			noteEventsRisk(m, cfg, risks, warned, w.opts.now(), w.log)
		case ctx.Err() == nil && w.opts.now().Sub(failedAt) > eventsRiskLogEvery:
			failedAt = w.opts.now()
			w.log.Warn().Err(err).Msg("events stream's readers not measured (the worker lists them: $JS.API.CONSUMER.LIST." + StreamEvents + ")")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// noteEventsRisk sets the gauges and warns, once per eventsRiskLogEvery per
// reader, about readers near eviction.
func noteEventsRisk(m eventsRiskMetrics, cfg jetstream.StreamConfig, risks []readerRisk, warned map[string]time.Time, now time.Time, log zerolog.Logger) {
	m.set(cfg, risks)
	for _, r := range risks {
		if !r.near(cfg) || now.Sub(warned[r.consumer]) < eventsRiskLogEvery {
			continue
		}
		warned[r.consumer] = now
		ev := log.Warn().Str("stream", StreamEvents).Str("consumer", r.consumer).Uint64("unread", r.unread)
		if cfg.MaxAge > 0 {
			ev = ev.Dur("ageLeft", r.ageLeft)
		}
		if cfg.MaxBytes > 0 {
			ev = ev.Int64("bytesLeft", r.bytesLeft)
		}
		if r.lost {
			ev.Msg("a reader of the events stream lost unread events: the stream dropped them (MaxAge or MaxBytes)")
			continue
		}
		ev.Msg("a reader of the events stream is near losing unread events: the stream drops its oldest when full or older than MaxAge")
	}
}
