package worker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/xygroup/xygroup/xylink"
)

// stepCall makes the call (the client runs a.gate immediately before each
// request) and classifies its answer; the breaker, the limiter and the record
// learn it here.
func (p *pipeline) stepCall(ctx context.Context, a *attempt) (verdict, bool) {
	d, del, log := a.d, a.del, a.log
	groups, callErr := p.call(ctx, a)
	var held *xylink.GateError
	if errors.As(callErr, &held) {
		return p.notSent(ctx, a, held, callErr), true
	}
	callStart := a.sentAt
	if callStart.IsZero() {
		callStart = time.Now()
	}
	outcome := xylink.Classify(callErr)
	a.done(outcome)
	p.metrics.APICalls.WithLabelValues(d.EnterpriseID, answerLabel(callErr)).Observe(time.Since(callStart).Seconds())
	p.noteTenant(d.EnterpriseID, outcome, callErr, log)
	if outcome.Disposition == xylink.StopTenant {
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		p.breaker.HoldForCredentials(hctx, d.EnterpriseID)
		if del.intake() {
			// Not the command's fault: it waits in the tenant's hold, queued.
			_ = p.idem.end(hctx, d.ref(), a.claimed, false, failureOf(xylink.ClassNone, callErr))
			until, open := p.breaker.Open(d.EnterpriseID)
			if !open {
				until = p.now().Add(p.breaker.credentialsRetry)
			}
			return holdUntil(until, a.attempts, a.deadline), true
		}
	}
	if outcome.Disposition == xylink.RateLimited {
		p.limiter.Throttled(d.EnterpriseID)
	}
	// An earlier call may have created the groups: this 66684 is its success.
	if outcome.Class == xylink.ClassAlreadyOpen && a.before.MaybeCreated {
		log.Info().Int("attempts", a.attempts).Msg("66684 after a call with an unknown outcome: reconciled as created")
		v := endAfterCall(createdEvent(d, nil, true, a.attempts, p.now()), &a.claimed)
		v.meetingAnswer = true
		return v, true
	}
	terminal := outcome.Disposition == xylink.Done || outcome.Disposition == xylink.Terminal
	if !terminal {
		// Record that no call is in flight, and whether this one may have taken effect.
		p.releaseClaim(ctx, a, *log, func(ctx context.Context) error {
			return p.idem.end(ctx, d.ref(), a.claimed, outcome.Unknown, failureOf(outcome.Class, callErr))
		})
		if ctx.Err() != nil {
			return giveBack(), true // shutting down: another replica retries at once
		}
	}
	a.groups, a.callErr, a.outcome, a.terminal = groups, callErr, outcome, terminal
	return verdict{}, false
}

// call makes the API call under its span: the client's HTTP spans and the
// gate's grant wait are its children.
func (p *pipeline) call(ctx context.Context, a *attempt) ([]xylink.Group, error) {
	d := a.d
	ctx, span := p.tracer.Start(ctx, spanAPICall, trace.WithAttributes(attrAttempts.Int(a.attempts)))
	groups, err := p.caller.CreateGroups(ctx, d.EnterpriseID, &d.Cmd.CreateGroupsRequest, xylink.BeforeEachRequest(a.gate), xylink.CheckAtWrite(a.atWrite))
	answer := answerLabel(err)
	var held *xylink.GateError
	if errors.As(err, &held) {
		answer = "not_sent"
	}
	span.SetAttributes(attrAnswer.String(answer))
	if err == nil {
		span.SetAttributes(attribute.Int("xygroup.groups", len(groups)))
	}
	endSpan(span, err != nil && held == nil, answer)
	return groups, err
}

// notSent: the gate held the request back. The attempt is given back (unless a
// refused-token request went out first) and the command waits as if it had
// not been taken.
func (p *pipeline) notSent(ctx context.Context, a *attempt, held *xylink.GateError, callErr error) verdict {
	d, del, log := a.d, a.del, a.log
	a.done(xylink.Outcome{BreakerExcluded: true})
	p.releaseClaim(ctx, a, *log, func(ctx context.Context) error {
		return p.idem.abort(ctx, d.ref(), a.claimed, held.Requests > 0)
	})
	switch {
	case ctx.Err() != nil:
		return giveBack() // shutting down: another replica takes it at once
	case errors.Is(callErr, errCancelled):
		return p.cancelledVerdict(ctx, a)
	case errors.Is(callErr, ErrBreakerOpen):
		p.metrics.Retries.WithLabelValues("breaker_open").Inc()
		return p.held(d, del, a.rec, a.deadline, p.now())
	case errors.Is(callErr, errStaleGrant):
		p.metrics.Retries.WithLabelValues("stale_grant").Inc()
		return retryIn(50 * time.Millisecond)
	case errors.Is(callErr, errNotMarked) && storeFull(callErr):
		return retryIn(storeFullRetry) // the record cannot grow: no request leaves until it can
	case errors.Is(callErr, errMeetingWaiting):
		p.metrics.Retries.WithLabelValues("meeting_waiting").Inc()
		if v, parked := p.parkIfWaiting(d, a.rec, a.deadline, p.now()); parked {
			return v
		}
		return retryIn(100 * time.Millisecond)
	}
	// No grant within the bound: the limiter is saturated; try again soon.
	p.metrics.Retries.WithLabelValues("limiter_wait").Inc()
	return retryIn(100 * time.Millisecond)
}

// releaseClaim writes that the attempt's call is no longer in flight (its
// end, or its abort when it was not sent), asking again while the commands
// bucket has no leader (an election, a partition healing) for as long as the
// claim would hold the command otherwise: every later attempt waits for the
// claim to lapse, up to a minute. While stopping, for a few seconds.
func (p *pipeline) releaseClaim(ctx context.Context, a *attempt, log zerolog.Logger, write func(context.Context) error) {
	bound := max(a.claimed.until.Sub(p.now()), 5*time.Second)
	if ctx.Err() != nil {
		bound = 5 * time.Second
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bound)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(5*time.Second, cancel) }) // a drain cut short
	defer stop()
	if err := retrySettle(rctx, log, "idempotency record not updated", func(ctx context.Context) error {
		err := write(ctx)
		p.full.refused(err, log, "a call's end is not recorded; its command waits for its claim to lapse")
		return err
	}); err != nil {
		log.Warn().Err(err).Msg("idempotency record not updated; the command waits for its claim to lapse")
	}
}

// noteTenant tracks tenants whose credentials were refused, for readiness.
func (p *pipeline) noteTenant(enterpriseID string, o xylink.Outcome, err error, log *zerolog.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, wasStopped := p.stopped[enterpriseID]
	switch {
	case o.Disposition == xylink.StopTenant:
		if !wasStopped {
			log.Error().Err(err).Msg("XYLink refused the tenant's credentials; its commands stay queued and are retried slowly")
		}
		p.stopped[enterpriseID] = err.Error()
	case wasStopped && o.Disposition != xylink.Retry && o.Disposition != xylink.RateLimited:
		delete(p.stopped, enterpriseID)
		log.Info().Msg("the tenant's credentials are accepted again")
	}
}

func (p *pipeline) stoppedTenants() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.stopped))
	for k, v := range p.stopped {
		out[k] = v
	}
	return out
}

// answerLabel names an answer for metrics and logs: ok, an errorCode, an HTTP
// status, or transport.
func answerLabel(err error) string {
	if err == nil {
		return "ok"
	}
	var ae *xylink.APIError
	if errors.As(err, &ae) {
		if ae.ErrorCode >= 60000 {
			return strconv.Itoa(ae.ErrorCode)
		}
		return strconv.Itoa(ae.HTTPStatus)
	}
	var ce *xylink.CredentialsError
	if errors.As(err, &ce) {
		return "credentials"
	}
	var ve *xylink.ValidationError
	if errors.As(err, &ve) {
		return "invalid"
	}
	return "transport"
}
