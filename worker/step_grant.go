package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/xygroup/xygroup/worker/ratelimit"
)

// errNoGrantInTime: no grant came while a request could still be answered
// within the command's in-flight record.
var errNoGrantInTime = errors.New("no rate-limit grant in time")

// errStaleGrant: the grants taken before the request's own time ran out
// all passed their departure windows before the request could leave (the
// "sent" mark kept being slow): the request did not go.
var errStaleGrant = errors.New("rate-limit grants stale before the request could leave")

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
	marked, sentBefore := false, 0
	a.gate = func(gctx context.Context) error {
		wctx, cancel := context.WithDeadline(gctx, sendBy)
		defer cancel()
		// A grant whose departure window passes before the request is ready
		// (a slow mark, a pause) is not used: another is taken at once, at
		// the same priority, with the command still in hand.
		for fresh := false; ; fresh = true {
			if marked && a.letGo == 0 {
				// Marked, but no request left on the mark (its grant's window
				// passed, at Leave or at the write): the mark is taken back
				// while the next grant is awaited, so that a replica dying
				// meanwhile does not look as if it had sent.
				if err := p.idem.unmarkSent(wctx, d.ref(), &a.claimed, sentBefore); err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					log.Warn().Err(err).Msg("idempotency record: sent mark not taken back; the call is given back")
					return errNotMarked
				}
				marked = false
			}
			// a.departure holds the last grant, if any: the next is asked
			// for at its place, so a lane keeps its order.
			if err := p.awaitGrant(wctx, gctx, d, del, prio, &a.departure); err != nil {
				if fresh && errors.Is(err, errNoGrantInTime) {
					return errStaleGrant
				}
				return err
			}
			if !a.halfOpenProbe && p.breaker.State(d.EnterpriseID) == "open" {
				return ErrBreakerOpen
			}
			if !marked {
				if p.meetingFoundWaiting(d, del) {
					// The grant is spent, but not on a second 66620: with a long grant
					// queue, the meeting's first call on another replica has answered
					// by now, and a burst costs one first call per meeting.
					return errMeetingWaiting
				}
				// The mark is written before the request leaves, never after: a
				// replica killed once its request is out must leave it, or the next
				// call would take a 66684 for a failure. No mark, no request.
				sentBefore = a.claimed.record.Sent
				if err := p.markSent(wctx, d, &a.claimed); err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					if errors.Is(err, errCancelled) {
						return errCancelled
					}
					if p.full.refused(err, *log, "requests are not marked as sent, so not sent; their commands wait, spending no attempt") {
						return fmt.Errorf("%w: %w", errNotMarked, err)
					}
					log.Warn().Err(err).Msg("idempotency record: request not marked as sent; not sent")
					return errNotMarked
				}
				// One mark covers every request of the attempt that leaves
				// (the repeat after a refused app token).
				marked = true
			}
			err := a.departure.Leave(wctx)
			switch {
			case err == nil:
				a.letGo++
				a.sentAt = time.Now()
				return nil
			case errors.Is(err, ratelimit.ErrLate):
				p.metrics.Retries.WithLabelValues("stale_grant").Inc()
				continue
			case gctx.Err() != nil:
				return gctx.Err()
			default:
				return errNoGrantInTime
			}
		}
	}
	// The last check, right before the request's first byte is written: the
	// time between Leave and the write (signing, a fresh TLS dial, a pause)
	// spends the same budget. A request refused there is not sent; the
	// client asks the gate again, for a fresh grant.
	a.atWrite = func() error {
		if err := a.departure.Check(); err != nil {
			a.letGo--
			p.metrics.Retries.WithLabelValues("stale_grant").Inc()
			return err
		}
		return nil
	}
	return verdict{}, false
}

// awaitGrant waits for the lane's turn (lane commands) and for a rate-limit
// grant, within wctx; gctx is the call's own context.
func (p *pipeline) awaitGrant(wctx, gctx context.Context, d *Decoded, del *delivery, prio Priority, dep *ratelimit.Departure) (err error) {
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
	err = p.limiter.Wait(wctx, d.EnterpriseID, prio, ratelimit.Queued(queued), ratelimit.TakeDeparture(dep))
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
