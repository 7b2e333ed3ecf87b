package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// runBackground runs the replica's background jobs until ctx ends, as the
// meetings bucket asks for them: it probes the waiting meetings and held
// tenants whose probe is due (prober), lets out the released ones (releaser),
// serves the open lanes, and keeps the parked gauges. Every replica runs it;
// claims are compare-and-swap writes on the meeting's record, so one replica
// at a time probes a meeting.
func (w *Worker) runBackground(ctx context.Context) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastGauge time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := w.opts.now()
		all := w.view.all()
		target := w.served.plan(all, w.id, int(w.replicaN.Load()), now)
		for token, e := range all {
			r := e.rec
			switch r.State {
			case meetingReleased:
				w.releaser.start(ctx, token)
			case laneOpen:
				w.serveLaneRecord(ctx, token, e, now, target)
			case meetingWaiting:
				due := r.NextProbeAt
				if r.EarliestDeadline.Before(due) {
					due = r.EarliestDeadline
				}
				if now.Before(due) || now.Before(r.LeaseUntil) || !w.prober.claim(ctx, token, e) {
					continue
				}
				if !w.slots.takeBackground(ctx) {
					w.prober.reschedule(ctx, token, now, false) // give the claim back
					return
				}
				go func() {
					defer w.slots.putBackground()
					w.prober.probe(ctx, token)
				}()
			}
		}
		if now.Sub(lastGauge) > 5*time.Second {
			lastGauge = now
			w.updateParkedGauge(ctx)
		}
	}
}

// updateParkedGauge counts parked commands from the parked stream.
func (w *Worker) updateParkedGauge(ctx context.Context) {
	info, err := w.parked.Info(ctx, jetstream.WithSubjectFilter(subjectParked+".>"))
	if err == nil {
		w.opts.metrics.Parked.Set(float64(info.State.Msgs))
		w.updateLaneGauge(info.State.Subjects)
		w.reopenLanes(ctx, info.State.Subjects)
		w.forgetEmptyMeetings(ctx, info.State.Subjects)
		w.parker.shares.reconcile(ctx, w.parked, info.State.Subjects, w.view)
	}
	if w.limiter != nil {
		w.opts.metrics.LimiterGuard.Reset()
		for ent, g := range w.limiter.Guards(w.tenantIDs...) {
			w.opts.metrics.LimiterGuard.WithLabelValues(ent).Set(g.Seconds())
		}
		var mine []string // the known tenants whose shard this replica dispenses
		for _, ent := range w.tenantIDs {
			if w.limiter.Dispenses(ent) {
				mine = append(mine, ent)
			}
		}
		w.audited.export(w.opts.metrics, w.limiter.Use(), mine)
	}
}

// forgetEmptyMeetings forgets the waiting meetings and holds that have no
// parked command and no probe claimed: those whose last command ended
// outside a probe (a cancel that stopped before its forget, a record left by
// a stopped replica). The forget itself checks again (prober.forget).
func (w *Worker) forgetEmptyMeetings(ctx context.Context, subjects map[string]uint64) {
	now := w.opts.now()
	for token, e := range w.view.all() {
		r := e.rec
		if r.Kind == kindLane || r.State != meetingWaiting || now.Before(r.LeaseUntil) || subjects[parkedSubject(token)] > 0 {
			continue
		}
		if w.prober.forgetIdle(ctx, token) {
			w.log.Debug().Str("meeting", token).Msg("no parked command left; meeting forgotten")
		}
	}
}
