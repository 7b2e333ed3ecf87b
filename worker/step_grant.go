package worker

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/xygroup/xygroup/worker/ratelimit"
)

// errNoGrantInTime: no grant came while a request could still be answered
// within the command's in-flight record.
var errNoGrantInTime = errors.New("no rate-limit grant in time")

// staleGrant: a grant older than this when its request could leave is not
// used (the request takes a fresh one), so that arrivals at the API keep the
// dispenser's spacing whatever the time the "sent" mark took to write.
const staleGrant = 25 * time.Millisecond

// errStaleGrant: the "sent" mark took longer than staleGrant; the request
// did not go.
var errStaleGrant = errors.New("rate-limit grant stale after a slow write")

// errMeetingWaiting: while the command waited for its turn or its grant, its
// meeting's first answer (66620, on any replica) came: it parks without a call.
var errMeetingWaiting = errors.New("the meeting was found waiting meanwhile")

// errNotMarked: the record could not say that the request may go out, so it
// did not go (its outcome would be unknowable after a crash).
var errNotMarked = errors.New("request not marked as sent")

// stepGrant makes the gate the client runs immediately before each request:
// the limiter and the breaker (the client calls the gate once it holds the app
// token; only signing follows): one grant per request, the repeat after a
// refused token included, and no request to a tenant that opened while this
// one waited for its grant.
//
// The record says "in flight" until pendingUntil: every request must leave
// at least a lease (the client's timeout and a margin) before it, so that
// no other replica takes the command over while a request is out. The app
// token's fetch and a repeat after a refused token come out of the grant's
// time, never out of the lease.
func (p *pipeline) stepGrant(ctx context.Context, a *attempt) (verdict, bool) {
	d, del, log := a.d, a.del, a.log
	prio := priorityOf(d, del)
	sendBy := time.Now().Add(a.claimed.until.Sub(p.now()) - p.idem.lease)
	marked := false
	a.gate = func(gctx context.Context) error {
		wctx, cancel := context.WithDeadline(gctx, sendBy)
		defer cancel()
		if err := p.awaitGrant(wctx, gctx, d, del, prio); err != nil {
			return err
		}
		if !a.halfOpenProbe && p.breaker.State(d.EnterpriseID) == "open" {
			return ErrBreakerOpen
		}
		if marked { // a repeat after a refused app token: marked before the first request
			a.sentAt = time.Now()
			return nil
		}
		if p.meetingFoundWaiting(d, del) {
			// The grant is spent, but not on a second 66620: with a long grant
			// queue, the meeting's first call on another replica has answered
			// by now, and a burst costs one first call per meeting.
			return errMeetingWaiting
		}
		// The mark is written before the request leaves, never after: a
		// replica killed once its request is out must leave it, or the next
		// call would take a 66684 for a failure. No mark, no request.
		markStart := time.Now()
		if err := p.markSent(wctx, d, &a.claimed); err != nil {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			if errors.Is(err, errCancelled) {
				return errCancelled
			}
			log.Warn().Err(err).Msg("idempotency record: request not marked as sent; not sent")
			return errNotMarked
		}
		marked = true
		if time.Since(markStart) > staleGrant {
			// The write was slow (NATS busy or away): the grant is stale, and
			// a request sent on it now would leave together with later grants
			// (after an outage, all at once). The call is given back, its mark
			// with it, and the command tries again at once with a fresh grant.
			return errStaleGrant
		}
		a.sentAt = time.Now()
		return nil
	}
	return verdict{}, false
}

// awaitGrant waits for the lane's turn (lane commands) and for a rate-limit
// grant, within wctx; gctx is the call's own context.
func (p *pipeline) awaitGrant(wctx, gctx context.Context, d *Decoded, del *delivery, prio Priority) (err error) {
	wctx, span := p.tracer.Start(wctx, spanGrantWait, trace.WithAttributes(attrPriority.String(prio.String())))
	defer func() {
		if err != nil {
			span.SetAttributes(attribute.String("xygroup.not_granted", err.Error())) // one of this file's errors, or the context's
		}
		endSpan(span, err != nil, "no grant")
	}()
	if t := del.turn; t != nil {
		// Lane order: ask for a grant only once the lane's previous
		// command's request holds its place in the dispenser's order.
		select {
		case <-t.after:
		case <-wctx.Done():
			if gctx.Err() == nil {
				return errNoGrantInTime
			}
			return gctx.Err()
		}
	}
	if p.meetingFoundWaiting(d, del) {
		if t := del.turn; t != nil {
			t.done()
		}
		return errMeetingWaiting
	}
	waitStart := time.Now()
	// The next command of the lane may ask once this one's request holds
	// its place in the dispenser's order, without waiting for its grant.
	queued := func() {}
	if t := del.turn; t != nil {
		queued = t.done
	}
	err = p.limiter.Wait(wctx, d.EnterpriseID, prio, ratelimit.Queued(queued))
	queued()
	if err != nil {
		if gctx.Err() == nil {
			return errNoGrantInTime
		}
		return err
	}
	p.metrics.LimiterWait.WithLabelValues(prio.String()).Observe(time.Since(waitStart).Seconds())
	p.metrics.LimiterGrants.WithLabelValues(d.EnterpriseID, prio.String()).Inc()
	return nil
}

// markSent writes in the command's record that its request is going out.
func (p *pipeline) markSent(ctx context.Context, d *Decoded, c *claim) error {
	ctx, span := p.tracer.Start(ctx, spanMarkSent)
	err := p.idem.markSent(ctx, d.ref(), c)
	endSpan(span, err != nil, "record not written")
	return err
}

// priorityOf is the command's place in the limiter's order.
func priorityOf(d *Decoded, del *delivery) Priority {
	prio := PriorityLive
	switch {
	case d.ReplayID != "":
		prio = PriorityReplay
	case del.kind == fromProbe:
		prio = PriorityProbe
	case del.kind == fromLane && del.delivered <= 1:
		// a live command that waited in its lane: live still
	case del.kind != fromShared || del.delivered > 1:
		prio = PriorityRetry
	}
	return prio
}

// meetingFoundWaiting: a command taken in (not a probe, nor a released one)
// whose meeting is now known to wait for its start, on any replica.
func (p *pipeline) meetingFoundWaiting(d *Decoded, del *delivery) bool {
	if !del.intake() {
		return false
	}
	_, waiting := p.parker.waiting(d.EnterpriseID, d.Cmd.MeetingRoomNumber)
	return waiting
}
