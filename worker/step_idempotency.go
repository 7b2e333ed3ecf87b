package worker

import (
	"context"
	"time"
)

// stepIdempotency reads the command's record: a command with a recorded
// outcome is not sent again (its terminal event is published again), unless a
// replay tries a failed one once more.
func (p *pipeline) stepIdempotency(ctx context.Context, a *attempt) (v verdict, stop bool) {
	d, del, log := a.d, a.del, a.log
	ctx, span := p.tracer.Start(ctx, spanIdempotency)
	said := "new"
	defer func() {
		span.SetAttributes(attrRecord.String(said))
		endSpan(span, said == "unreadable", said)
	}()
	firstDelivery := del.kind == fromShared && del.delivered == 1 && d.ReplayID == ""
	rec, recRev, err := p.idem.intake(ctx, d.ref(), firstDelivery)
	if err != nil {
		said = "unreadable"
		log.Warn().Err(err).Msg("idempotency record unreadable; retrying")
		return retryIn(time.Second), true
	}
	if rec.Attempts > 0 {
		said = "tried"
	}
	if rid := d.ReplayID; rid != "" {
		if rec.Terminal != nil {
			again, err := p.idem.retryForReplay(ctx, d.ref(), rid)
			if err != nil {
				if p.full.refused(err, *log, "replays of failed commands wait, spending no attempt") {
					return retryIn(storeFullRetry), true
				}
				return retryIn(time.Second), true
			}
			if again {
				log.Info().Str("replayId", rid).Msg("replay of a failed command: trying again")
				rec.Terminal = nil
			}
		}
	}
	if rec.Terminal != nil {
		said = "done"
		log.Info().Str("outcome", rec.Terminal.Subject).Msg("already done; publishing its terminal event again")
		return repeatEvent(rec.Terminal.repeatFor(d)), true
	}
	if rec.Cancelled != nil {
		return endWith(cancelledEvent(d, rec.Cancelled, rec.Attempts, p.now())), true
	}
	a.rec, a.recRev = rec, recRev
	return verdict{}, false
}
