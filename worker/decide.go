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

// verdict is what to do with a message after one pass through the pipeline.
type verdict struct {
	event *outEvent     // publish this, then ack (terminal) ...
	retry time.Duration // ... or nak with this delay
	// release: nak at once without a delay (shutdown: another replica takes it).
	release bool
}

// decide turns a call's outcome into a verdict: a terminal event, or a retry
// while the deadline allows.
func decide(d *Decoded, o xylink.Outcome, callErr error, groups []xylink.Group, attempts int,
	deadline time.Time, backoff Backoff, now time.Time) verdict {
	switch o.Disposition {
	case xylink.Done:
		return verdict{event: createdEvent(d, groups, false, attempts, now)}
	case xylink.Terminal:
		return verdict{event: failedEvent(d, failureOf(o.Class, callErr), attempts, now)}
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
			return verdict{event: failedEvent(d, f, attempts, now)}
		}
	}
	return verdict{retry: delay}
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
	case err != nil:
		f.userMessage = string(class)
		f.developerMessage = err.Error()
	}
	if f.userMessage == "" {
		f.userMessage = string(class)
	}
	return f
}
