package worker

import (
	"context"
	"time"

	"github.com/xygroup/xygroup/xylink"
)

// stepBreaker asks the tenant's breaker for the call (see allow); the breaker
// is told the call's outcome through a.done.
func (p *pipeline) stepBreaker(ctx context.Context, a *attempt) (verdict, bool) {
	done, halfOpenProbe, v, stop := p.allow(ctx, a.d, a.del, a.rec, a.deadline, a.now)
	if stop {
		return v, true
	}
	a.done, a.halfOpenProbe = done, halfOpenProbe
	return verdict{}, false
}

// allow asks the breaker for a call. With the tenant open cluster-wide, a
// shared command goes to the tenant's hold; a probe whose time has come may
// become the one half-open probe of the cluster (halfOpenProbe); anything else
// waits.
func (p *pipeline) allow(ctx context.Context, d *Decoded, del *delivery, rec commandRecord, deadline, now time.Time) (done func(xylink.Outcome), halfOpenProbe bool, v verdict, stop bool) {
	sb := p.breaker
	if until, open := sb.Open(d.EnterpriseID); open {
		if del.kind == fromProbe && !now.Before(until) && sb.ClaimProbe(ctx, d.EnterpriseID) {
			return func(o xylink.Outcome) {
				pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				sb.ProbeResult(pctx, d.EnterpriseID, o)
			}, true, verdict{}, false
		}
		if del.intake() {
			p.metrics.Retries.WithLabelValues("breaker_open").Inc()
		}
		return nil, false, p.held(d, del, rec, deadline, now), true
	}
	allow, err := p.breaker.Allow(d.EnterpriseID)
	if err == nil {
		return allow, false, verdict{}, false
	}
	p.metrics.Retries.WithLabelValues("breaker_open").Inc()
	return nil, false, p.held(d, del, rec, deadline, now), true
}

// held is what becomes of a command whose tenant is open. Open cluster-wide,
// intake pauses for the tenant: a shared delivery waits in the tenant's hold,
// acked, spending no delivery and no attempt, while other tenants flow; a
// parked or released one is tried again when the open period ends. Refused
// only by this replica's gobreaker (not yet shared, or its half-open probe
// taken), the command retries with backoff until its deadline.
func (p *pipeline) held(d *Decoded, del *delivery, rec commandRecord, deadline, now time.Time) verdict {
	if until, open := p.breaker.Open(d.EnterpriseID); open {
		if del.intake() {
			return holdUntil(until, rec.Attempts, deadline)
		}
		return retryIn(max(until.Sub(now), time.Second))
	}
	if rec.state(now).mayHaveTakenEffect() {
		// An earlier request may have created the groups: tried within the
		// reconcile grace, as decide's other callers do (stepDecide).
		deadline = deadline.Add(reconcileGrace)
	}
	return decide(d, xylink.Outcome{Class: xylink.ClassUnavailable, Disposition: xylink.Retry}, rec.lastError(ErrBreakerOpen), nil,
		rec.Attempts, deadline, p.backoff, now)
}
