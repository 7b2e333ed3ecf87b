package worker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/xygroup/xygroup/xylink"
)

// Backoff is capped exponential backoff with full jitter.
type Backoff struct {
	Initial time.Duration // first delay (default 1 s)
	Max     time.Duration // cap (default 1 min)
}

// Delay for the n-th retry (n ≥ 1): uniformly random in [d/2, d] where
// d = min(Max, Initial·2^(n-1)), so retries of many commands spread out.
func (b Backoff) Delay(n int) time.Duration {
	initial, maxD := b.Initial, b.Max
	if initial <= 0 {
		initial = time.Second
	}
	if maxD <= 0 {
		maxD = time.Minute
	}
	d := initial
	for i := 1; i < n && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	return d/2 + rand.N(d/2+1)
}

// reconcileGrace is how long past its deadline a command whose earlier
// request's outcome is unknown is still tried, so that a 66684 reconciles it
// as created instead of its deadline reporting a failure.
const reconcileGrace = time.Minute

// stepDecide turns the call's outcome into the command's verdict: parked (or
// retried, for a probe) while its meeting waits, else as decide says.
func (p *pipeline) stepDecide(a *attempt) verdict {
	d, del, log := a.d, a.del, a.log
	outcome, callErr, attempts, deadline := a.outcome, a.callErr, a.attempts, a.deadline
	now := p.now()
	if outcome.Disposition == xylink.Park {
		p.gate.hint(meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber), now)
		// 66620 also settles an earlier request of unknown outcome: a
		// meeting that has not started has no groups (idempotency.end
		// clears the doubt), so its deadline is the command's own.
		if now.Before(deadline) {
			v := retryIn(p.parker.backoff.Delay(attempts))
			if del.intake() {
				v = parkUnder(now.Add(p.parker.backoff.Delay(1)), attempts, deadline)
			}
			v.waiting, v.attempts, v.deadline = true, attempts, deadline
			return v
		}
	}
	if (a.before.MaybeCreated || outcome.Unknown) && outcome.Disposition != xylink.Park {
		// A request may have created the groups: a retry past the deadline
		// reconciles it (66684) rather than report a failure it may not be.
		deadline = deadline.Add(reconcileGrace)
	}
	v := decide(d, outcome, callErr, a.groups, attempts, deadline, p.backoff, now)
	if a.terminal && v.ends() {
		v.record = &a.claimed // the record as this call last wrote it: finish writes without reading
	}
	v.meetingAnswer = outcome.Disposition == xylink.Done || (outcome.Disposition == xylink.Terminal && outcome.Class != xylink.ClassInvalidCommand)
	if !v.ends() {
		p.metrics.Retries.WithLabelValues(outcome.Disposition.String()).Inc()
		log.Info().Str("answer", answerLabel(callErr)).Stringer("disposition", outcome.Disposition).Dur("retryIn", v.retry).
			Int("attempts", attempts).Msg("will retry")
	}
	return v
}

// decide turns a call's outcome into a verdict: a terminal event, or a retry
// while the deadline allows.
func decide(d *Decoded, o xylink.Outcome, callErr error, groups []xylink.Group, attempts int,
	deadline time.Time, backoff Backoff, now time.Time) verdict {
	switch o.Disposition {
	case xylink.Done:
		return endWith(createdEvent(d, groups, false, attempts, now))
	case xylink.Terminal:
		return endWith(failedEvent(d, failureOf(o.Class, callErr), attempts, now))
	}
	// Park, Retry, RateLimited, StopTenant: try again while the deadline allows.
	delay := backoff.Delay(max(attempts, 1))
	if o.Disposition == xylink.RateLimited {
		delay = min(delay, 2*time.Second)
	}
	if now.Add(delay).After(deadline) {
		if now.Before(deadline) {
			delay = deadline.Sub(now) // one last try at the deadline
		} else {
			class := o.Class
			if class == xylink.ClassNone {
				class = xylink.ClassUnavailable // credentials refused until the deadline
			}
			f := failureOf(class, callErr)
			f.developerMessage = fmt.Sprintf("deadline %s passed after %d attempts; last answer: %s",
				deadline.UTC().Format(time.RFC3339), attempts, f.developerMessage)
			return endWith(failedEvent(d, f, attempts, now))
		}
	}
	return retryIn(delay)
}

// lastError is the last API answer as an error (for a failure that ends the
// command without a call of its own), or fallback when there was none.
func (r commandRecord) lastError(fallback error) error {
	if r.Last == nil || (r.Last.HTTPStatus == 0 && r.Last.ErrorCode == 0) {
		return fallback
	}
	dev := r.Last.DeveloperMessage
	if fallback != nil {
		dev = fallback.Error() + "; last answer: " + dev
	}
	return &xylink.APIError{HTTPStatus: r.Last.HTTPStatus, ErrorCode: r.Last.ErrorCode,
		UserMessage: r.Last.UserMessage, DeveloperMessage: dev}
}

// failureOf describes a failed call for its event. Errors of this project carry
// no secrets (xylink redacts URLs), so their text can be the developer message.
func failureOf(class xylink.Class, err error) failure {
	f := failure{class: class}
	var ae *xylink.APIError
	switch {
	case errors.As(err, &ae):
		f.errorCode, f.httpStatus = ae.ErrorCode, ae.HTTPStatus
		f.userMessage, f.developerMessage = ae.UserMessage, ae.DeveloperMessage
		if f.developerMessage == "" {
			f.developerMessage = ae.Error()
		}
	case errors.Is(err, ErrBreakerOpen):
		f.userMessage = string(class)
		f.developerMessage = "the circuit breaker of this enterprise was open: its API kept failing"
	case err != nil:
		f.userMessage = string(class)
		f.developerMessage = err.Error()
	}
	if f.userMessage == "" {
		f.userMessage = string(class)
	}
	// An answer may be as large as the client reads (1 MiB): bounded, as the
	// event and the idempotency record carry it.
	f.userMessage = cutJSONString(f.userMessage, maxMessageBytes)
	f.developerMessage = cutJSONString(f.developerMessage, maxMessageBytes)
	return f
}
