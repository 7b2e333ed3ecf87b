package worker

import (
	"context"
	"errors"
	"time"

	"github.com/xygroup/xygroup/xylink"
)

// stepInFlight marks the call in flight, and learns whether an earlier call's
// outcome is unknown. Every step with I/O of its own comes before the grant.
func (p *pipeline) stepInFlight(ctx context.Context, a *attempt) (verdict, bool) {
	d, log := a.d, a.log
	before, claimed, err := p.idem.begin(ctx, d.ref(), a.rec, a.recRev)
	if err != nil {
		a.done(xylink.Outcome{BreakerExcluded: true})
		var busy errBusy
		switch {
		case errors.Is(err, errDone):
			return repeatEvent(before.Terminal.repeatFor(d)), true
		case errors.Is(err, errCancelled):
			return endWith(cancelledEvent(d, before.Cancelled, before.Attempts, p.now())), true
		case errors.As(err, &busy):
			return retryIn(max(busy.until.Sub(p.now()), 100*time.Millisecond)), true
		}
		if p.full.refused(err, *log, "commands wait in "+StreamCommands+", spending no attempt, until records expire") {
			return retryIn(storeFullRetry), true
		}
		log.Warn().Err(err).Msg("idempotency record not written; retrying")
		return retryIn(time.Second), true
	}
	a.before, a.claimed, a.attempts = before, claimed, before.Attempts+1
	return verdict{}, false
}
